package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/spf13/pflag"

	"github.com/socialdata/enricher/enrich"
)

// envAPIKeySecret names the Secrets Manager secret holding the model API
// key when --api-key-secret is not given. Without either, each provider's
// key comes from its own variable (enrich.Provider.Key).
const envAPIKeySecret = "ENRICHER_API_KEY_SECRET"

// modelFlags are the model settings demo, run and replay take on the
// command line; each overrides the job spec's own for every job.
type modelFlags struct {
	provider, baseURL, model, deployment, apiVersion string
	apiKeySecret                                     string
	rowsPerRequest, rpm, tpm, maxConcurrency         int
	maxTokensTotal                                   int64
	batchAPI                                         bool
	batchPoll                                        time.Duration
}

func (m *modelFlags) register(f *pflag.FlagSet) {
	f.StringVar(&m.provider, "provider", "", "model backend for every job: "+orList(enrich.Providers)+" (default: the job spec's)")
	f.StringVar(&m.baseURL, "base-url", "", "chat server: OpenAI-compatible base URL (e.g. http://localhost:8000/v1) or the Azure endpoint https://NAME.openai.azure.com")
	f.StringVar(&m.model, "model", "", "model name sent to the server (for "+orList(enrich.DeploymentProviders)+" also the deployment when --deployment is not given)")
	f.StringVar(&m.deployment, "deployment", "", "what answers at the chat server: for "+orList(enrich.DeploymentProviders)+" the deployment name (default: --model), for the other chat providers the model name when --model is not given")
	f.StringVar(&m.apiVersion, "api-version", "", "Azure OpenAI API version (default "+enrich.DefaultAzureVersion+")")
	f.StringVar(&m.apiKeySecret, "api-key-secret", "", "AWS Secrets Manager secret NAME or ARN holding the API key, a plain string or JSON such as {\"api_key\": \"...\"} (default $"+envAPIKeySecret+"; without it the key comes from "+orList(keyVariables())+")")
	f.IntVar(&m.rowsPerRequest, "rows-per-request", 0, "rows sent in one chat request (default: the job spec's, else 20)")
	f.IntVar(&m.rpm, "rpm", 0, "requests-per-minute quota to stay under (default: the job spec's; 0 there: none)")
	f.IntVar(&m.tpm, "tpm", 0, "tokens-per-minute quota to stay under, counting prompt estimate plus max_tokens (default: the job spec's)")
	f.IntVar(&m.maxConcurrency, "max-concurrency", 0, "chat requests in flight at most, per job (default: the job spec's, else 16)")
	f.Int64Var(&m.maxTokensTotal, "max-tokens-total", 0, "token budget of each job in this process: stop cleanly before spending more (default: the job spec's; 0: none)")
	f.BoolVar(&m.batchAPI, "batch-api", false, "send rows through the provider's Batch API ("+strings.Join(enrich.ChatProviders, ", ")+"): half the price, answers within 24h; the job spec's model.batch_api: auto sends only big ranges (default: the job spec's)")
	f.DurationVar(&m.batchPoll, "batch-poll", 0, "how often submitted batches are checked (default: the job spec's model.batch.poll, else "+enrich.DefaultBatchPoll+")")
}

