package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/specfile"
	"github.com/socialdata/enricher/storage"
)

// envConfig names the config file when --config is not given.
const envConfig = "ENRICHER_CONFIG"

// Config is the runtime config every subcommand reads (enricher.yaml).
type Config struct {
	Catalog  storage.CatalogConfig `yaml:"catalog"`
	Jobs     []string              `yaml:"jobs"`
	Pipeline PipelineConfig        `yaml:"pipeline"`

	file string
	dir  string
}

// maxWorkers bounds pipeline.workers: each worker holds a batch in
// flight, and more enrich goroutines than cores do not make the lexicon
// faster (a chat model's parallelism is model.max_concurrency).
const maxWorkers = 1024

// PipelineConfig tunes the stages; zero values take the defaults of
// pipeline.Options.
type PipelineConfig struct {
	BatchRows       int    `yaml:"batch_rows"`
	ChunkRows       int64  `yaml:"chunk_rows"`
	ChunkBytes      int64  `yaml:"chunk_bytes"`
	Workers         int    `yaml:"workers"`
	ReadConcurrency int    `yaml:"read_concurrency"`
	ShutdownGrace   string `yaml:"shutdown_grace"`
	// Maintenance is what the consumer does for the targets it writes:
	// "auto" (default: snapshot expiry after each commit, and compaction,
	// manifest rewrite, expiry and orphan cleanup once a target is due) or
	// "off" (the tables' owner maintains them: S3 Tables, Glue optimizers,
	// `enricher maintain` on a schedule).
	Maintenance string `yaml:"maintenance"`
	// MaintainEvery and MaintainMinFiles say when a target is due for the
	// automatic maintenance (defaults 1h and 64 data files).
	MaintainEvery    string `yaml:"maintain_every"`
	MaintainMinFiles int64  `yaml:"maintain_min_files"`
}

// configPath returns --config, else $ENRICHER_CONFIG.
func configPath(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if env := os.Getenv(envConfig); env != "" {
		return env, nil
	}
	return "", fmt.Errorf("no config: pass --config FILE or set %s (enricher demo writes one)", envConfig)
}

