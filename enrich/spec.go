package enrich

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/socialdata/enricher/internal/specfile"
)

// Output field types a job spec may declare.
const (
	TypeString     = "string"
	TypeDouble     = "double"
	TypeLong       = "long"
	TypeBoolean    = "boolean"
	TypeStringList = "list<string>"
)

var fieldTypes = []string{TypeString, TypeDouble, TypeLong, TypeBoolean, TypeStringList}

// Defaults applied by LoadSpec when a field is absent, whatever the
// provider; each provider adds its own (see ModelProviders).
const (
	DefaultMaxTextChars   = 2000
	DefaultRowsPerRequest = 20
)

// Spec is one enrichment job: which table and columns it reads, which model
// it asks, and which typed output columns it writes. Specs are plain YAML
// files; a new job needs a new file, not new code.
type Spec struct {
	Name        string        `yaml:"name"`
	Version     string        `yaml:"version"`
	Description string        `yaml:"description"`
	Source      Source        `yaml:"source"`
	Target      Target        `yaml:"target"`
	Model       ModelSettings `yaml:"model"`
	Prompt      Prompt        `yaml:"prompt"`
	Outputs     []Field       `yaml:"outputs"`

	// File is where the spec was loaded from, for messages.
	File string `yaml:"-"`
}

// Source says what the job reads.
type Source struct {
	Table string   `yaml:"table"`
	Key   string   `yaml:"key"`
	Text  string   `yaml:"text"`
	Carry []string `yaml:"carry"`
	// Language names the column that holds each row's language, which
	// decides whether the model may take the row (see Language).
	Language Language `yaml:"language"`
}

// Target says where the job writes.
type Target struct {
	Table string `yaml:"table"`
	// Properties are Iceberg table properties for the target: given to it
	// when the enricher creates it, on top of the enricher's long-life
	// defaults, and set on an existing target (where they differ) when a
	// consumer starts on it. Removing one here does not remove it from the
	// table. The runtime checks them (storage.CheckProperties).
	Properties map[string]string `yaml:"properties"`
}

// ModelSettings holds the model settings of a job. Which of them apply
// depends on the provider (see Provider).
type ModelSettings struct {
	Provider       string        `yaml:"provider"`
	Name           string        `yaml:"name"`
	MaxTextChars   int           `yaml:"max_text_chars"`
	RowsPerRequest int           `yaml:"rows_per_request"`
	Lexicon        LexiconConfig `yaml:"lexicon"`
	// Languages are the languages the model reads, as ISO 639 codes (en,
	// pt). Empty means every language: the default of the chat providers.
	// The lexicon reads en only, its default. Rows whose
	// source.language column names another language are written skipped.
	Languages []string `yaml:"languages"`
	// languagesByDefault marks Languages filled by the provider's
	// defaults, not by the spec.
	languagesByDefault bool

	// Chat providers (ChatProviders).
	BaseURL         string  `yaml:"base_url"`
	Deployment      string  `yaml:"deployment"`
	APIVersion      string  `yaml:"api_version"`
	RPM             int     `yaml:"rpm"`
	TPM             int     `yaml:"tpm"`
	MaxConcurrency  int     `yaml:"max_concurrency"`
	Timeout         string  `yaml:"timeout"`
	MaxAttempts     int     `yaml:"max_attempts"`
	MaxTokensPerRow int     `yaml:"max_tokens_per_row"`
	MaxTokensTotal  int64   `yaml:"max_tokens_total"`
	Prices          Prices  `yaml:"prices"`
	Temperature     float64 `yaml:"temperature"`

	// BatchAPI sends rows through the provider's Batch API (chat
	// providers only): off (the default), on, or auto (ranges of at
	// least Batch.MinRows rows). See batchspec.go.
	BatchAPI BatchMode     `yaml:"batch_api"`
	Batch    BatchSettings `yaml:"batch"`
}

