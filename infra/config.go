package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/socialdata/enricher/internal/specfile"
)

// Config is everything a deployment can choose. It comes from CDK context
// (`cdk synth -c stage=prod -c queueType=standard`) over an optional JSON
// config file named by the context key "config", over the defaults. The
// json names are the context keys.
type Config struct {
	// Stage names the deployment: the stack is Enricher-<stage>.
	Stage string `json:"stage"`

	// QueueType is fifo (message group = source table) or standard.
	QueueType string `json:"queueType"`
	// MaxReceiveCount is how many receives a message gets before the
	// queue moves it to the dead-letter queue.
	MaxReceiveCount int `json:"maxReceiveCount"`
	// RetentionDays is how long the source queue keeps a message; the
	// dead-letter queue keeps its messages longer (14 days, the maximum).
	RetentionDays int `json:"retentionDays"`
	// VisibilityTimeoutSeconds of the source queue; 0 means six times the
	// consumer function's timeout (or 5 minutes without a function).
	VisibilityTimeoutSeconds int `json:"visibilityTimeoutSeconds"`
	// OldestMessageAlarmSeconds: the alarm on the age of the oldest source
	// message fires above this.
	OldestMessageAlarmSeconds int `json:"oldestMessageAlarmSeconds"`

	// Compute is lambda, fargate (enricher run as an ECS service scaling
	// on queue depth) or both.
	Compute string `json:"compute"`
	// LambdaTimeoutSeconds, LambdaMemoryMB: the consumer function.
	LambdaTimeoutSeconds int `json:"lambdaTimeoutSeconds"`
	LambdaMemoryMB       int `json:"lambdaMemoryMB"`
	// MaxConcurrency caps the function instances the SQS event source runs
	// at once (AWS allows 2 to 1000).
	MaxConcurrency int `json:"maxConcurrency"`
	// BatchSize is the number of messages per invocation (at most 10).
	BatchSize int `json:"batchSize"`
	// ReservedConcurrency reserves that many concurrent executions of the
	// account for the function (and caps it there). 0, the default,
	// reserves MaxConcurrency: the event source never runs more, and
	// other functions' bursts cannot throttle it. -1 reserves none. A
	// value below MaxConcurrency is refused: the event source would be
	// throttled by its own function, and throttled messages come back and
	// count receives towards maxReceiveCount.
	ReservedConcurrency int `json:"reservedConcurrency"`
	// FargateCPU (CPU units), FargateMemoryMB, FargateMinTasks and
	// FargateMaxTasks: the enricher run service.
	FargateCPU      int `json:"fargateCpu"`
	FargateMemoryMB int `json:"fargateMemoryMB"`
	FargateMinTasks int `json:"fargateMinTasks"`
	FargateMaxTasks int `json:"fargateMaxTasks"`
	// FargateImage, when set, is an existing image of the consumer (for
	// example one a workflow pushed to ECR) pinned by digest
	// (REPOSITORY@sha256:DIGEST), holding the binary at /enricher, its
	// runtime config at /etc/enricher/enricher.yaml and the job specs
	// beside it. Empty, the default, builds the image from source at synth
	// time (infra/image.go) as a tarball image asset.
	FargateImage string `json:"fargateImage"`
	// FargateNetwork is public (the default: public subnets, a public IP
	// per task, no ingress, no NAT gateway) or private (private subnets
	// with one NAT gateway for the model endpoint, and VPC endpoints for
	// the AWS services the task calls).
	FargateNetwork string `json:"fargateNetwork"`

	// ModelEndpoint is the chat-completion endpoint (https) of the
	// language model, empty for jobs on the offline lexicon model.
	ModelEndpoint string `json:"modelEndpoint"`
	// ModelDeployment is what answers at that endpoint: the deployment for
	// a provider with deployments (azure), else the model name; required
	// with ModelEndpoint. The consumer gets it as --deployment
	// (ENRICHER_MODEL_DEPLOYMENT) whatever the provider, and the provider
	// says what it means (enrich.Provider.Deployments).
	ModelDeployment string `json:"modelDeployment"`
	// ModelProvider is the consumer's chat provider of ModelEndpoint
	// (DefaultModelProvider when empty with an endpoint), passed through:
	// the stack keeps no list of providers, so a new provider of the
	// consumer needs no change here, and the consumer refuses one it does
	// not know, or that is not a chat provider, when it starts. Empty
	// without an endpoint: each job spec's provider stands.
	ModelProvider string `json:"modelProvider"`
	// ModelSecretARN imports an existing Secrets Manager secret holding the
	// model API key; empty creates one (with a placeholder value).
	ModelSecretARN string `json:"modelSecretArn"`

	// Catalog is glue (a Glue database created here over the warehouse
	// bucket) or rest (an existing Iceberg REST catalog).
	Catalog string `json:"catalog"`
	// GlueDatabase is the Glue database, which is the Iceberg namespace of
	// the jobs' tables.
	GlueDatabase string `json:"glueDatabase"`
	// RESTCatalogURI and RESTWarehouse: the REST catalog (catalog=rest).
	RESTCatalogURI string `json:"restCatalogUri"`
	RESTWarehouse  string `json:"restWarehouse"`

	// Jobs are the job spec files shipped with the consumer, relative to
	// the repository root.
	Jobs []string `json:"jobs"`
}

