package enrich

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
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

// Providers names the model backends a spec may choose.
var Providers = []string{ProviderLexicon, ProviderOpenAI, ProviderAzure, ProviderNoop}

// Model providers.
const (
	// ProviderLexicon is the offline VADER lexicon model.
	ProviderLexicon = "lexicon"
	// ProviderOpenAI is any server speaking the OpenAI chat-completions API
	// (api.openai.com, vLLM, llama.cpp, Ollama, ...).
	ProviderOpenAI = "openai"
	// ProviderAzure is an Azure OpenAI deployment.
	ProviderAzure = "azure"
	// ProviderNoop answers every row at once with a fixed valid value; it
	// exists to measure the pipeline without a model.
	ProviderNoop = "noop"
)

// Defaults of the chat providers.
const (
	DefaultOpenAIBaseURL  = "https://api.openai.com/v1"
	DefaultOpenAIModel    = "gpt-4o-mini"
	DefaultAzureVersion   = "2024-10-21"
	DefaultMaxConcurrency = 16
	DefaultTimeout        = "60s"
	DefaultMaxAttempts    = 6
)

// Defaults applied by LoadSpec when a field is absent.
const (
	DefaultMaxTextChars   = 2000
	DefaultRowsPerRequest = 20
	DefaultNeutralBand    = 0.05
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
}

// Target says where the job writes.
type Target struct {
	Table string `yaml:"table"`
}

// ModelSettings holds the model settings of a job.
type ModelSettings struct {
	Provider       string        `yaml:"provider"`
	Name           string        `yaml:"name"`
	MaxTextChars   int           `yaml:"max_text_chars"`
	RowsPerRequest int           `yaml:"rows_per_request"`
	Lexicon        LexiconConfig `yaml:"lexicon"`

	// Chat providers (openai, azure).
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
}

// Prices are a model's list prices in US dollars per million tokens, used to
// estimate the cost of a run.
type Prices struct {
	InputPerMillion  float64 `yaml:"input_per_million"`
	OutputPerMillion float64 `yaml:"output_per_million"`
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

// SpecError names the file, the field and the reason a spec is invalid.
type SpecError struct {
	File   string
	Field  string
	Reason string
}

func (e *SpecError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", e.File, e.Reason)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Field, e.Reason)
}

// LoadSpec reads, defaults and validates the spec file at path. An invalid
// spec returns every problem found, each a *SpecError.
func LoadSpec(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read job spec: %w", err)
	}
	return ParseSpec(path, data)
}

// LoadSpecWith is LoadSpec with command-line overrides of the model
// settings, applied before defaults and validation.
func LoadSpecWith(path string, o Overrides) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
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
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &SpecError{File: file, Reason: "file is empty"}
		}
		return nil, &SpecError{File: file, Reason: DescribeYAMLError(err)}
	}
	s.File = file
	o.apply(&s)
	s.applyDefaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// DescribeYAMLError turns a YAML decoding error into a short reason:
