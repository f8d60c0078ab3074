package enrich_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/enrich"
)

const batchSpecBase = `name: s
version: "1"
source: {table: a.posts, key: id, text: text}
target: {table: a.out}
model:
  provider: openai
  name: gpt-4o-mini
%MODEL%
prompt: {system: classify}
outputs:
  - {name: label, type: string, enum: [a, b]}
`

func batchSpec(t *testing.T, model string) (*enrich.Spec, error) {
	t.Helper()
	return enrich.ParseSpec("job.yaml", []byte(strings.Replace(batchSpecBase, "%MODEL%", model, 1)))
}

func TestBatchSettingsDefaultsAndModes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		give string
		want enrich.BatchMode
	}{
		{"", enrich.BatchOff},
		{"  batch_api: true", enrich.BatchOn},
		{"  batch_api: false", enrich.BatchOff},
		{"  batch_api: auto", enrich.BatchAuto},
		{"  batch_api: on", enrich.BatchOn},
	} {
		s, err := batchSpec(t, tt.give)
		require.NoError(t, err, tt.give)
		assert.Equal(t, tt.want, s.Model.BatchAPI, tt.give)
	}
	s, err := batchSpec(t, "  batch_api: auto")
	require.NoError(t, err)
	b := s.Model.Batch
	assert.Equal(t, int64(enrich.DefaultBatchMinRows), b.MinRows)
	assert.Equal(t, int64(enrich.DefaultBatchMaxRows), b.MaxRows)
	assert.Equal(t, enrich.BatchRetrySync, b.Retry, "openai serves chat requests too: retries go synchronously")
	assert.Equal(t, "1m0s", b.PollInterval().String())
}

func TestBatchSettingsAreChecked(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ give, field, want string }{
		{"  batch_api: sometimes", "", "batch_api must be true, false or auto"},
		{"  batch_api: true\n  batch: {poll: 10ms}", "model.batch.poll", "at least 1s"},
		{"  batch_api: true\n  batch: {retry: later}", "model.batch.retry", "sync or batch"},
		{"  batch_api: true\n  batch: {max_rows: -1}", "model.batch.max_rows", "from 1 to 1,000,000"},
		{"  batch_api: true\n  batch: {attempts: 11}", "model.batch.attempts", "from 1 to 10"},
		{"  batch_api: true\n  batch: {polll: 1m}", "", "polll"},
	} {
		_, err := batchSpec(t, tt.give)
		require.Error(t, err, tt.give)
		assert.Contains(t, err.Error(), tt.want, tt.give)
		assert.Contains(t, err.Error(), tt.field, tt.give)
	}
	spec := strings.NewReplacer("provider: openai", "provider: lexicon", "name: gpt-4o-mini", "name: vader").Replace(batchSpecBase)
	_, err := enrich.ParseSpec("job.yaml", []byte(strings.Replace(spec, "%MODEL%", "  batch_api: true", 1)))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "model.batch_api: is for the chat providers ("+strings.Join(enrich.ChatProviders, ", ")+"), not lexicon")

	azure := strings.NewReplacer("provider: openai", "provider: azure\n  base_url: https://x.openai.azure.com\n  api_version: 2024-06-01").Replace(batchSpecBase)
	_, err = enrich.ParseSpec("job.yaml", []byte(strings.Replace(azure, "%MODEL%", "  batch_api: true", 1)))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"2024-06-01" has no Batch API`)
	s, err := enrich.ParseSpec("job.yaml", []byte(strings.Replace(strings.Replace(azure, "2024-06-01", "2024-10-21", 1), "%MODEL%", "  batch_api: true", 1)))
	require.NoError(t, err)
	assert.Equal(t, enrich.BatchRetryBatch, s.Model.Batch.Retry, "an Azure batch deployment serves no chat requests: retries go as a batch")
	assert.Equal(t, "gpt-4o-mini", s.Model.Batch.Deployment)
}

func TestBatchOfMoreLinesThanAProviderTakesIsRefused(t *testing.T) {
	t.Parallel()
	_, err := batchSpec(t, "  rows_per_request: 1\n  batch_api: true\n  batch: {max_rows: 60000}")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "model.batch.max_rows: 60000 rows at rows_per_request 1 make up to 60000 request lines; a batch takes at most 50000")
	_, err = batchSpec(t, "  rows_per_request: 2\n  batch_api: true\n  batch: {max_rows: 60000}")
	require.NoError(t, err)
}