// Choices of the enumerated fields.
const (
	QueueFIFO     = "fifo"
	QueueStandard = "standard"

	ComputeLambda  = "lambda"
	ComputeFargate = "fargate"
	ComputeBoth    = "both"

	CatalogGlue = "glue"
	CatalogREST = "rest"

	NetworkPublic  = "public"
	NetworkPrivate = "private"

	// DefaultModelProvider is the provider of a modelEndpoint when
	// modelProvider is not given.
	DefaultModelProvider = "azure"
)

// Limits that AWS sets.
const (
	maxVisibilitySeconds = 12 * 60 * 60 // SQS
	dlqRetentionDays     = 14           // SQS maximum, used for the DLQ
	maxLambdaTimeout     = 900
	fifoMaxBatch         = 10
)

// DefaultConfig is the configuration when nothing is given.
func DefaultConfig() Config {
	return Config{
		Stage:                     "dev",
		QueueType:                 QueueFIFO,
		MaxReceiveCount:           5,
		RetentionDays:             4,
		OldestMessageAlarmSeconds: 1800,
		Compute:                   ComputeLambda,
		LambdaTimeoutSeconds:      300,
		LambdaMemoryMB:            1024,
		MaxConcurrency:            5,
		BatchSize:                 10,
		FargateCPU:                1024,
		FargateMemoryMB:           2048,
		FargateMinTasks:           0,
		FargateMaxTasks:           4,
		FargateNetwork:            NetworkPublic,
		Catalog:                   CatalogGlue,
		GlueDatabase:              "social",
		Jobs:                      []string{"jobs/sentiment.yaml"},
	}
}

// contextConfigFile is the context key naming the optional config file.
const contextConfigFile = "config"

// sourceContext is where a setting given as CDK context comes from, in
// errors: "context: queueType: ...". A setting from the config file names
// the file.
const sourceContext = "context"

// setting is the error of one bad setting: a *specfile.FieldError whose
// File is where the setting came from (sourceContext, the config file, or
// "" for a default) and whose Field is the key (context key and config
// file field).
func setting(source, key, reason string) error {
	return &specfile.FieldError{File: source, Field: key, Reason: reason}
}

// LoadConfig builds the configuration from CDK context (all of it, as
// Node.GetAllContext returns it) over the config file the context key
// "config" names (relative to dir) over the defaults, and validates it.
// Every problem is returned, joined, each a *specfile.FieldError naming
// where the setting came from and its key.
func LoadConfig(context map[string]any, dir string) (Config, error) {
	cfg := DefaultConfig()
	source := map[string]string{}
	if v, ok := context[contextConfigFile]; ok {
		path := fmt.Sprint(v)
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		set, err := readConfigFile(path, &cfg)
		if err != nil {
			return cfg, err
		}
		for _, k := range set {
			source[k] = path
		}
	}
	var errs []error
	keys := configKeys()
	for k, v := range context {
		if k == contextConfigFile || !isUserKey(k) {
			continue
		}
		f, ok := keys[k]
		if !ok {
			errs = append(errs, setting(sourceContext, k, "unknown setting; known: "+strings.Join(sortedKeys(keys), ", ")))
			continue
		}
		if err := f.set(&cfg, v); err != nil {
			errs = append(errs, setting(sourceContext, k, err.Error()))
			continue
		}
		source[k] = sourceContext
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, err
	}
	return cfg, cfg.validate(source)
}