// orList writes a list as "a, b or c".
func orList(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

// keyVariables are the providers' key variables, as $NAME.
func keyVariables() []string {
	var out []string
	for _, p := range enrich.ModelProviders() {
		if p.Key.Env != "" {
			out = append(out, "$"+p.Key.Env)
		}
	}
	return out
}

func (m *modelFlags) overrides() enrich.Overrides {
	if m == nil {
		return enrich.Overrides{}
	}
	return enrich.Overrides{
		Provider: m.provider, BaseURL: m.baseURL, Model: m.model, Deployment: m.deployment,
		APIVersion: m.apiVersion, RowsPerRequest: m.rowsPerRequest, RPM: m.rpm, TPM: m.tpm,
		MaxConcurrency: m.maxConcurrency, MaxTokensTotal: m.maxTokensTotal,
		BatchAPI: m.batchAPI, BatchPoll: durationFlag(m.batchPoll),
	}
}

// durationFlag is a duration flag as a spec's duration string ("" when
// not given).
func durationFlag(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func (m *modelFlags) validate() error {
	if m == nil {
		return nil
	}
	if m.provider != "" && !slices.Contains(enrich.Providers, m.provider) {
		return fmt.Errorf("%w: --provider %q: want one of %s", errUsage, m.provider, strings.Join(enrich.Providers, ", "))
	}
	// A chat server's settings with a provider that asks none would be
	// dropped without a word (the CDK app passes them with any
	// modelProvider).
	if m.provider != "" && !slices.Contains(enrich.ChatProviders, m.provider) {
		for _, f := range []struct{ name, v string }{{"--base-url", m.baseURL}, {"--deployment", m.deployment}} {
			if f.v != "" {
				return fmt.Errorf("%w: %s is for the chat providers (%s), not --provider %s", errUsage, f.name, strings.Join(enrich.ChatProviders, ", "), m.provider)
			}
		}
	}
	for name, v := range map[string]int{"--rows-per-request": m.rowsPerRequest, "--rpm": m.rpm, "--tpm": m.tpm, "--max-concurrency": m.maxConcurrency} {
		if v < 0 {
			return fmt.Errorf("%w: %s must not be negative, got %d", errUsage, name, v)
		}
	}
	if m.maxTokensTotal < 0 {
		return fmt.Errorf("%w: --max-tokens-total must not be negative, got %d", errUsage, m.maxTokensTotal)
	}
	if m.batchPoll != 0 && m.batchPoll < time.Second {
		return fmt.Errorf("%w: --batch-poll %s: check batches at most once a second", errUsage, m.batchPoll)
	}
	return nil
}

// models builds the model of each job (one after the other), reading a
// Secrets Manager secret at most once per provider.
type models struct {
	flags *modelFlags
	log   *slog.Logger

	keys map[string]enrich.Secret // by provider
}

// build builds the model of spec's provider, with its API key when it
// takes one.
func (ms *models) build(ctx context.Context, spec *enrich.Spec) (enrich.Model, error) {
	p, ok := enrich.LookupProvider(spec.Model.Provider)
	if !ok {
		return nil, &enrich.SpecError{File: spec.File, Field: "model.provider", Reason: fmt.Sprintf("%q is not available", spec.Model.Provider)}
	}
	var key enrich.Secret
	if p.Key.Env != "" {
		var err error
		if key, err = ms.apiKey(ctx, p); err != nil {
			return nil, err
		}
		if key.Empty() {
			ms.log.Warn("no API key for provider "+p.Name+": requests go without one, as local servers allow", "job", spec.Name, "hint", "set "+p.Key.Env+" or --api-key-secret")
		}
	}
	return p.New(spec, enrich.ModelOptions{APIKey: key, Logger: ms.log})
}

// apiKey finds p's key: the Secrets Manager secret when one is named, else
// the provider's environment variable.
func (ms *models) apiKey(ctx context.Context, p enrich.Provider) (enrich.Secret, error) {
	ref := os.Getenv(envAPIKeySecret)
	if ms.flags != nil && ms.flags.apiKeySecret != "" {
		ref = ms.flags.apiKeySecret
	}
	if ref == "" {
		key := enrich.NewSecret(os.Getenv(p.Key.Env))
		if key.Empty() && p.Key.Required {
			return key, fmt.Errorf("provider %s needs an API key: set %s or name a Secrets Manager secret with --api-key-secret (or %s)", p.Name, p.Key.Env, envAPIKeySecret)
		}
		return key, nil
	}
	if key, ok := ms.keys[p.Name]; ok {
		return key, nil
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return enrich.Secret{}, fmt.Errorf("aws config for Secrets Manager: %w", err)
	}
	key, err := fetchAPIKey(ctx, secretsmanager.NewFromConfig(cfg), ref, p.Name)
	if err != nil {
		return key, err
	}
	if ms.keys == nil {
		ms.keys = map[string]enrich.Secret{}
	}
	ms.keys[p.Name] = key
	return key, nil
}

// secretsAPI is the part of the Secrets Manager client used here.
type secretsAPI interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, opts ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// secretKeyNames are the names under which a JSON secret may hold the
// key, in the order they are tried: the provider's own variable first, so
// that a secret holding several providers' keys never sends one provider
// another's; the other providers' variables last.
func secretKeyNames(provider string) []string {
	var own, others []string
	for _, p := range enrich.ModelProviders() {
		switch {
		case p.Key.Env == "":
		case p.Name == provider:
			own = append(own, p.Key.Env)
		default:
			others = append(others, p.Key.Env)
		}
	}
	return slices.Concat(own, []string{"api_key", "apiKey", "key"}, others)
}

// fetchAPIKey reads the secret ref (name or ARN) for provider. A plain
// string secret is the key; a JSON object holds it under one of
// secretKeyNames, or as its only string member. Errors name the secret,
// never its value.
func fetchAPIKey(ctx context.Context, api secretsAPI, ref, provider string) (enrich.Secret, error) {
	out, err := api.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(ref)})
	if err != nil {
		return enrich.Secret{}, fmt.Errorf("read API key from secret %s: %w", ref, err)
	}
	if out.SecretString == nil {
		return enrich.Secret{}, fmt.Errorf("secret %s has no string value (binary secrets are not supported)", ref)
	}
	raw := strings.TrimSpace(*out.SecretString)
	if !strings.HasPrefix(raw, "{") {
		if raw == "" {
			return enrich.Secret{}, fmt.Errorf("secret %s is empty", ref)
		}
		return enrich.NewSecret(raw), nil
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(raw), &obj); err != nil {
		return enrich.Secret{}, fmt.Errorf("secret %s starts like JSON but is not a JSON object", ref)
	}
	names := secretKeyNames(provider)
	for _, k := range names {
		if v, ok := obj[k].(string); ok && strings.TrimSpace(v) != "" {
			return enrich.NewSecret(v), nil
		}
	}
	var members []string
	var only string
	for k, v := range obj {
		members = append(members, k)
		if s, ok := v.(string); ok {
			only = s
		}
	}
	if len(obj) == 1 && strings.TrimSpace(only) != "" {
		return enrich.NewSecret(only), nil
	}
	sort.Strings(members)
	return enrich.Secret{}, fmt.Errorf("secret %s is a JSON object without the key: want one of the members %s (it has %s)",
		ref, strings.Join(names, ", "), strings.Join(members, ", "))
}

