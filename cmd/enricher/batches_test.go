package main

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/fakellm"
)

// demo --batch-api against an OpenAI-compatible batch server: every row
// gets its own text's answer (the failed line is asked again
// synchronously), the redelivered first event submits nothing, and the
// summary prices the batch tokens at half.
func TestDemoThroughTheBatchAPI(t *testing.T) {
	const key = "sk-batch-key-that-must-stay-secret"
	useKey(t, "OPENAI_API_KEY", key)
	llm := (&fakellm.Server{
		Key:            key,
		BatchDelay:     1500 * time.Millisecond,
		BatchLineFault: onlyLine(2, fakellm.ErrorLine),
	}).StartTB(t)
	posts, texts := postsFile(t, 300)
	work, out, stderr, err := demoAgainst(t, llm, "openai", "gpt-4o-mini", posts, "--rounds", "3", "--samples", "0",
		"--rows-per-request", "50", "--batch-api", "--batch-poll", "1s")
	require.NoError(t, err, stderr)
	assert.Equal(t, 3, strings.Count(out, "sent to the Batch API"), out)
	assert.Contains(t, out, "batches  waiting for the provider to answer, checking every 1s")
	assert.Contains(t, out, "redelivered event, its rows are in a batch already (3 pending")
	assert.Equal(t, 3, strings.Count(out, ": committed: "), out)
	assert.Contains(t, out, "batch API tokens")
	assert.Contains(t, out, "at list prices of gpt-4o-mini (2026-12); model.prices sets yours, batch API tokens at 50%)")
	assert.NotContains(t, out+stderr, key)
	assert.Len(t, llm.Batches(), 3, "one batch per snapshot; the redelivered event submits none")
	for _, b := range llm.Batches() {
		assert.False(t, b.Azure)
		assert.Equal(t, "/v1/chat/completions", b.Endpoint)
	}

	rows := exportRows(t, filepath.Join(work, "enricher.yaml"), "social.posts_sentiment")
	requireRowsFromTheirOwnText(t, rows, texts, "openai/gpt-4o-mini")
	sync := 0
	for _, r := range llm.Requests() {
		if r.Batch == "" {
			sync++
		}
	}
	assert.Positive(t, sync, "the failed line's rows were asked again synchronously")
}

// onlyLine is a BatchLineFault that gives the nth batch line the server
// reads (from 1) fault, and answers every other.
func onlyLine(n int64, fault fakellm.BatchLineFault) func(string, []byte) fakellm.BatchLineFault {
	var lines atomic.Int64
	return func(string, []byte) fakellm.BatchLineFault {
		if lines.Add(1) == n {
			return fault
		}
		return fakellm.LineAnswered
	}
}

// The Azure form: files and batches under /openai with the api-version,
// lines for /chat/completions that name the batch deployment as model;
// retries of a Global Batch deployment go as a new batch.
func TestDemoThroughAzureGlobalBatch(t *testing.T) {
	const key = "azure-batch-key-that-must-stay-secret"
	useKey(t, "AZURE_OPENAI_API_KEY", key)
	llm := (&fakellm.Server{Key: key, BatchLineFault: onlyLine(1, fakellm.ServerErrorLine)}).StartTB(t)
	posts, texts := postsFile(t, 120)
	work, out, stderr, err := demoAgainst(t, llm, "azure", "gpt-4o-mini", posts, "--rounds", "1", "--samples", "0",
		"--rows-per-request", "50", "--batch-api", "--batch-poll", "1s")
	require.NoError(t, err, stderr)
	assert.NotContains(t, out+stderr, key)
	batches := llm.Batches()
	require.Len(t, batches, 2, "the failed line went as a second batch, not as a chat request")
	for _, b := range batches {
		assert.True(t, b.Azure)
		assert.Equal(t, "/chat/completions", b.Endpoint)
		assert.Equal(t, "2024-10-21", b.APIVersion)
	}
	for _, r := range llm.Requests() {
		assert.NotEmpty(t, r.Batch, "no chat request")
		assert.Equal(t, "gpt-4o-mini", r.Model, "each line names the deployment")
	}
	assert.Contains(t, out, "sent as a new batch")
	rows := exportRows(t, filepath.Join(work, "enricher.yaml"), "social.posts_sentiment")
	requireRowsFromTheirOwnText(t, rows, texts, "azure/gpt-4o-mini")
}

// run submits an event's rows and lets the message go; batches list and
// status show the pending batch; batches collect writes its rows once
// the provider has answered.
func TestRunSubmitsAndBatchesCollectCommits(t *testing.T) {
	t.Parallel()
	_, url, _ := runQueue(t)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	llm := (&fakellm.Server{BatchDelay: time.Hour, Clock: func() time.Time { return time.Unix(0, clock.Load()) }}).StartTB(t)
	work, cfg := newDemo(t, "--generate", "40")
	dir := filepath.Dir(work)
	more := filepath.Join(dir, "more.txt")
	require.NoError(t, os.WriteFile(more, []byte("what a great day\nthis is awful\nnot sure about this\n"), 0o644))
	mustRun(t, "ingest", "--config", cfg, "--posts", more, "--first-id", "41")
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")

	model := []string{"--provider", "openai", "--base-url", llm.URL() + "/v1", "--model", "gpt-4o-mini", "--batch-api", "--batch-poll", "1s"}
	out, stderr, err := runBoth(t, append([]string{"run", "--config", cfg, "--queue-url", url, "--drain", "--wait", "1s", "--log-format", "json"}, model...)...)
	require.NoError(t, err, out+stderr)
	assert.Contains(t, stderr, `"msg":"batch submitted"`)
	assert.Contains(t, stderr, `"msg":"batches still pending: the next run or `+"`enricher batches collect`"+` brings them in"`)
	require.Len(t, llm.Batches(), 1)
	id := llm.Batches()[0].ID
	assert.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 40, "the message is gone, its rows wait for the batch")

	out = mustRun(t, "batches", "list", "--config", cfg)
	assert.Contains(t, out, id)
	assert.Contains(t, out, "sentiment")
	assert.Contains(t, out, "submitted")
	out = mustRun(t, "status", "--config", cfg)
	assert.Contains(t, out, "pending batches")
	assert.Contains(t, out, id+", submitted")
	out = mustRun(t, "status", "--config", cfg, "--format", "json")
	assert.Contains(t, out, `"pending_batches":[{"batch":"`+id+`","state":"submitted"`)

	out = mustRun(t, append([]string{"batches", "collect", "--config", cfg}, model...)...)
	assert.Contains(t, out, "waiting")
	assert.Contains(t, out, "provider says validating")
	clock.Add(int64(2 * time.Hour))
	out = mustRun(t, append([]string{"batches", "collect", "--config", cfg, "--wait"}, model...)...)
	assert.Contains(t, out, ": committed: ok 3")
	rows := exportRows(t, cfg, "social.posts_sentiment")
	assert.Len(t, rows, 43, "the demo's 40 rows and the 3 ingested, once each")
	out = mustRun(t, "batches", "list", "--config", cfg)
	assert.Contains(t, out, "(no pending batches)")
	out = mustRun(t, append([]string{"batches", "collect", "--config", cfg}, model...)...)
	assert.Contains(t, out, "no pending batches")
	assert.Len(t, llm.Batches(), 1)
}
