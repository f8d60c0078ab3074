package enrich_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/specfile"
)

// TestEveryProviderLoadsAndBuilds is what a new provider gets checked
// against once it is listed in ModelProviders: its name, its defaults,
// its validation and its constructor, through the spec loader.
func TestEveryProviderLoadsAndBuilds(t *testing.T) {
	t.Parallel()
	providers := enrich.ModelProviders()
	require.NotEmpty(t, providers)
	var names []string
	for _, p := range providers {
		names = append(names, p.Name)
	}
	assert.Equal(t, names, enrich.Providers, "Providers names the registry, in its order")

	for _, p := range providers {
		t.Run(p.Name, func(t *testing.T) {
			t.Parallel()
			// The rule the CDK app checks modelProvider by, knowing no
			// list of providers.
			assert.Regexp(t, specfile.NamePattern, p.Name)
			require.NotNil(t, p.New, "a provider needs a constructor")
			if p.Key.Required {
				assert.NotEmpty(t, p.Key.Env, "a required key needs a variable to come from")
			}
			got, ok := enrich.LookupProvider(p.Name)
			require.True(t, ok)
			assert.Equal(t, p.Name, got.Name)

			// One set of overrides that any provider's validation accepts:
			// the shipped spec has a prompt, and chat providers need an
			// endpoint (azure a deployment too).
			spec, err := enrich.LoadSpecWith("../jobs/sentiment.yaml", enrich.Overrides{
				Provider: p.Name, BaseURL: "https://llm.example.com/v1", Deployment: "d",
			})
			require.NoError(t, err)
			assert.Equal(t, p.Chat, spec.Model.Chat())
			assert.NotEmpty(t, spec.Model.Name, "the provider's defaults name the model")
			assert.True(t, strings.HasPrefix(spec.Model.ID(), p.Name+"/"), spec.Model.ID())

			var key enrich.Secret
			if p.Key.Env != "" {
				key = enrich.NewSecret("sk-test")
			}
			m, err := p.New(spec, enrich.ModelOptions{APIKey: key})
			require.NoError(t, err)
			require.NotNil(t, m)
			if c, ok := m.(interface{ Close() }); ok {
				t.Cleanup(c.Close)
			}
			assert.Equal(t, spec.Model.ID(), m.Name(), "_model is the spec's model ID")
		})
	}
}

func TestProviderSpecificSettings(t *testing.T) {
	t.Parallel()
	_, ok := enrich.LookupProvider("bard")
	assert.False(t, ok)

	spec, err := enrich.LoadSpecWith("../jobs/sentiment.yaml", enrich.Overrides{Provider: enrich.ProviderOpenAI})
	require.NoError(t, err)
	assert.Equal(t, enrich.DefaultOpenAIBaseURL, spec.Model.BaseURL)
	assert.Equal(t, enrich.DefaultMaxConcurrency, spec.Model.MaxConcurrency, "chat defaults apply to every chat provider")
	assert.Equal(t, "openai/"+enrich.DefaultOpenAIModel, spec.Model.ID())

	spec, err = enrich.LoadSpecWith("../jobs/sentiment.yaml", enrich.Overrides{
		Provider: enrich.ProviderAzure, BaseURL: "https://r.openai.azure.com", Model: "gpt-4o", Deployment: "prod-gpt4o",
	})
	require.NoError(t, err)
	assert.Equal(t, "azure/prod-gpt4o", spec.Model.ID(), "_model names the deployment that answers")

	// --deployment (the CDK app's modelDeployment, whatever the provider)
	// names what answers: a deployment where the provider has them, else
	// the model, unless --model names it.
	for _, p := range enrich.ModelProviders() {
		if !p.Chat {
			continue
		}
		t.Run("deployment of "+p.Name, func(t *testing.T) {
			t.Parallel()
			spec, err := enrich.LoadSpecWith("../jobs/sentiment.yaml", enrich.Overrides{Provider: p.Name, BaseURL: "https://llm.example.com/v1", Deployment: "llama-3.1-8b"})
			require.NoError(t, err)
			assert.Equal(t, p.Name+"/llama-3.1-8b", spec.Model.ID())
			if p.Deployments {
				assert.Equal(t, "llama-3.1-8b", spec.Model.Deployment)
			} else {
				assert.Equal(t, "llama-3.1-8b", spec.Model.Name)
				spec, err = enrich.LoadSpecWith("../jobs/sentiment.yaml", enrich.Overrides{Provider: p.Name, Model: "m", Deployment: "d"})
				require.NoError(t, err)
				assert.Equal(t, p.Name+"/m", spec.Model.ID(), "--model wins")
			}
		})
	}

	// A provider whose key is required refuses to build without one.
	azure, ok := enrich.LookupProvider(enrich.ProviderAzure)
	require.True(t, ok)
	_, err = azure.New(spec, enrich.ModelOptions{})
	require.ErrorContains(t, err, "provider azure needs an API key (AZURE_OPENAI_API_KEY or --api-key-secret)")

	// A constructor's error comes back as a nil Model, not a typed nil.
	lexicon, ok := enrich.LookupProvider(enrich.ProviderLexicon)
	require.True(t, ok)
	m, err := lexicon.New(spec, enrich.ModelOptions{})
	require.Error(t, err)
	assert.Nil(t, m)
}