// isUserKey tells the deployment's own context keys (camelCase words)
// from those the CDK and its CLI set: feature flags "@aws-cdk/...",
// "aws:cdk:...", lookups, "acknowledged-issue-numbers".
func isUserKey(k string) bool { return userKeyRE.MatchString(k) }

// readConfigFile decodes a JSON config file over cfg and returns the keys
// it set. Unknown keys are errors.
func readConfigFile(path string, cfg *Config) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return nil, &specfile.FieldError{File: path, Reason: err.Error()}
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, &specfile.FieldError{File: path, Reason: err.Error()}
	}
	set := make([]string, 0, len(raw))
	for k := range raw {
		set = append(set, k)
	}
	return set, nil
}

// field sets one Config field from a context value: a string from
// `-c key=value`, or a JSON value from cdk.json.
type field struct {
	set func(*Config, any) error
}

func configKeys() map[string]field {
	str := func(p func(*Config) *string) field {
		return field{func(c *Config, v any) error {
			s, ok := v.(string)
			if !ok {
				return fmt.Errorf("want a string, got %v", v)
			}
			*p(c) = strings.TrimSpace(s)
			return nil
		}}
	}
	num := func(p func(*Config) *int) field {
		return field{func(c *Config, v any) error {
			n, err := toInt(v)
			if err != nil {
				return err
			}
			*p(c) = n
			return nil
		}}
	}
	return map[string]field{
		"stage":                     str(func(c *Config) *string { return &c.Stage }),
		"queueType":                 str(func(c *Config) *string { return &c.QueueType }),
		"maxReceiveCount":           num(func(c *Config) *int { return &c.MaxReceiveCount }),
		"retentionDays":             num(func(c *Config) *int { return &c.RetentionDays }),
		"visibilityTimeoutSeconds":  num(func(c *Config) *int { return &c.VisibilityTimeoutSeconds }),
		"oldestMessageAlarmSeconds": num(func(c *Config) *int { return &c.OldestMessageAlarmSeconds }),
		"compute":                   str(func(c *Config) *string { return &c.Compute }),
		"lambdaTimeoutSeconds":      num(func(c *Config) *int { return &c.LambdaTimeoutSeconds }),
		"lambdaMemoryMB":            num(func(c *Config) *int { return &c.LambdaMemoryMB }),
		"maxConcurrency":            num(func(c *Config) *int { return &c.MaxConcurrency }),
		"batchSize":                 num(func(c *Config) *int { return &c.BatchSize }),
		"fargateCpu":                num(func(c *Config) *int { return &c.FargateCPU }),
		"fargateMemoryMB":           num(func(c *Config) *int { return &c.FargateMemoryMB }),
		"fargateMinTasks":           num(func(c *Config) *int { return &c.FargateMinTasks }),
		"fargateMaxTasks":           num(func(c *Config) *int { return &c.FargateMaxTasks }),
		"reservedConcurrency":       num(func(c *Config) *int { return &c.ReservedConcurrency }),
		"fargateImage":              str(func(c *Config) *string { return &c.FargateImage }),
		"fargateNetwork":            str(func(c *Config) *string { return &c.FargateNetwork }),
		"modelProvider":             str(func(c *Config) *string { return &c.ModelProvider }),
		"modelEndpoint":             str(func(c *Config) *string { return &c.ModelEndpoint }),
		"modelDeployment":           str(func(c *Config) *string { return &c.ModelDeployment }),
		"modelSecretArn":            str(func(c *Config) *string { return &c.ModelSecretARN }),
		"catalog":                   str(func(c *Config) *string { return &c.Catalog }),
		"glueDatabase":              str(func(c *Config) *string { return &c.GlueDatabase }),
		"restCatalogUri":            str(func(c *Config) *string { return &c.RESTCatalogURI }),
		"restWarehouse":             str(func(c *Config) *string { return &c.RESTWarehouse }),
		"jobs": {func(c *Config, v any) error {
			switch v := v.(type) {
			case string: // -c jobs=a.yaml,b.yaml
				c.Jobs = nil
				for _, p := range strings.Split(v, ",") {
					if p = strings.TrimSpace(p); p != "" {
						c.Jobs = append(c.Jobs, p)
					}
				}
			case []any: // "jobs": ["a.yaml"] in cdk.json
				c.Jobs = nil
				for _, p := range v {
					s, ok := p.(string)
					if !ok {
						return fmt.Errorf("want file names, got %v", p)
					}
					c.Jobs = append(c.Jobs, s)
				}
			default:
				return fmt.Errorf("want a comma-separated list of files, got %v", v)
			}
			return nil
		}},
	}
}