// "line 3: unknown field tpye; line 5: cannot read "x" as a number".
func DescribeYAMLError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		parts := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			e = unknownField.ReplaceAllString(e, "unknown field $1")
			parts[i] = strings.Replace(e, "cannot unmarshal", "cannot read", 1)
		}
		return strings.Join(parts, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

func (s *Spec) applyDefaults() {
	if s.Model.Provider == "" {
		s.Model.Provider = ProviderLexicon
	}
	if s.Model.MaxTextChars == 0 {
		s.Model.MaxTextChars = DefaultMaxTextChars
	}
	if s.Model.RowsPerRequest == 0 {
		s.Model.RowsPerRequest = DefaultRowsPerRequest
	}
	m := &s.Model
	switch m.Provider {
	case ProviderLexicon:
		if m.Name == "" {
			m.Name = "vader"
		}
		if m.Lexicon.NeutralBand == nil {
			b := DefaultNeutralBand
			m.Lexicon.NeutralBand = &b
		}
	case ProviderNoop:
		if m.Name == "" {
			m.Name = "fixed"
		}
	case ProviderOpenAI, ProviderAzure:
		if m.Provider == ProviderOpenAI {
			if m.BaseURL == "" {
				m.BaseURL = DefaultOpenAIBaseURL
			}
			if m.Name == "" {
				m.Name = DefaultOpenAIModel
			}
		} else {
			if m.APIVersion == "" {
				m.APIVersion = DefaultAzureVersion
			}
			if m.Deployment == "" {
				m.Deployment = m.Name
			}
			if m.Name == "" {
				m.Name = m.Deployment
			}
		}
		if m.MaxConcurrency == 0 {
			m.MaxConcurrency = DefaultMaxConcurrency
		}
		if m.Timeout == "" {
			m.Timeout = DefaultTimeout
		}
		if m.MaxAttempts == 0 {
			m.MaxAttempts = DefaultMaxAttempts
		}
	}
}

// Overrides are model settings given on the command line; zero values
// leave the spec's own setting.
type Overrides struct {
	Provider       string
	BaseURL        string
	Model          string
	Deployment     string
	APIVersion     string
	RowsPerRequest int
	RPM            int
	TPM            int
	MaxConcurrency int
	MaxTokensTotal int64
}

func (o Overrides) apply(s *Spec) {
	m := &s.Model
	if o.Provider != "" && o.Provider != m.Provider {
		// The file's model name belongs to its own provider ("vader" means
		// nothing to a chat server): drop it, --model or the provider's
		// default takes its place.
		m.Provider, m.Name = o.Provider, ""
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&m.BaseURL, o.BaseURL)
	set(&m.Name, o.Model)
	set(&m.Deployment, o.Deployment)
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
}

// ID names the model as rows record it in _model: provider/name, and for
// azure provider/deployment, the deployment being what answers.
func (m ModelSettings) ID() string {
	if m.Provider == ProviderAzure {
		return m.Provider + "/" + m.Deployment
	}
	return m.Provider + "/" + m.Name
}

// Chat reports whether the spec's provider is a chat-completion server.
func (m ModelSettings) Chat() bool {
	return m.Provider == ProviderOpenAI || m.Provider == ProviderAzure
}

// RequestTimeout is the parsed per-request timeout (validated by Validate).
func (m ModelSettings) RequestTimeout() time.Duration {
	d, _ := time.ParseDuration(m.Timeout)
	return d
}

var (
	namePattern  = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	tablePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$`)
)

// Validate checks every field and returns all problems joined.
func (s *Spec) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &SpecError{File: s.File, Field: field, Reason: fmt.Sprintf(format, args...)})
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
		switch {
		case v == "":
			bad(field, "is required")
		case !tablePattern.MatchString(v):
			bad(field, "%q must be NAMESPACE.TABLE", v)
		}
	}
	checkTable("source.table", s.Source.Table)
	checkTable("target.table", s.Target.Table)
	if s.Source.Table != "" && s.Source.Table == s.Target.Table {
		bad("target.table", "must differ from source.table")
	}
	if s.Source.Key == "" {
		bad("source.key", "is required: the column that identifies a row")
	}
	if s.Source.Text == "" {
		bad("source.text", "is required: the column sent to the model")
	}
	if s.Source.Key != "" && s.Source.Key == s.Source.Text {
		bad("source.text", "must differ from source.key")
	}
	seen := map[string]string{}
	for _, c := range []string{s.Source.Key} {
		if c != "" {
			seen[c] = "source.key"
		}
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

	if !slices.Contains(Providers, s.Model.Provider) {
		bad("model.provider", "%q is not one of %s", s.Model.Provider, strings.Join(Providers, ", "))
	}
	if s.Model.MaxTextChars < 1 {
		bad("model.max_text_chars", "must be at least 1, got %d", s.Model.MaxTextChars)
	}
	if s.Model.RowsPerRequest < 1 || s.Model.RowsPerRequest > 500 {
		bad("model.rows_per_request", "must be from 1 to 500, got %d", s.Model.RowsPerRequest)
	}
	if s.Model.Chat() {
		s.validateChat(bad)
	}

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
		if f.Min != nil && f.Max != nil && *f.Min > *f.Max {
			bad(p+".max", "must be at least min (%g), got %g", *f.Min, *f.Max)
		}
	}

	if s.Model.Provider == ProviderLexicon {
		s.validateLexicon(bad)
	}
	return errors.Join(errs...)
}

func (s *Spec) validateLexicon(bad func(field, format string, args ...any)) {
	lx := s.Model.Lexicon
	label, ok := s.Output(lx.LabelField)
	switch {
	case lx.LabelField == "":
		bad("model.lexicon.label_field", "is required for provider lexicon")
	case !ok:
		bad("model.lexicon.label_field", "%q is not an output field", lx.LabelField)
	case label.Type != TypeString:
		bad("model.lexicon.label_field", "%q must be a string field, it is %s", lx.LabelField, label.Type)
	default:
		for _, want := range []string{"negative", "neutral", "positive"} {
			if len(label.Enum) > 0 && !slices.Contains(label.Enum, want) {
				bad("model.lexicon.label_field", "the enum of %q must contain %q: the lexicon model answers negative, neutral or positive", lx.LabelField, want)
			}
		}
	}
	if lx.ScoreField != "" {
		score, ok := s.Output(lx.ScoreField)
		switch {
		case !ok:
			bad("model.lexicon.score_field", "%q is not an output field", lx.ScoreField)
		case score.Type != TypeDouble:
			bad("model.lexicon.score_field", "%q must be a double field, it is %s", lx.ScoreField, score.Type)
		case (score.Min != nil && *score.Min > -1) || (score.Max != nil && *score.Max < 1):
			bad("model.lexicon.score_field", "%q must allow the range [-1, 1] of the lexicon's compound score", lx.ScoreField)
		}
	}
	for _, f := range s.Outputs {
		if f.Name != lx.LabelField && f.Name != lx.ScoreField {
			bad("outputs", "provider lexicon can only fill %q and %q, not %q", lx.LabelField, lx.ScoreField, f.Name)
		}
	}
	if b := lx.NeutralBand; b != nil && (*b < 0 || *b >= 1) {
		bad("model.lexicon.neutral_band", "must be in [0, 1), got %g", *b)
	}
}

func (s *Spec) validateChat(bad func(field, format string, args ...any)) {
	m := s.Model
	if strings.TrimSpace(s.Prompt.System) == "" {
		bad("prompt.system", "is required for provider %s", m.Provider)
	}
	if m.Provider == ProviderAzure {
		if m.BaseURL == "" {
			bad("model.base_url", "is required for provider azure: the resource endpoint, https://NAME.openai.azure.com")
		}
		if m.Deployment == "" {
			bad("model.deployment", "is required for provider azure (or model.name, used as the deployment)")
		}
	}
	if m.BaseURL != "" {
		if u, err := url.Parse(m.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("model.base_url", "%q is not an http(s) URL", m.BaseURL)
		}
	}
	if m.RPM < 0 {
		bad("model.rpm", "must not be negative, got %d (0 means no limit)", m.RPM)
	}
	if m.TPM < 0 {
		bad("model.tpm", "must not be negative, got %d (0 means no limit)", m.TPM)
	}
	if m.MaxConcurrency < 1 || m.MaxConcurrency > 1024 {
		bad("model.max_concurrency", "must be from 1 to 1024, got %d", m.MaxConcurrency)
	}
	if d, err := time.ParseDuration(m.Timeout); err != nil || d <= 0 {
		bad("model.timeout", "%q is not a positive duration such as 60s", m.Timeout)
	}
	if m.MaxAttempts < 1 || m.MaxAttempts > 100 {
		bad("model.max_attempts", "must be from 1 to 100, got %d", m.MaxAttempts)
	}
	if m.MaxTokensPerRow < 0 {
		bad("model.max_tokens_per_row", "must not be negative, got %d (0 derives it from the outputs)", m.MaxTokensPerRow)
	}
	if m.MaxTokensTotal < 0 {
		bad("model.max_tokens_total", "must not be negative, got %d (0 means no budget)", m.MaxTokensTotal)
	}
	if m.Prices.InputPerMillion < 0 || m.Prices.OutputPerMillion < 0 {
		bad("model.prices", "prices must not be negative")
	}
	if m.Temperature < 0 || m.Temperature > 2 {
		bad("model.temperature", "must be from 0 to 2, got %g", m.Temperature)
	}
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
