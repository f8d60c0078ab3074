package pipeline_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/fakellm"
	"github.com/socialdata/enricher/internal/testbed"
)

func TestMetricsCountOutcomesRowsAndStages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(300)
	reg := prometheus.NewRegistry()
	m := pipeline.NewMetrics(reg)
	q := consumer.NewMemQueue()
	q.Publish(b.Event(s1).Encode())
	q.Publish([]byte("junk"))
	q.Close()
	p := b.Processor(nil, func(o *pipeline.Options) { o.OnStage = m.ObserveStage })
	c := &consumer.Consumer{Source: q, Handler: p, Logger: quietLogger(), OnOutcome: m.Observe}
	require.NoError(t, c.Run(t.Context()))

	okRows := counterValue(t, reg, "enricher_rows_total", map[string]string{"job": "sentiment", "status": "ok"})
	skipped := counterValue(t, reg, "enricher_rows_total", map[string]string{"job": "sentiment", "status": "skipped"})
	assert.Equal(t, 300.0, okRows+skipped)
	assert.Positive(t, skipped)
	expected := `
# HELP enricher_dlq_moves_total Messages moved to the dead-letter queue, by reason.
# TYPE enricher_dlq_moves_total counter
enricher_dlq_moves_total{reason="bad_message"} 1
# HELP enricher_messages_total Messages settled, by action (acked, released, dead_lettered).
# TYPE enricher_messages_total counter
enricher_messages_total{action="acked"} 1
enricher_messages_total{action="dead_lettered"} 1
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(expected), "enricher_messages_total", "enricher_dlq_moves_total"))
	n, err := testutil.GatherAndCount(reg, "enricher_stage_duration_seconds")
	require.NoError(t, err)
	assert.Equal(t, 3, n, "plan, enrich and commit histograms")
}

// counterValue is the value of the counter name with the given labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, metric := range mf.GetMetric() {
			for _, lp := range metric.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return metric.GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s%v", name, labels)
	return 0
}

func TestModelCollectorExportsChatUsage(t *testing.T) {
	t.Parallel()
	llm := &fakellm.Server{}
	llm.StartTB(t)
	spec, err := enrich.LoadSpecWith(testbed.SentimentSpec(), enrich.Overrides{
		Provider: enrich.ProviderOpenAI, BaseURL: llm.URL() + "/v1", RowsPerRequest: 4,
	})
	require.NoError(t, err)
	spec.Model.Prices = enrich.Prices{InputPerMillion: 1, OutputPerMillion: 2}
	chat, err := enrich.NewChat(spec, enrich.ChatOptions{Logger: quietLogger()})
	require.NoError(t, err)
	t.Cleanup(chat.Close)
	items := []enrich.Item{{ID: 0, Text: "a"}, {ID: 1, Text: "b"}, {ID: 2, Text: "a"}, {ID: 3, Text: "c"}, {ID: 4, Text: "d"}, {ID: 5, Text: "e"}}
	require.NoError(t, chat.Annotate(t.Context(), items, make([]enrich.Answer, len(items))))

	reg := prometheus.NewRegistry()
	reg.MustRegister(pipeline.NewModelCollector([]pipeline.Job{{Spec: spec, Model: chat}}))
	job := map[string]string{"job": "sentiment"}
	assert.Equal(t, 2.0, counterValue(t, reg, "enricher_model_requests_total", job), "5 distinct texts in requests of 4")
	assert.Equal(t, 5.0, counterValue(t, reg, "enricher_model_rows_sent_total", job))
	assert.Equal(t, 1.0, counterValue(t, reg, "enricher_model_dedup_hits_total", job))
	u := chat.Usage()
	assert.Equal(t, float64(u.PromptTokens), counterValue(t, reg, "enricher_model_tokens_total", map[string]string{"job": "sentiment", "kind": "prompt"}))
	assert.Equal(t, float64(u.CachedTokens), counterValue(t, reg, "enricher_model_tokens_total", map[string]string{"job": "sentiment", "kind": "cached"}))
	assert.InDelta(t, float64(u.PromptTokens)/1e6+2*float64(u.CompletionTokens)/1e6, counterValue(t, reg, "enricher_model_cost_usd_total", job), 1e-12)
	assert.Positive(t, u.PromptTokens)
}