// Prices are a model's list prices in US dollars per million tokens, used to
// estimate the cost of a run. CachedInputPerMillion prices the prompt
// tokens the provider read from its prompt cache; 0 prices them as other
// prompt tokens. The Batch API costs BatchDiscount of each.
type Prices struct {
	InputPerMillion       float64 `yaml:"input_per_million"`
	CachedInputPerMillion float64 `yaml:"cached_input_per_million"`
	OutputPerMillion      float64 `yaml:"output_per_million"`
	// Source says where the prices come from when the spec gave none
	// (ListPrices); empty for the spec's own.
	Source string `yaml:"-"`
}

// cost prices prompt tokens (of which cached were cached) and completion
// tokens.
func (p Prices) cost(prompt, cached, completion int64) float64 {
	cachedRate := p.CachedInputPerMillion
	if cachedRate == 0 {
		cachedRate = p.InputPerMillion
	}
	cached = min(max(cached, 0), prompt)
	return (float64(prompt-cached)*p.InputPerMillion + float64(cached)*cachedRate +
		float64(completion)*p.OutputPerMillion) / 1e6
}

// LexiconConfig maps the lexicon model's label and score onto output fields.
type LexiconConfig struct {
	LabelField  string   `yaml:"label_field"`
	ScoreField  string   `yaml:"score_field"`
	NeutralBand *float64 `yaml:"neutral_band"`
}

// Prompt holds the instructions sent to chat models.
type Prompt struct {
	System string `yaml:"system"`
}

// Field is one typed output column.
type Field struct {
	Name        string   `yaml:"name"`
	Type        string   `yaml:"type"`
	Enum        []string `yaml:"enum"`
	Min         *float64 `yaml:"min"`
	Max         *float64 `yaml:"max"`
	Description string   `yaml:"description"`
}

// LoadSpec reads, defaults and validates the spec file at path. An invalid
// spec returns every problem found, each a *SpecError.
func LoadSpec(path string) (*Spec, error) {
	return LoadSpecWith(path, Overrides{})
}

// LoadSpecWith is LoadSpec with command-line overrides of the model
// settings, applied before defaults and validation.
func LoadSpecWith(path string, o Overrides) (*Spec, error) {
	data, err := ReadFile(path)
	if err != nil {
		if _, ok := err.(*SpecError); ok {
			return nil, err
		}
		return nil, fmt.Errorf("read job spec: %w", err)
	}
	return parseSpec(path, data, o)
}

// ParseSpec is LoadSpec for bytes already read; file names them in errors.
func ParseSpec(file string, data []byte) (*Spec, error) {
	return parseSpec(file, data, Overrides{})
}

func parseSpec(file string, data []byte, o Overrides) (*Spec, error) {
	var s Spec
	if err := DecodeYAML(file, data, &s); err != nil {
		return nil, err
	}
	s.File = file
	o.apply(&s)
	s.applyDefaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Spec) applyDefaults() {
	s.Model.Provider = cmp.Or(s.Model.Provider, ProviderLexicon)
	s.Model.MaxTextChars = cmp.Or(s.Model.MaxTextChars, DefaultMaxTextChars)
	s.Model.RowsPerRequest = cmp.Or(s.Model.RowsPerRequest, DefaultRowsPerRequest)
	if s.Source.Language.Column != "" && s.Source.Language.Unknown == "" {
		s.Source.Language.Unknown = UnknownLanguageTake
	}
	p, ok := LookupProvider(s.Model.Provider)
	if !ok {
		return // Validate names the unknown provider
	}
	if p.Chat {
		s.Model.chatDefaults()
	}
	if p.Defaults != nil {
		p.Defaults(&s.Model)
	}
	if p.Chat {
		s.Model.batchDefaults() // after the provider's: it reads the deployment
		if s.Model.Prices == (Prices{}) {
			s.Model.Prices, _ = ListPrices(s.Model.Name)
		}
	} else if s.Model.BatchAPI == "" {
		s.Model.BatchAPI = BatchOff
	}
}

// Overrides are model settings given on the command line; zero values
// leave the spec's own setting.
type Overrides struct {
	Provider string
	BaseURL  string
	Model    string
	// Deployment is model.deployment for a provider with deployments
	// (Provider.Deployments); for another chat provider it is the model
	// name when Model is empty.
	Deployment     string
	APIVersion     string
	RowsPerRequest int
	RPM            int
	TPM            int
	MaxConcurrency int
	MaxTokensTotal int64
	// BatchAPI turns model.batch_api on; BatchPoll sets model.batch.poll.
	BatchAPI  bool
	BatchPoll string
}

