package enrich

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// BatchMode is model.batch_api: whether rows go through the provider's
// Batch API (half the price, a separate and much larger quota, answers
// within 24 hours) instead of one chat request at a time.
type BatchMode string

// Batch modes. In YAML, true and false mean on and off.
const (
	BatchOff  BatchMode = "off"
	BatchOn   BatchMode = "on"
	BatchAuto BatchMode = "auto"
)

// UnmarshalYAML takes true, false, on, off or auto.
func (b *BatchMode) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: batch_api must be true, false or auto", n.Line)
	}
	switch strings.ToLower(n.Value) {
	case "true", "on", "yes":
		*b = BatchOn
	case "false", "off", "no", "":
		*b = BatchOff
	case "auto":
		*b = BatchAuto
	default:
		return fmt.Errorf("line %d: batch_api must be true, false or auto, got %q", n.Line, n.Value)
	}
	return nil
}

// BatchSettings tune the Batch API (model.batch in a job spec).
type BatchSettings struct {
	// MinRows is, with batch_api: auto, the smallest range of source rows
	// that goes through the Batch API; smaller ones are asked
	// synchronously, for latency (default 5,000: see the README).
	MinRows int64 `yaml:"min_rows"`
	// MaxRows caps the source rows of one batch (default 50,000). A larger
	// range is sent as several batches. It bounds what a collection holds
	// in memory (the distinct texts and their answers) and what one failed
	// batch delays.
	MaxRows int64 `yaml:"max_rows"`
	// Poll is how often run checks submitted batches (default 1m).
	Poll string `yaml:"poll"`
	// Attempts is how many batches a range may take: the first, then one
	// for the rows a batch did not answer (default 3).
	Attempts int `yaml:"attempts"`
	// Retry is how rows a batch did not answer are asked again: sync
	// (chat requests, when at most SyncMaxRows; more go as a new batch)
	// or batch (always a new batch: an Azure Global Batch deployment
	// serves no chat requests). Default sync for openai, batch for azure.
	Retry string `yaml:"retry"`
	// SyncMaxRows is the most rows retried synchronously (default 1,000).
	SyncMaxRows int `yaml:"sync_max_rows"`
	// Deployment is, for azure, the Global Batch or Data Zone Batch
	// deployment that batch lines name (default model.deployment).
	Deployment string `yaml:"deployment"`
}

// Batch defaults.
const (
	DefaultBatchMinRows     = 5_000
	DefaultBatchMaxRows     = 50_000
	DefaultBatchPoll        = "1m"
	DefaultBatchAttempts    = 3
	DefaultBatchSyncMaxRows = 1_000
	BatchRetrySync          = "sync"
	BatchRetryBatch         = "batch"
	// maxBatchLines is the most request lines OpenAI and Azure OpenAI
	// take in one batch.
	maxBatchLines = 50_000
	// azureBatchVersion is the first GA Azure OpenAI API version with the
	// Batch API.
	azureBatchVersion = "2024-10-21"
)

func (m *ModelSettings) batchDefaults() {
	m.BatchAPI = cmp.Or(m.BatchAPI, BatchOff)
	b := &m.Batch
	b.MinRows = cmp.Or(b.MinRows, DefaultBatchMinRows)
	b.MaxRows = cmp.Or(b.MaxRows, DefaultBatchMaxRows)
	b.Poll = cmp.Or(b.Poll, DefaultBatchPoll)
	b.Attempts = cmp.Or(b.Attempts, DefaultBatchAttempts)
	if b.Retry == "" {
		b.Retry = BatchRetrySync
		if m.Provider == ProviderAzure {
			b.Retry = BatchRetryBatch
		}
	}
	b.SyncMaxRows = cmp.Or(b.SyncMaxRows, DefaultBatchSyncMaxRows)
	b.Deployment = cmp.Or(b.Deployment, m.Deployment)
}

// validateBatch checks the batch settings of a chat provider.
func (s *Spec) validateBatch(bad func(field, format string, args ...any)) {
	m := s.Model
	b := m.Batch
	if b.MinRows < 1 {
		bad("model.batch.min_rows", "must be at least 1, got %d", b.MinRows)
	}
	if b.MaxRows < 1 || b.MaxRows > 1_000_000 {
		bad("model.batch.max_rows", "must be from 1 to 1,000,000, got %d", b.MaxRows)
	}
	if d, err := time.ParseDuration(b.Poll); err != nil || d < time.Second {
		bad("model.batch.poll", "%q is not a duration of at least 1s such as 1m", b.Poll)
	}
	if b.Attempts < 1 || b.Attempts > 10 {
		bad("model.batch.attempts", "must be from 1 to 10, got %d", b.Attempts)
	}
	if b.Retry != BatchRetrySync && b.Retry != BatchRetryBatch {
		bad("model.batch.retry", "must be sync or batch, got %q", b.Retry)
	}
	if lines := (b.MaxRows + int64(m.RowsPerRequest) - 1) / int64(max(1, m.RowsPerRequest)); lines > maxBatchLines {
		bad("model.batch.max_rows", "%d rows at rows_per_request %d make up to %d request lines; a batch takes at most %d: lower max_rows or raise rows_per_request", b.MaxRows, m.RowsPerRequest, lines, maxBatchLines)
	}
	if b.SyncMaxRows < 0 {
		bad("model.batch.sync_max_rows", "must not be negative, got %d", b.SyncMaxRows)
	}
	if m.BatchAPI != BatchOff && m.Provider == ProviderAzure && m.APIVersion < azureBatchVersion {
		bad("model.api_version", "%q has no Batch API: use %s or later with batch_api", m.APIVersion, azureBatchVersion)
	}
}

// PollInterval is the parsed model.batch.poll (validated by Validate).
func (b BatchSettings) PollInterval() time.Duration {
	d, _ := time.ParseDuration(b.Poll)
	return d
}
