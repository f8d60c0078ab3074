package pipeline_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/fakellm"
	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/internal/testlog"
)

// TestThrottledChunkComesBackAfterRetryAfter: a chunk of which the model
// answered nothing because it throttled every request is not written (no
// failed rows); the chunks before it stay committed, the message comes
// back after the server's Retry-After (not the consumer's backoff), and
// once the model answers again every row lands exactly once.
func TestThrottledChunkComesBackAfterRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	var outage atomic.Bool
	outage.Store(true)
	llm := (&fakellm.Server{RetryAfter: time.Second, Fault: func(r *fakellm.Request) fakellm.Fault {
		if outage.Load() && slices.ContainsFunc(r.Rows, func(row fakellm.Row) bool { return strings.HasPrefix(row.Text, "busy") }) {
			return fakellm.Throttle
		}
		return fakellm.None
	}}).StartTB(t)
	spec, err := enrich.LoadSpecWith(testbed.SentimentSpec(), enrich.Overrides{
		Provider: enrich.ProviderOpenAI, BaseURL: llm.URL() + "/v1", RowsPerRequest: 10,
	})
	require.NoError(t, err)
	spec.Model.MaxAttempts = 2
	b.Spec = spec
	chat, err := enrich.NewChat(spec, enrich.ChatOptions{Logger: quietLogger(), RetryBase: time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(chat.Close)

	// Three chunks of 100 posts; while the outage lasts the model throttles
	// every request of the second one.
	posts := make([]postdata.Post, 300)
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i := range posts {
		id := int64(i + 1)
		text := fmt.Sprintf("calm post number %d", id)
		if id > 100 && id <= 200 {
			text = fmt.Sprintf("busy post number %d", id)
		}
		posts[i] = postdata.Post{ID: id, Text: text, Author: "ana", Lang: "en", CreatedAt: at.Add(time.Duration(i) * time.Second)}
	}
	b.Src, _, err = postdata.Append(ctx, b.Src, postdata.Of(posts...))
	require.NoError(t, err)
	snap := b.Src.CurrentSnapshot().SnapshotID

	logs := &testlog.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	p := b.Processor(chat, func(o *pipeline.Options) {
		o.ChunkRows = 100
		o.Logger = log
	})
	q := consumer.NewMemQueue()
	q.Publish(b.Event(snap).Encode())

	// During the outage: the message is released for the Retry-After.
	runCtx, stop := context.WithCancel(ctx)
	var first consumer.MessageOutcome
	c := &consumer.Consumer{Source: q, Handler: p, Logger: log, RetryBackoff: time.Hour,
		OnOutcome: func(o consumer.MessageOutcome) {
			first = o
			stop()
		}}
	released := time.Now()
	require.NoError(t, c.Run(runCtx))
	assert.Equal(t, consumer.ActionReleased, first.Action)
	assert.Equal(t, consumer.ClassRetryAfter, first.Class)
	assert.Equal(t, time.Second, first.RetryIn, "the server's Retry-After, not the consumer's backoff")
	require.ErrorIs(t, first.Err, enrich.ErrThrottled)
	assert.Contains(t, logs.String(), "chunk not committed: the model throttled every request of it")
	assert.Contains(t, logs.String(), "none was answered")
	assert.Contains(t, logs.String(), "retry_in_s=1")

	rows := b.TargetRows()
	assert.Len(t, rows, 100, "the first chunk stays committed, nothing of the others")
	for _, r := range rows {
		assert.Equal(t, string(enrich.StatusOK), r[enrich.ColStatus], "post %v", r["post_id"])
		assert.LessOrEqual(t, r["post_id"].(int64), int64(100))
	}
	wm := b.Watermark().Cursor
	assert.Equal(t, snap, wm.PartialSnapshotID, "the watermark is inside the snapshot")
	assert.Equal(t, int64(100), wm.PartialRows, "after the first chunk")
	u := chat.Usage()
	assert.Positive(t, u.Throttled)
	assert.Equal(t, int64(llm.Stats().Injected), u.Throttled)

	// The quota is back: the message comes back after its wait and the
	// rest is written, every row once.
	outage.Store(false)
	q.Close()
	var outcomes []consumer.MessageOutcome
	c = &consumer.Consumer{Source: q, Handler: p, Logger: log, RetryBackoff: time.Hour,
		OnOutcome: func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) }}
	require.NoError(t, c.Run(ctx))
	require.Len(t, outcomes, 1)
	assert.Equal(t, consumer.ActionAcked, outcomes[0].Action)
	assert.GreaterOrEqual(t, time.Since(released), time.Second, "came back before its Retry-After")
	b.RequireExactlyOnce(300, func(int64) int64 { return snap })
	for _, r := range b.TargetRows() {
		assert.Equal(t, string(enrich.StatusOK), r[enrich.ColStatus], "post %v", r["post_id"])
	}
}
