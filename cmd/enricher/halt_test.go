package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/fakellm"
	"github.com/socialdata/enricher/internal/sqstest"
)

// TestRunHaltsOnAKeyTheServerRefuses: a model server that refuses the key
// (HTTP 401) would refuse every message alike, so run stops at once with
// the reason and the message stays in the queue, untouched and not
// dead-lettered; the next run, with the right key, does the work.
func TestRunHaltsOnAKeyTheServerRefuses(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-wrong")
	_, url, dlq := runQueueWith(t, 10, map[string]string{"VisibilityTimeout": "2"})
	llm := (&fakellm.Server{Key: "sk-right"}).StartTB(t)
	cfg, _, _ := postsWarehouse(t, 40)
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")

	chat := []string{"run", "--config", cfg, "--queue-url", url, "--drain", "--wait", "1s", "--concurrency", "1",
		"--provider", "openai", "--base-url", llm.URL() + "/v1", "--model", "m", "--log-format", "json"}
	start := time.Now()
	_, stderr, err := runBoth(t, chat...)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "HTTP 401")
	assert.Contains(t, err.Error(), "the message in flight was released")
	assert.Contains(t, stderr, `"msg":"message released: halting"`)
	assert.NotContains(t, stderr, "sk-wrong")
	assert.Less(t, time.Since(start), time.Minute, "halted, not retried until maxReceiveCount")
	// The first message's 40 rows go as two requests of 20 at once; the
	// second message is never started.
	assert.LessOrEqual(t, llm.Stats().Unauthorized, 2, "one refused message is enough to stop")

	api := sqstest.Client(t)
	assert.Empty(t, sqstest.ReceiveAll(t, api, dlq), "a halt dead-letters nothing")
	assert.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 1, "nothing written but the demo's row")
	// status says which job fails and why, from the record on its target.
	status := mustRun(t, "status", "--config", cfg)
	assert.Regexp(t, `last failure +\S+, FAILING: no commit since \(halt\), snapshot \d+: job sentiment, .*HTTP 401`, status)
	assert.NotContains(t, status, "sk-wrong")

	t.Setenv("OPENAI_API_KEY", "sk-right")
	_, stderr, err = runBoth(t, chat...)
	require.NoError(t, err, stderr)
	assert.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 41)
	assert.Contains(t, mustRun(t, "status", "--config", cfg), "before the last commit: the job has moved on since")
}
