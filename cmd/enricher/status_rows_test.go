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

// TestOneLineEscapesWhatAServerMaySend: a failure text with a line break
// or a terminal escape prints on one line, escaped; other text is kept.
func TestOneLineEscapesWhatAServerMaySend(t *testing.T) {
	t.Parallel()
	assert.Equal(t, `HTTP 500: \u001b[31mbad\u001b[0m\nsecond line`, oneLine("HTTP 500: \x1b[31mbad\x1b[0m\nsecond line"))
	assert.Equal(t, "\"ecstatic\" is not one of\tnegative, 漢字 😀", oneLine("\"ecstatic\" is not one of\tnegative, 漢字 😀"))
}