// usageOf returns the usage of the jobs' models that report one.
func usageOf(m enrich.Model) (enrich.Usage, bool) {
	r, ok := m.(enrich.UsageReporter)
	if !ok {
		return enrich.Usage{}, false
	}
	return r.Usage(), true
}

// closeModel releases what a model holds (idle HTTP connections).
func closeModel(m enrich.Model) {
	if c, ok := m.(interface{ Close() }); ok {
		c.Close()
	}
}

// printUsage writes a model's usage as rows of a summary table.
func printUsage(w io.Writer, u enrich.Usage) {
	fmt.Fprintf(w, "  model requests\t%d\t(%d retries, %d throttled with 429, %d server errors or timeouts, %d batches split)\n",
		u.Requests, u.Retries, u.Throttled, u.ServerErrors, u.Splits)
	fmt.Fprintf(w, "  model tokens\t%d\t(prompt %d of which cached %d, completion %d; %.1f per row sent; %d rows sent, %d answered from identical texts)\n",
		u.PromptTokens+u.CompletionTokens, u.PromptTokens, u.CachedTokens, u.CompletionTokens, u.TokensPerRow(), u.RowsSent, u.DedupHits)
	if u.BatchRowsSent > 0 || u.BatchPromptTokens+u.BatchCompletionTokens > 0 {
		fmt.Fprintf(w, "  batch API tokens\t%d\t(prompt %d of which cached %d, completion %d; %d of the rows sent; at %.0f%% of the prices)\n",
			u.BatchPromptTokens+u.BatchCompletionTokens, u.BatchPromptTokens, u.BatchCachedTokens, u.BatchCompletionTokens, u.BatchRowsSent, 100*enrich.BatchDiscount)
	}
	if u.Prices == (enrich.Prices{}) {
		fmt.Fprintf(w, "  estimated cost\tunknown\t(no prices for this model: set model.prices in the job spec; Batch API tokens are priced at %.0f%% of them)\n", 100*enrich.BatchDiscount)
	} else {
		source := "the job spec's prices"
		if u.Prices.Source != "" {
			source = u.Prices.Source + "; model.prices sets yours"
		}
		discount := ""
		if u.BatchPromptTokens+u.BatchCompletionTokens > 0 {
			discount = fmt.Sprintf(", batch API tokens at %.0f%%", 100*enrich.BatchDiscount)
		}
		fmt.Fprintf(w, "  estimated cost\t$%.4f\t($%.2f per million rows sent, at %s%s)\n", u.Cost(), u.CostPerMillionRows(), source, discount)
	}
}

// Environment variables that set the model flags where a process has no
// command line: the Lambda handler.
const (
	envModelProvider   = "ENRICHER_MODEL_PROVIDER"
	envModelBaseURL    = "ENRICHER_MODEL_BASE_URL"
	envModelName       = "ENRICHER_MODEL_NAME"
	envModelDeployment = "ENRICHER_MODEL_DEPLOYMENT"
	envModelAPIVersion = "ENRICHER_MODEL_API_VERSION"
)

// modelFlagsFromEnv reads the model overrides of the Lambda handler.
func modelFlagsFromEnv() *modelFlags {
	return &modelFlags{
		provider:   os.Getenv(envModelProvider),
		baseURL:    os.Getenv(envModelBaseURL),
		model:      os.Getenv(envModelName),
		deployment: os.Getenv(envModelDeployment),
		apiVersion: os.Getenv(envModelAPIVersion),
	}
}