func (o Overrides) apply(s *Spec) {
	m := &s.Model
	if o.Provider != "" && o.Provider != m.Provider {
		// The file's model name belongs to its own provider ("vader" means
		// nothing to a chat server): drop it, --model or the provider's
		// default takes its place. So do the languages the file's model
		// reads: the new provider's default (every language for a chat
		// provider) applies.
		m.Provider, m.Name, m.Languages = o.Provider, "", nil
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&m.BaseURL, o.BaseURL)
	set(&m.Name, o.Model)
	if p, ok := LookupProvider(m.Provider); ok && p.Chat && !p.Deployments {
		// A server without deployments picks what answers by the model
		// name: --deployment names it, unless --model does.
		set(&m.Name, cmp.Or(o.Model, o.Deployment))
	} else {
		set(&m.Deployment, o.Deployment)
	}
	set(&m.APIVersion, o.APIVersion)
	if o.RowsPerRequest != 0 {
		m.RowsPerRequest = o.RowsPerRequest
	}
	if o.RPM != 0 {
		m.RPM = o.RPM
	}
	if o.TPM != 0 {
		m.TPM = o.TPM
	}
	if o.MaxConcurrency != 0 {
		m.MaxConcurrency = o.MaxConcurrency
	}
	if o.MaxTokensTotal != 0 {
		m.MaxTokensTotal = o.MaxTokensTotal
	}
	if o.BatchAPI {
		m.BatchAPI = BatchOn
	}
	set(&m.Batch.Poll, o.BatchPoll)
}

// ID names the model as rows record it in _model: provider/name, or what
// the provider's ModelName says answers (for azure the deployment).
func (m ModelSettings) ID() string {
	if p, ok := LookupProvider(m.Provider); ok && p.ModelName != nil {
		return m.Provider + "/" + p.ModelName(m)
	}
	return m.Provider + "/" + m.Name
}

// Chat reports whether the spec's provider is a chat-completion server.
func (m ModelSettings) Chat() bool {
	p, ok := LookupProvider(m.Provider)
	return ok && p.Chat
}

// RequestTimeout is the parsed per-request timeout (validated by Validate).
func (m ModelSettings) RequestTimeout() time.Duration {
	d, _ := time.ParseDuration(m.Timeout)
	return d
}

var namePattern = specfile.NamePattern

// TablePattern is what a table name must match: NAMESPACE.TABLE, with
// nested namespaces as a.b.TABLE (specfile.TablePattern, which the CDK app
// and the snapshot event's JSON Schema share).
var TablePattern = specfile.TablePattern

