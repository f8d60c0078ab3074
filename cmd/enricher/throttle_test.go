package main

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/fakellm"
	"github.com/socialdata/enricher/internal/sqstest"
)

// TestRunReleasesAThrottledMessageForTheRetryAfter: during a quota outage
// (every request answered 429 past its attempts) run writes no failed
// rows: the message goes back to the queue, invisible for the server's
// Retry-After (ChangeMessageVisibility), not the queue's visibility
// timeout nor --retry-backoff, and once the quota is back the rows are
// written.
func TestRunReleasesAThrottledMessageForTheRetryAfter(t *testing.T) {
	_, url, dlq := runQueueWith(t, 10, map[string]string{"VisibilityTimeout": "30"})
	var outage atomic.Bool
	outage.Store(true)
	llm := (&fakellm.Server{RetryAfter: time.Second, Fault: func(*fakellm.Request) fakellm.Fault {
		if outage.Load() {
			return fakellm.Throttle
		}
		return fakellm.None
	}}).StartTB(t)
	// The outage ends once the first request has used its six attempts:
	// the chunk is then given up, and its message comes back answered.
	go func() {
		for llm.Stats().Injected < 6 {
			time.Sleep(10 * time.Millisecond)
		}
		outage.Store(false)
	}()
	cfg, _, _ := postsWarehouse(t, 40)
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")

	start := time.Now()
	_, stderr, err := runBoth(t, "run", "--config", cfg, "--queue-url", url, "--drain", "--wait", "1s", "--concurrency", "1",
		"--retry-backoff", "1m", "--provider", "openai", "--base-url", llm.URL()+"/v1", "--model", "m",
		"--max-concurrency", "1", "--log-format", "json")
	require.NoError(t, err, stderr)
	assert.Less(t, time.Since(start), 45*time.Second, "back after the Retry-After, not the backoff or the visibility timeout")
	assert.Contains(t, stderr, `"msg":"chunk not committed: the model throttled every request of it`)
	assert.Contains(t, stderr, `"msg":"message released for retry"`)
	assert.Contains(t, stderr, `"class":"retry_after"`)
	assert.Contains(t, stderr, `"retry_in_s":1`)
	assert.Equal(t, 6, llm.Stats().Injected, "the second request was held back, never sent during the outage")

	rows := exportRows(t, cfg, "social.posts_sentiment")
	require.Len(t, rows, 41, "the demo's row and the 40 posts, once each")
	for _, r := range rows {
		assert.Contains(t, []any{"ok", "skipped"}, r["_status"], "post %v: %v", r["post_id"], r["_error"])
	}
	assert.Empty(t, sqstest.ReceiveAll(t, sqstest.Client(t), dlq))
}
