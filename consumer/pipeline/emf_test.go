package pipeline_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/emf"
	"github.com/socialdata/enricher/internal/emf/emftest"
	"github.com/socialdata/enricher/internal/testbed"
)

// metered answers like the lexicon and reports usage as a paid model
// does: one request per call, 10 prompt tokens (4 of them cached) and 3
// completion tokens per row, a 429 before every fifth call; past
// budgetCalls calls its budget is spent.
type metered struct {
	inner                           enrich.Model
	budgetCalls                     int64
	calls, rows, throttled, refused atomic.Int64
	prices                          enrich.Prices
}

func (m *metered) Name() string { return "test/metered" }

func (m *metered) Annotate(ctx context.Context, items []enrich.Item, out []enrich.Answer) error {
	if m.budgetCalls > 0 && m.calls.Load() >= m.budgetCalls {
		m.refused.Add(1)
		return fmt.Errorf("model test: %w", enrich.ErrBudgetExhausted)
	}
	if m.calls.Add(1)%5 == 0 {
		m.throttled.Add(1)
	}
	m.rows.Add(int64(len(items)))
	return m.inner.Annotate(ctx, items, out)
}

func (m *metered) Usage() enrich.Usage {
	rows, thr := m.rows.Load(), m.throttled.Load()
	return enrich.Usage{Requests: m.calls.Load() + thr, Throttled: thr, RowsSent: rows,
		PromptTokens: 10 * rows, CachedTokens: 4 * rows, CompletionTokens: 3 * rows, Prices: m.prices}
}

// emfBatch runs the events of one batch through proc the way the Lambda
// handler does, and returns its documents validated and decoded.
func emfBatch(t *testing.T, m *pipeline.EMFMetrics, proc *pipeline.Processor, events ...consumer.SnapshotEvent) []emftest.Doc {
	t.Helper()
	m.Begin()
	var outcomes []consumer.MessageOutcome
	halts := 0
	for _, ev := range events {
		rep, err := proc.Handle(t.Context(), &consumer.Message{ID: "m", Body: ev.Encode()})
		if err != nil {
			halts = 1
		}
		outcomes = append(outcomes, consumer.MessageOutcome{Report: rep, Err: err})
	}
	docs := m.Documents(pipeline.BatchFigures{Records: len(events), FailedRecords: halts, Halts: halts}, outcomes)
	var out []emftest.Doc
	for _, d := range docs {
		b, err := d.Marshal(time.Now())
		require.NoError(t, err)
		doc, err := emftest.Validate(b)
		require.NoError(t, err, "%s", b)
		out = append(out, doc)
	}
	return out
}