// Validate checks every field and returns all problems joined.
func (s *Spec) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &SpecError{File: s.File, Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	// finite checks a number read from the spec: NaN passes every range
	// check (and labels every row), infinities fail every request.
	finite := func(field string, v *float64) {
		if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0)) {
			bad(field, "%g is not a finite number", *v)
		}
	}

	if s.Name == "" {
		bad("name", "is required")
	} else if !namePattern.MatchString(s.Name) {
		bad("name", "%q must be lower case letters, digits and _ and start with a letter", s.Name)
	}
	if s.Version == "" {
		bad("version", "is required (it is written to every row as _spec_version)")
	}

	checkTable := func(field, v string) {
		if p := specfile.TableProblem(v); p != "" {
			bad(field, "%s", p)
		}
	}
	checkTable("source.table", s.Source.Table)
	checkTable("target.table", s.Target.Table)
	if s.Source.Table != "" && s.Source.Table == s.Target.Table {
		bad("target.table", "must differ from source.table")
	}
	switch k := s.Source.Key; {
	case k == "":
		bad("source.key", "is required: the column that identifies a row")
	case strings.HasPrefix(k, "_"):
		// The key is written to the target next to the lineage columns,
		// as carried columns are: the same names are reserved.
		bad("source.key", "%q: names starting with _ are reserved for lineage columns", k)
	}
	if s.Source.Text == "" {
		bad("source.text", "is required: the column sent to the model")
	}
	if s.Source.Key != "" && s.Source.Key == s.Source.Text {
		bad("source.text", "must differ from source.key")
	}
	seen := map[string]string{}
	if k := s.Source.Key; k != "" && !strings.HasPrefix(k, "_") {
		seen[k] = "source.key"
	}
	for i, c := range s.Source.Carry {
		f := fmt.Sprintf("source.carry[%d]", i)
		switch {
		case c == "":
			bad(f, "is empty")
		case strings.HasPrefix(c, "_"):
			bad(f, "%q: names starting with _ are reserved for lineage columns", c)
		case seen[c] != "":
			bad(f, "%q is already %s", c, seen[c])
		default:
			seen[c] = f
		}
	}

	provider, known := LookupProvider(s.Model.Provider)
	if !known {
		bad("model.provider", "%q is not one of %s", s.Model.Provider, strings.Join(Providers, ", "))
	}
	if s.Model.MaxTextChars < 1 {
		bad("model.max_text_chars", "must be at least 1, got %d", s.Model.MaxTextChars)
	}
	if s.Model.RowsPerRequest < 1 || s.Model.RowsPerRequest > 500 {
		bad("model.rows_per_request", "must be from 1 to 500, got %d", s.Model.RowsPerRequest)
	}
	if provider.Chat {
		s.validateChat(bad)
		s.validateBatch(bad)
	} else if known && s.Model.BatchAPI != BatchOff {
		bad("model.batch_api", "is for the chat providers (%s), not %s", strings.Join(ChatProviders, ", "), s.Model.Provider)
	}
	finite("model.temperature", &s.Model.Temperature)
	finite("model.prices.input_per_million", &s.Model.Prices.InputPerMillion)
	finite("model.prices.cached_input_per_million", &s.Model.Prices.CachedInputPerMillion)
	finite("model.prices.output_per_million", &s.Model.Prices.OutputPerMillion)
	finite("model.lexicon.neutral_band", s.Model.Lexicon.NeutralBand)
	s.validateLanguage(bad)

	if len(s.Outputs) == 0 {
		bad("outputs", "at least one output field is required")
	}
	for i, f := range s.Outputs {
		p := fmt.Sprintf("outputs[%d]", i)
		switch {
		case f.Name == "":
			bad(p+".name", "is required")
		case !namePattern.MatchString(f.Name):
			bad(p+".name", "%q must be lower case letters, digits and _ and start with a letter", f.Name)
		case seen[f.Name] != "":
			bad(p+".name", "%q is already %s", f.Name, seen[f.Name])
		default:
			seen[f.Name] = p
		}
		if !slices.Contains(fieldTypes, f.Type) {
			bad(p+".type", "%q is not one of %s", f.Type, strings.Join(fieldTypes, ", "))
			continue
		}
		if len(f.Enum) > 0 && f.Type != TypeString && f.Type != TypeStringList {
			bad(p+".enum", "only string and list<string> fields take an enum, this one is %s", f.Type)
		}
		for j, v := range f.Enum {
			if v == "" {
				bad(fmt.Sprintf("%s.enum[%d]", p, j), "is empty")
			} else if slices.Index(f.Enum, v) != j {
				bad(fmt.Sprintf("%s.enum[%d]", p, j), "%q is listed twice", v)
			}
		}
		numeric := f.Type == TypeDouble || f.Type == TypeLong
		if (f.Min != nil || f.Max != nil) && !numeric {
			bad(p, "min and max apply only to double and long fields, this one is %s", f.Type)
		}
		finite(p+".min", f.Min)
		finite(p+".max", f.Max)
		if f.Min != nil && f.Max != nil && *f.Min > *f.Max {
			bad(p+".max", "must be at least min (%g), got %g", *f.Min, *f.Max)
		}
	}

	if provider.Validate != nil {
		provider.Validate(s, bad)
	}
	return errors.Join(errs...)
}

// Output returns the output field called name.
func (s *Spec) Output(name string) (Field, bool) {
	for _, f := range s.Outputs {
		if f.Name == name {
			return f, true
		}
	}
	return Field{}, false
}