func toInt(v any) (int, error) {
	switch v := v.(type) {
	case float64:
		if v != float64(int(v)) {
			return 0, fmt.Errorf("want a whole number, got %v", v)
		}
		return int(v), nil
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return 0, fmt.Errorf("want a whole number, got %q", v)
		}
		return n, nil
	default:
		return 0, fmt.Errorf("want a whole number, got %v", v)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

var (
	userKeyRE  = regexp.MustCompile(`^[a-z][A-Za-z0-9]*$`)
	stageRE    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,19}$`)
	databaseRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,254}$`)
	digestRE   = regexp.MustCompile(`^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$`)
	secretRE   = regexp.MustCompile(`^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$`)
)

// fargateMemory is the memory (MiB) Fargate allows for each CPU size.
var fargateMemory = map[int][2]int{
	256:  {512, 2048},
	512:  {1024, 4096},
	1024: {2048, 8192},
	2048: {4096, 16384},
	4096: {8192, 30720},
}

// Lambda reports whether the consumer function is deployed.
func (c Config) Lambda() bool { return c.Compute == ComputeLambda || c.Compute == ComputeBoth }

// Fargate reports whether the enricher run service is deployed.
func (c Config) Fargate() bool { return c.Compute == ComputeFargate || c.Compute == ComputeBoth }

// Provider is the model provider of ModelEndpoint: ModelProvider, else
// DefaultModelProvider with an endpoint, else empty (the job specs' own).
func (c Config) Provider() string {
	if c.ModelProvider != "" || c.ModelEndpoint == "" {
		return c.ModelProvider
	}
	return DefaultModelProvider
}

// Reserved is the function's reserved concurrency, 0 for none.
func (c Config) Reserved() int {
	switch c.ReservedConcurrency {
	case 0:
		return c.MaxConcurrency
	case -1:
		return 0
	}
	return c.ReservedConcurrency
}

// FIFO reports whether the queues are FIFO queues.
func (c Config) FIFO() bool { return c.QueueType == QueueFIFO }

// VisibilityTimeout is the source queue's visibility timeout in seconds.
func (c Config) VisibilityTimeout() int {
	if c.VisibilityTimeoutSeconds > 0 {
		return c.VisibilityTimeoutSeconds
	}
	if c.Lambda() {
		return 6 * c.LambdaTimeoutSeconds
	}
	return 300
}