func TestEMFMetricsAreEachBatchsOwn(t *testing.T) {
	t.Parallel()
	b := testbed.Setup(t)
	lex, err := enrich.NewLexicon(b.Spec)
	require.NoError(t, err)
	model := &metered{inner: lex, prices: enrich.Prices{InputPerMillion: 0.15, CachedInputPerMillion: 0.075, OutputPerMillion: 0.6}}
	m := pipeline.NewEMFMetrics("Enricher/test", []pipeline.Job{{Spec: b.Spec, Model: model}})
	proc := b.Processor(model, func(o *pipeline.Options) {
		o.ChunkRows, o.BatchRows, o.OnStage = 100, 20, m.ObserveStage
	})
	job := b.Spec.Name

	check := func(docs []emftest.Doc, rows, commits, calls int64) {
		t.Helper()
		require.Len(t, docs, 2, "one document for the job, one for the batch")
		d := docs[0]
		assert.Equal(t, job, d["Job"])
		dirs := d.Directives()
		require.Len(t, dirs, 1)
		assert.Equal(t, "Enricher/test", dirs[0].Namespace)
		assert.Equal(t, [][]string{{"Job"}, {}}, dirs[0].Dimensions)
		var names []string
		for _, md := range dirs[0].Metrics {
			names = append(names, md.Name)
			want := "Count"
			switch md.Name {
			case "CostUSD":
				want = "None"
			case "CommitLatency":
				want = "Milliseconds"
			}
			assert.Equal(t, want, md.Unit, md.Name)
		}
		assert.Equal(t, []string{"RowsOk", "RowsSkipped", "RowsFailed", "RowsInvalidOutput", "Commits", "CommitConflicts",
			"BatchesSubmitted", "ModelRequests", "ModelThrottled", "ModelServerErrors", "PromptTokens", "CompletionTokens",
			"CachedTokens", "BudgetExhausted", "CostUSD", "CommitLatency"}, names)
		assert.Equal(t, float64(rows), d.Value("RowsOk")+d.Value("RowsSkipped")+d.Value("RowsFailed")+d.Value("RowsInvalidOutput"))
		assert.Equal(t, float64(commits), d.Value("Commits"))
		assert.Len(t, d.Values("CommitLatency"), int(commits), "one latency per commit")
		for _, v := range d.Values("CommitLatency") {
			assert.Positive(t, v)
		}
		sent := d.Value("PromptTokens") / 10
		assert.Equal(t, 3*sent, d.Value("CompletionTokens"))
		assert.Equal(t, 4*sent, d.Value("CachedTokens"))
		throttled := float64(calls / 5)
		assert.Equal(t, throttled, d.Value("ModelThrottled"))
		assert.Equal(t, float64(calls)+throttled, d.Value("ModelRequests"))
		want := enrich.Usage{PromptTokens: int64(10 * sent), CachedTokens: int64(4 * sent), CompletionTokens: int64(3 * sent), Prices: model.prices}
		assert.InDelta(t, want.Cost(), d.Value("CostUSD"), 1e-12)
		assert.Zero(t, d.Value("BudgetExhausted"))

		bd := docs[1]
		assert.NotContains(t, bd, "Job")
		require.Len(t, bd.Directives(), 1)
		assert.Equal(t, [][]string{{}}, bd.Directives()[0].Dimensions)
		assert.Equal(t, 1.0, bd.Value("Records"))
		assert.Zero(t, bd.Value("Halts"))
	}

	// 300 rows in 15 requests of 20, committed in 3 chunks.
	s1 := b.AppendPosts(300)
	check(emfBatch(t, m, proc, b.Event(s1)), 300, 3, 15)
	require.Equal(t, int64(15), model.calls.Load())

	// The next batch counts its own usage only, though the model's
	// counters go on (a warm Lambda serves many batches).
	s2 := b.AppendPosts(100)
	check(emfBatch(t, m, proc, b.Event(s2)), 100, 1, 5)

	// A redelivered event: the job ran and did nothing.
	docs := emfBatch(t, m, proc, b.Event(s2))
	require.Len(t, docs, 2)
	assert.Zero(t, docs[0].Value("RowsOk")+docs[0].Value("Commits")+docs[0].Value("ModelRequests")+docs[0].Value("PromptTokens"))
	assert.NotContains(t, docs[0], "CommitLatency", "no commit, no latency")

	// The budget runs out: the job's document says so.
	model.budgetCalls = model.calls.Load() + 1
	s3 := b.AppendPosts(100)
	docs = emfBatch(t, m, proc, b.Event(s3))
	require.Len(t, docs, 2)
	assert.Equal(t, 1.0, docs[0].Value("BudgetExhausted"))
	assert.Equal(t, 1.0, docs[1].Value("Halts"))
	assert.Positive(t, model.refused.Load())

	// A batch in which no job ran (a poison message): the batch's document only.
	m.Begin()
	only := m.Documents(pipeline.BatchFigures{Records: 1, DeadLettered: 1}, []consumer.MessageOutcome{{Action: consumer.ActionDeadLettered}})
	require.Len(t, only, 1)
	assert.Equal(t, [][]string{{}}, only[0].Dimensions)
}

// TestEMFMetricsSplitLongLatencyLists: past emf.MaxValues commits in a
// batch, the further latencies go to documents of their own.
func TestEMFMetricsSplitLongLatencyLists(t *testing.T) {
	t.Parallel()
	b := testbed.Setup(t)
	m := pipeline.NewEMFMetrics("", []pipeline.Job{{Spec: b.Spec}})
	for range 2*emf.MaxValues + 5 {
		m.ObserveStage(b.Spec.Name, "commit", 3*time.Millisecond)
		m.ObserveStage(b.Spec.Name, "enrich", time.Second)
	}
	docs := m.Documents(pipeline.BatchFigures{}, nil)
	require.Len(t, docs, 4)
	var all int
	for i, d := range docs[:3] {
		assert.Equal(t, pipeline.DefaultEMFNamespace, d.Namespace)
		assert.Equal(t, b.Spec.Name, d.Properties["Job"])
		var lat []float64
		for _, mt := range d.Metrics {
			if mt.Name == "CommitLatency" {
				lat = mt.Values
			}
		}
		assert.Equal(t, 3.0, lat[0])
		all += len(lat)
		if i > 0 {
			assert.Len(t, d.Metrics, 1, "a continuation holds CommitLatency only, so nothing is counted twice")
		}
		_, err := d.Marshal(time.Now())
		require.NoError(t, err)
	}
	assert.Equal(t, 2*emf.MaxValues+5, all)
}
