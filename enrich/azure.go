package enrich

import "cmp"

// ProviderAzure is an Azure OpenAI deployment.
const ProviderAzure = "azure"

// DefaultAzureVersion is model.api_version of provider azure when the spec
// gives none.
const DefaultAzureVersion = "2024-10-21"

// azureProvider asks an Azure OpenAI deployment: the deployment, not the
// model name, picks what answers, so _model records the deployment.
func azureProvider() Provider {
	return Provider{
		Name:        ProviderAzure,
		Chat:        true,
		Deployments: true,
		Defaults: func(m *ModelSettings) {
			m.APIVersion = cmp.Or(m.APIVersion, DefaultAzureVersion)
			m.Deployment = cmp.Or(m.Deployment, m.Name)
			m.Name = cmp.Or(m.Name, m.Deployment)
		},
		Validate: func(s *Spec, bad func(field, format string, args ...any)) {
			if s.Model.BaseURL == "" {
				bad("model.base_url", "is required for provider azure: the resource endpoint, https://NAME.openai.azure.com")
			}
			if s.Model.Deployment == "" {
				bad("model.deployment", "is required for provider azure (or model.name, used as the deployment)")
			}
		},
		ModelName: func(m ModelSettings) string { return m.Deployment },
		Key:       KeySource{Env: "AZURE_OPENAI_API_KEY", Required: true},
		New:       newChatModel,
	}
}
