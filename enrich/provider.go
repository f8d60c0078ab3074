package enrich

import "log/slog"

// ModelProviders lists every model provider a job spec may name in
// model.provider, in the order messages and help texts name them. Each
// provider is defined in its own file (lexicon.go, openai.go, azure.go,
// noop.go); adding one is a new file and one line here.
//
// It is a function, not a package-level variable, because the providers'
// constructors read the list back (through ModelSettings.ID and Chat):
// as a variable that would be an initialization cycle.
func ModelProviders() []Provider {
	return []Provider{
		lexiconProvider(),
		openAIProvider(),
		azureProvider(),
		noopProvider(),
	}
}

// Providers names the model backends a spec may choose, in the order of
// ModelProviders.
var Providers = providerNames()

// ChatProviders names the chat-completion providers (Provider.Chat), in
// the order of ModelProviders: those a model endpoint can be, and those
// the chat settings (base_url, the Batch API, ...) are for.
var ChatProviders = providerNames(func(p Provider) bool { return p.Chat })

// DeploymentProviders names the providers whose servers pick what answers
// by a deployment (Provider.Deployments), in the order of ModelProviders.
var DeploymentProviders = providerNames(func(p Provider) bool { return p.Deployments })

// providerNames are the names of the providers for which keep is true,
// or of every provider without keep.
func providerNames(keep ...func(Provider) bool) []string {
	var names []string
	for _, p := range ModelProviders() {
		if len(keep) == 0 || keep[0](p) {
			names = append(names, p.Name)
		}
	}
	return names
}

// LookupProvider returns the provider called name.
func LookupProvider(name string) (Provider, bool) {
	for _, p := range ModelProviders() {
		if p.Name == name {
			return p, true
		}
	}
	return Provider{}, false
}

// Provider is one model backend: what the spec loader, the command line
// and the model constructor need to know about it. Only Name and New are
// required.
type Provider struct {
	// Name is the value of model.provider and the first part of _model.
	Name string

	// Chat marks a chat-completion server. The spec loader then applies
	// the chat defaults (max_concurrency, timeout, max_attempts) and
	// checks the chat settings (prompt.system, base_url, rpm, tpm, ...);
	// the command line commits such jobs in smaller chunks, as they
	// enrich tens of rows a second rather than many thousands.
	Chat bool

	// Deployments marks a chat server that picks what answers by a
	// deployment name (model.deployment, --deployment), not by the model
	// name. For a chat provider without it, --deployment (and so the CDK
	// app's modelDeployment, which it passes as --deployment whatever the
	// provider) names the model when --model does not.
	Deployments bool

	// Defaults fills the settings of the provider that the spec left
	// empty (model.name above all). It runs after the defaults common to
	// every provider and, for a chat provider, after the chat defaults.
	Defaults func(m *ModelSettings)

	// Validate reports each problem of a spec's settings for this
	// provider through bad (field, then the reason as a format), after
	// every other check of the spec.
	Validate func(s *Spec, bad func(field, format string, args ...any))

	// ModelName is what _model records after "provider/": the name of
	// what answers. Nil means model.name.
	ModelName func(m ModelSettings) string

	// Key says where the provider's API key comes from; the zero value
	// means the provider takes none.
	Key KeySource

	// New builds the model for a spec that names this provider and has
	// been defaulted and validated.
	New func(spec *Spec, opts ModelOptions) (Model, error)
}

// KeySource is where a provider's API key comes from.
type KeySource struct {
	// Env is the environment variable that holds the key. It is also the
	// member a JSON secret is searched for first, so that a secret
	// holding the keys of several providers gives each its own. Empty
	// means the provider takes no key.
	Env string
	// Required means a model is not built without a key. Otherwise a
	// missing key is only warned about: local servers take none.
	Required bool
}

// ModelOptions are what a provider's constructor gets besides the spec:
// the parts of the process, not of the job.
type ModelOptions struct {
	// APIKey is the provider's key (empty when it takes none or none was
	// given).
	APIKey Secret
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// asModel returns a constructor's result as a Model, nil on error: a nil
// *Lexicon returned as a Model would be a Model that is not nil.
func asModel[M Model](m M, err error) (Model, error) {
	if err != nil {
		return nil, err
	}
	return m, nil
}