// validate checks every setting; source says where each key came from.
func (c Config) validate(source map[string]string) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, setting(source[key], key, fmt.Sprintf(format, args...)))
	}
	if !stageRE.MatchString(c.Stage) {
		bad("stage", "%q must be lowercase letters, digits and dashes, starting with a letter, at most 20 characters", c.Stage)
	}
	if c.QueueType != QueueFIFO && c.QueueType != QueueStandard {
		bad("queueType", "%q is not fifo or standard", c.QueueType)
	}
	if c.MaxReceiveCount < 1 || c.MaxReceiveCount > 1000 {
		bad("maxReceiveCount", "must be 1 to 1000, got %d", c.MaxReceiveCount)
	}
	if c.RetentionDays < 1 || c.RetentionDays >= dlqRetentionDays {
		bad("retentionDays", "must be 1 to %d days (the dead-letter queue keeps messages %d days, which must be longer), got %d",
			dlqRetentionDays-1, dlqRetentionDays, c.RetentionDays)
	}
	if c.OldestMessageAlarmSeconds < 60 {
		bad("oldestMessageAlarmSeconds", "must be at least 60, got %d", c.OldestMessageAlarmSeconds)
	}
	switch c.Compute {
	case ComputeLambda, ComputeFargate, ComputeBoth:
	default:
		bad("compute", "%q is not lambda, fargate or both", c.Compute)
	}
	if c.VisibilityTimeoutSeconds < 0 || c.VisibilityTimeoutSeconds > maxVisibilitySeconds {
		bad("visibilityTimeoutSeconds", "must be 0 (six times lambdaTimeoutSeconds) to %d, got %d", maxVisibilitySeconds, c.VisibilityTimeoutSeconds)
	}
	if c.Lambda() {
		if c.LambdaTimeoutSeconds < 10 || c.LambdaTimeoutSeconds > maxLambdaTimeout {
			bad("lambdaTimeoutSeconds", "must be 10 to %d, got %d", maxLambdaTimeout, c.LambdaTimeoutSeconds)
		} else if v := c.VisibilityTimeout(); v < 6*c.LambdaTimeoutSeconds {
			bad("visibilityTimeoutSeconds", "%d is less than six times lambdaTimeoutSeconds (6 x %d = %d): SQS would redeliver messages the function still holds",
				v, c.LambdaTimeoutSeconds, 6*c.LambdaTimeoutSeconds)
		} else if v > maxVisibilitySeconds {
			bad("visibilityTimeoutSeconds", "six times lambdaTimeoutSeconds (%d) exceeds the SQS maximum %d", v, maxVisibilitySeconds)
		}
		if c.LambdaMemoryMB < 128 || c.LambdaMemoryMB > 10240 {
			bad("lambdaMemoryMB", "must be 128 to 10240, got %d", c.LambdaMemoryMB)
		}
		if c.MaxConcurrency < 2 || c.MaxConcurrency > 1000 {
			bad("maxConcurrency", "must be 2 to 1000 (the limits of an SQS event source's maximum concurrency), got %d", c.MaxConcurrency)
		}
		if c.BatchSize < 1 || c.BatchSize > fifoMaxBatch {
			bad("batchSize", "must be 1 to %d (the FIFO event source maximum; one message is one snapshot), got %d", fifoMaxBatch, c.BatchSize)
		}
		if r := c.ReservedConcurrency; r != 0 && r != -1 && (r < c.MaxConcurrency || r > 1000) {
			bad("reservedConcurrency", "must be 0 (reserve maxConcurrency), -1 (reserve none) or maxConcurrency (%d) to 1000, got %d: "+
				"below maxConcurrency the event source is throttled by its own function and good messages go to the DLQ after maxReceiveCount", c.MaxConcurrency, r)
		}
	}
	if c.Fargate() {
		if mem, ok := fargateMemory[c.FargateCPU]; !ok {
			bad("fargateCpu", "must be one of 256, 512, 1024, 2048, 4096, got %d", c.FargateCPU)
		} else if c.FargateMemoryMB < mem[0] || c.FargateMemoryMB > mem[1] {
			bad("fargateMemoryMB", "must be %d to %d with fargateCpu %d, got %d", mem[0], mem[1], c.FargateCPU, c.FargateMemoryMB)
		}
		if c.FargateMinTasks < 0 {
			bad("fargateMinTasks", "must not be negative, got %d", c.FargateMinTasks)
		}
		if c.FargateMaxTasks < 1 || c.FargateMaxTasks < c.FargateMinTasks {
			bad("fargateMaxTasks", "must be at least 1 and at least fargateMinTasks (%d), got %d", c.FargateMinTasks, c.FargateMaxTasks)
		}
		if c.FargateImage != "" && !digestRE.MatchString(c.FargateImage) {
			bad("fargateImage", "%q is not pinned by digest (REPOSITORY@sha256:64 hex digits)", c.FargateImage)
		}
		if c.FargateNetwork != NetworkPublic && c.FargateNetwork != NetworkPrivate {
			bad("fargateNetwork", "%q is not public or private", c.FargateNetwork)
		}
	}
	if c.ModelEndpoint != "" {
		if err := checkHTTPS(c.ModelEndpoint); err != nil {
			bad("modelEndpoint", "%v", err)
		}
		if c.ModelDeployment == "" {
			bad("modelDeployment", "is required with modelEndpoint (the deployment or model name)")
		}
	}
	switch {
	case c.ModelProvider == "":
	case c.ModelEndpoint == "":
		bad("modelProvider", "is only used with modelEndpoint")
	case !specfile.NamePattern.MatchString(c.ModelProvider):
		// Which providers the consumer has is the consumer's to say (it
		// refuses another when it starts): here only what can be none.
		bad("modelProvider", "%q is not a provider name (lower case letters, digits and _, starting with a letter; enricher run --help lists the providers)", c.ModelProvider)
	}
	if c.ModelSecretARN != "" && !secretRE.MatchString(c.ModelSecretARN) {
		bad("modelSecretArn", "%q is not a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)", c.ModelSecretARN)
	}
	switch c.Catalog {
	case CatalogGlue:
		if !databaseRE.MatchString(c.GlueDatabase) {
			bad("glueDatabase", "%q must be lowercase letters, digits and underscores", c.GlueDatabase)
		}
		if c.RESTCatalogURI != "" {
			bad("restCatalogUri", "is only used with catalog=rest")
		}
	case CatalogREST:
		if c.RESTCatalogURI == "" {
			bad("restCatalogUri", "is required with catalog=rest (the REST catalog's https endpoint)")
		} else if err := checkHTTPS(c.RESTCatalogURI); err != nil {
			bad("restCatalogUri", "%v", err)
		}
	default:
		bad("catalog", "%q is not glue or rest", c.Catalog)
	}
	if len(c.Jobs) == 0 {
		bad("jobs", "at least one job spec file is required")
	}
	for _, j := range c.Jobs {
		if filepath.IsAbs(j) || strings.HasPrefix(filepath.Clean(j), "..") {
			bad("jobs", "%q must be a path inside the repository", j)
		}
	}
	return errors.Join(errs...)
}

