package main

import (
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/fakellm"
)

// TestTheKeyNeverReachesTheTargetTable is the case end to end: a
// server that echoes the Authorization header in its refusals, its answer
// values, its finish reasons and its error bodies (as it is and
// base64-encoded) puts the key in no row of the target table, in no line
// of the demo's output and in no log line.
func TestTheKeyNeverReachesTheTargetTable(t *testing.T) {
	const key = "sk-live-echoed-back-by-a-careless-server"
	useKey(t, "OPENAI_API_KEY", key)
	faults := []fakellm.Fault{fakellm.EchoRefusal, fakellm.EchoValues, fakellm.EchoFinishReason, fakellm.EchoClientError}
	llm := (&fakellm.Server{
		Key: key,
		Echo: func(k string) string {
			return k + " (base64: " + base64.StdEncoding.EncodeToString([]byte("Bearer "+k)) + ")"
		},
		Fault: func(r *fakellm.Request) fakellm.Fault {
			if r.N == 2 {
				return fakellm.EchoServerError // retried once: the backoff is half a second
			}
			return faults[r.N%len(faults)]
		},
	}).StartTB(t)
	posts, _ := postsFile(t, 60)
	work, out, stderr, err := demoAgainst(t, llm, "openai", "fake-1", posts, "--rounds", "2", "--samples", "6",
		"--rows-per-request", "10", "--log-level", "debug")
	require.NoError(t, err, stderr)
	assert.Positive(t, llm.Stats().Injected)

	cfg := filepath.Join(work, "enricher.yaml")
	rows := exportRows(t, cfg, "social.posts_sentiment")
	require.Len(t, rows, 60)
	redacted := 0
	for _, r := range rows {
		if e, ok := r["_error"].(string); ok && strings.Contains(e, "[redacted]") {
			redacted++
		}
	}
	assert.Positive(t, redacted, "the echoes reached _error, scrubbed")
	csv := mustRun(t, "export", "--config", cfg, "--table", "social.posts_sentiment", "--format", "csv")
	b64 := base64.StdEncoding.EncodeToString([]byte("Bearer " + key))
	for name, text := range map[string]string{"demo output": out, "logs": stderr, "target table": csv} {
		assert.NotContains(t, text, key, name)
		assert.NotContains(t, text, b64, name)
		assert.NotContains(t, text, key[:20], name)
	}
}