// loadConfig reads and validates a config file. Relative paths in it are
// relative to the file's folder. What is wrong with it comes as
// *enrich.SpecError (specfile.FieldError), as for job specs: the file
// itself (not a regular file, larger than specfile.MaxFileBytes, two YAML
// documents) and each field (a fraction where an integer is expected, ...).
func loadConfig(path string) (*Config, error) {
	data, err := specfile.ReadFile(path)
	if err != nil {
		if se := new(specfile.FieldError); errors.As(err, &se) {
			return nil, err // a device, a FIFO, a folder, too large
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	var c Config
	if err := specfile.DecodeYAML(path, data, &c); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config path: %w", err)
	}
	c.file, c.dir = path, filepath.Dir(abs)
	c.Catalog = c.Catalog.Resolve(c.dir)
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &enrich.SpecError{File: c.file, Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if err := c.Catalog.Validate(); err != nil {
		errs = append(errs, &enrich.SpecError{File: c.file, Reason: err.Error()})
	}
	if len(c.Jobs) == 0 {
		bad("jobs", "at least one job spec file is required")
	}
	p := c.Pipeline
	if p.BatchRows < 0 {
		bad("pipeline.batch_rows", "must not be negative, got %d", p.BatchRows)
	}
	if p.ChunkRows < 0 {
		bad("pipeline.chunk_rows", "must not be negative, got %d", p.ChunkRows)
	}
	if p.ChunkBytes < 0 {
		bad("pipeline.chunk_bytes", "must not be negative, got %d", p.ChunkBytes)
	}
	if p.Workers < 0 || p.Workers > maxWorkers {
		bad("pipeline.workers", "must be from 0 to %d, got %d", maxWorkers, p.Workers)
	}
	if p.ReadConcurrency < 0 {
		bad("pipeline.read_concurrency", "must not be negative, got %d", p.ReadConcurrency)
	}
	if p.ShutdownGrace != "" {
		if d, err := time.ParseDuration(p.ShutdownGrace); err != nil || d < 0 {
			bad("pipeline.shutdown_grace", "%q is not a duration such as 30s", p.ShutdownGrace)
		}
	}
	switch p.Maintenance {
	case "", "auto", "off":
	default:
		bad("pipeline.maintenance", "%q: want auto or off", p.Maintenance)
	}
	if p.MaintainEvery != "" {
		if d, err := time.ParseDuration(p.MaintainEvery); err != nil || d <= 0 {
			bad("pipeline.maintain_every", "%q is not a positive duration such as 1h", p.MaintainEvery)
		}
	}
	if p.MaintainMinFiles < 0 || p.MaintainMinFiles > 1_000_000 {
		bad("pipeline.maintain_min_files", "must be from 0 to 1000000, got %d", p.MaintainMinFiles)
	}
	return errors.Join(errs...)
}

// grace is the configured shutdown grace period (0: the default).
func (c *Config) grace() time.Duration {
	d, _ := time.ParseDuration(c.Pipeline.ShutdownGrace)
	return d
}

// specPaths resolves the job spec files relative to the config's folder.
func (c *Config) specPaths() []string {
	out := make([]string, len(c.Jobs))
	for i, p := range c.Jobs {
		if !filepath.IsAbs(p) {
			p = filepath.Join(c.dir, p)
		}
		out[i] = p
	}
	return out
}

// loadSpecs loads every job spec, with the command line's model overrides.
// All spec errors are returned together, each naming its file and field.
func (c *Config) loadSpecs(o enrich.Overrides) ([]*enrich.Spec, error) {
	var specs []*enrich.Spec
	var errs []error
	names, targets := map[string]string{}, map[string]string{}
	for _, p := range c.specPaths() {
		spec, err := enrich.LoadSpecWith(p, o)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, ok := names[spec.Name]; ok {
			errs = append(errs, &enrich.SpecError{File: p, Field: "name", Reason: fmt.Sprintf("%q is also the name of %s", spec.Name, prev)})
			continue
		}
		names[spec.Name] = p
		if prev, ok := targets[spec.Target.Table]; ok {
			// Replays replace a target's rows by source snapshot: a
			// target shared by two jobs would lose the other job's rows.
			errs = append(errs, &enrich.SpecError{File: p, Field: "target.table", Reason: fmt.Sprintf("%q is also the target of %s: each job needs its own target table", spec.Target.Table, prev)})
			continue
		}
		targets[spec.Target.Table] = p
		if err := storage.CheckProperties(spec.Target.Properties); err != nil {
			errs = append(errs, &enrich.SpecError{File: p, Field: "target.properties", Reason: err.Error()})
			continue
		}
		specs = append(specs, spec)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return specs, nil
}

// loadJobs loads every job spec and builds its model; mf (may be nil)
// holds the command line's model flags.
func (c *Config) loadJobs(ctx context.Context, mf *modelFlags, log *slog.Logger) ([]pipeline.Job, error) {
	specs, err := c.loadSpecs(mf.overrides())
	if err != nil {
		return nil, err
	}
	ms := &models{flags: mf, log: log}
	var jobs []pipeline.Job
	for _, spec := range specs {
		model, err := ms.build(ctx, spec)
		if err != nil {
			for _, j := range jobs {
				closeModel(j.Model)
			}
			return nil, fmt.Errorf("job %s: %w", spec.Name, err)
		}
		jobs = append(jobs, pipeline.Job{Spec: spec, Model: model})
	}
	return jobs, nil
}

// options turns the pipeline config into processor options.
func (c *Config) options() pipeline.Options {
	every, _ := time.ParseDuration(c.Pipeline.MaintainEvery) // checked by validate: "" gives 0, the default
	return pipeline.Options{
		BatchRows:        c.Pipeline.BatchRows,
		ChunkRows:        c.Pipeline.ChunkRows,
		ChunkBytes:       c.Pipeline.ChunkBytes,
		Workers:          c.Pipeline.Workers,
		ReadConcurrency:  c.Pipeline.ReadConcurrency,
		NoMaintenance:    c.Pipeline.Maintenance == "off",
		MaintainEvery:    every,
		MaintainMinFiles: c.Pipeline.MaintainMinFiles,
	}
}

// chatChunkRows is the default chunk size when a job asks a chat model.
const chatChunkRows = 5000

// runtimeEnv is what most subcommands start from: the config, its jobs
// (when asked for) and the open catalog. Close releases the catalog.
type runtimeEnv struct {
	cfg  *Config
	jobs []pipeline.Job
	cat  *storage.Catalog
}

// openWith loads the config (and, with withJobs, every job spec and its
// model, with the command line's model flags mf, which may be nil) and
// opens the catalog. Loading comes first, so an invalid file stops the
// command before anything is touched. Models log to log. Only with create
// may a missing sqlite catalog file or warehouse folder be created (demo
// and ingest); elsewhere a missing one is a typo to report.
func openWith(ctx context.Context, path string, withJobs, create bool, mf *modelFlags, log *slog.Logger) (*runtimeEnv, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, err
	}
	cfg.Catalog.MustExist = !create
	e := &runtimeEnv{cfg: cfg}
	if withJobs {
		if e.jobs, err = cfg.loadJobs(ctx, mf, log); err != nil {
			return nil, err
		}
	}
	if e.cat, err = storage.OpenCatalog(ctx, cfg.Catalog); err != nil {
		e.closeModels()
		return nil, err
	}
	return e, nil
}

// processor builds the pipeline for the env's jobs with opts' hooks.
func (e *runtimeEnv) processor(log *slog.Logger, edit func(*pipeline.Options)) (*pipeline.Processor, error) {
	opts := e.cfg.options()
	opts.Logger = log
	if opts.ChunkRows == 0 && slices.ContainsFunc(e.jobs, func(j pipeline.Job) bool { return j.Spec.Model.Chat() }) {
		// A chat model enriches tens of rows a second, not hundreds of
		// thousands: commit every few minutes of work, not every hour.
		opts.ChunkRows = chatChunkRows
	}
	if edit != nil {
		edit(&opts)
	}
	return pipeline.NewProcessor(e.cat, e.jobs, opts)
}

// Close releases the catalog and the models' connections.
func (e *runtimeEnv) Close() error {
	e.closeModels()
	return e.cat.Close()
}

func (e *runtimeEnv) closeModels() {
	for _, j := range e.jobs {
		closeModel(j.Model)
	}
}