func checkHTTPS(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q is not an https:// URL", s)
	}
	return nil
}

// JobTables are the tables a job spec reads and writes.
type JobTables struct {
	File, Source, Target string
}

// ReadJobs reads the source and target tables of the configured job specs
// (relative to root) and checks that, on a Glue catalog, they live in the
// Glue database: the Iceberg namespace is the Glue database. The files are
// read as the consumer reads them (specfile.ReadFile, specfile.DecodeYAML:
// an empty file, a second document, a duplicate key stop the synth) and
// the tables checked by its rule (specfile.TableProblem); only these two
// fields are read, the other fields are the consumer's to check when it
// starts (enricher validate checks them before). Each problem is a
// *specfile.FieldError naming the file and the field.
func (c Config) ReadJobs(root string) ([]JobTables, error) {
	var out []JobTables
	var errs []error
	for _, j := range c.Jobs {
		data, err := specfile.ReadFile(filepath.Join(root, j))
		if err != nil {
			if se := new(specfile.FieldError); errors.As(err, &se) {
				errs = append(errs, err) // a folder, a device, too large
			} else {
				errs = append(errs, setting("", "jobs", fmt.Sprintf("read job spec: %v", err)))
			}
			continue
		}
		// The inline maps take every other field: their names and values
		// are the consumer's to check.
		var spec struct {
			Source struct {
				Table string         `yaml:"table"`
				Other map[string]any `yaml:",inline"`
			} `yaml:"source"`
			Target struct {
				Table string         `yaml:"table"`
				Other map[string]any `yaml:",inline"`
			} `yaml:"target"`
			Other map[string]any `yaml:",inline"`
		}
		if err := specfile.DecodeYAML(j, data, &spec); err != nil {
			errs = append(errs, err)
			continue
		}
		t := JobTables{File: j, Source: spec.Source.Table, Target: spec.Target.Table}
		for _, f := range []struct{ field, name string }{{"source.table", t.Source}, {"target.table", t.Target}} {
			if p := specfile.TableProblem(f.name); p != "" {
				errs = append(errs, &specfile.FieldError{File: j, Field: f.field, Reason: p})
				continue
			}
			ns := f.name[:strings.LastIndex(f.name, ".")]
			if c.Catalog == CatalogGlue && ns != c.GlueDatabase {
				errs = append(errs, &specfile.FieldError{File: j, Field: f.field, Reason: fmt.Sprintf(
					"%s is in namespace %q, not in the Glue database %q (glueDatabase): the namespace is the Glue database", f.name, ns, c.GlueDatabase)})
			}
		}
		out = append(out, t)
	}
	return out, errors.Join(errs...)
}
