package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer/pipeline"
)

// TestStatusCountsRowsBySkipReason: status --rows shows the target's rows
// by status and why rows were skipped (the lexicon reads English only).
func TestStatusCountsRowsBySkipReason(t *testing.T) {
	t.Parallel()
	_, cfg := newDemo(t, "--generate", "300")
	out := mustRun(t, "status", "--config", cfg, "--rows")
	assert.Regexp(t, `rows\s+ok \d+, skipped \d+, failed 0, invalid_output 0`, out)
	assert.Regexp(t, `skipped\s+\d+: language pt is not one the model reads \(en\)`, out)

	js := mustRun(t, "status", "--config", cfg, "--rows", "--format", "json")
	var st pipeline.JobStatus
	require.NoError(t, json.NewDecoder(strings.NewReader(js)).Decode(&st))
	require.NotNil(t, st.Rows)
	var total, skipped int64
	for _, n := range st.Rows.ByStatus {
		total += n
	}
	for _, r := range st.Rows.SkippedBy {
		skipped += r.Rows
	}
	assert.Equal(t, int64(300), total, "every row counted once")
	assert.Equal(t, st.Rows.ByStatus["skipped"], skipped, "every skipped row has its reason")
}
