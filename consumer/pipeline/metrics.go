package pipeline

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/enrich"
)

// Metrics are the consumer's Prometheus metrics. Wire Observe to
// Consumer.OnOutcome and ObserveStage to Options.OnStage.
type Metrics struct {
	messages  *prometheus.CounterVec
	rows      *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	stages    *prometheus.HistogramVec
	dlq       *prometheus.CounterVec
	conflicts *prometheus.CounterVec
	commits   *prometheus.CounterVec
	lag       *prometheus.HistogramVec
	outcomes  *prometheus.CounterVec
	batches   *prometheus.CounterVec
}

// NewMetrics registers the consumer's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_messages_total", Help: "Messages settled, by action (acked, released, dead_lettered).",
		}, []string{"action"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_rows_total", Help: "Rows written to target tables, by job and status.",
		}, []string{"job", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "enricher_message_duration_seconds", Help: "Time from receiving a message to settling it, by action.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12),
		}, []string{"action"}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "enricher_stage_duration_seconds", Help: "Stage step latency: plan per event, enrich per batch, commit per chunk.",
			Buckets: prometheus.ExponentialBuckets(0.001, 3, 12),
		}, []string{"job", "stage"}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_dlq_moves_total", Help: "Messages moved to the dead-letter queue, by reason.",
		}, []string{"reason"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_commit_conflicts_total", Help: "Target commits lost to a concurrent writer (then re-planned), by job.",
		}, []string{"job"}),
		commits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enricher_commits_total", Help: "Chunks committed to target tables, by job.",
		}, []string{"job"}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "enricher_publish_to_commit_seconds", Help: "Time from an event's published_at to its last commit, by job.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2.5, 12),
		}, []string{"job"}),
	}
	m.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enricher_job_outcomes_total", Help: "Jobs run for an event, by job and outcome (enriched, up_to_date, stale, failed).",
	}, []string{"job", "outcome"})
	m.batches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "enricher_batches_total", Help: "Batch API batches, by job and event: submitted (with an event), committed (collected and written), retried (sent again for rows left unanswered).",
	}, []string{"job", "event"})
	reg.MustRegister(m.messages, m.rows, m.duration, m.stages, m.dlq, m.conflicts, m.commits, m.lag, m.outcomes, m.batches)
	return m
}

// Observe records one settled message.
func (m *Metrics) Observe(o consumer.MessageOutcome) {
	m.messages.WithLabelValues(o.Action).Inc()
	m.duration.WithLabelValues(o.Action).Observe(o.Duration.Seconds())
	if o.Action == consumer.ActionDeadLettered {
		m.dlq.WithLabelValues(o.Reason).Inc()
	}
	rep, ok := o.Report.(*Report)
	if !ok {
		return
	}
	for _, r := range rep.Results {
		m.outcomes.WithLabelValues(r.Job, string(r.Outcome)).Inc()
		for status, n := range r.Counts {
			m.rows.WithLabelValues(r.Job, string(status)).Add(float64(n))
		}
		if r.Batches > 0 {
			m.batches.WithLabelValues(r.Job, "submitted").Add(float64(r.Batches))
		}
		m.conflicts.WithLabelValues(r.Job).Add(float64(r.Conflicts))
		m.commits.WithLabelValues(r.Job).Add(float64(r.Commits))
		if rep.Event.PublishedAt != nil && r.Commits > 0 && o.Err == nil {
			m.lag.WithLabelValues(r.Job).Observe(time.Since(*rep.Event.PublishedAt).Seconds())
		}
	}
}

// ObserveBatch records what a collection did with one batch: the rows a
// committed batch wrote count in enricher_rows_total like any others.
func (m *Metrics) ObserveBatch(r BatchReport) {
	switch r.State {
	case BatchCommitted:
		m.batches.WithLabelValues(r.Job, "committed").Inc()
		m.commits.WithLabelValues(r.Job).Inc()
		for status, n := range r.Counts {
			m.rows.WithLabelValues(r.Job, string(status)).Add(float64(n))
		}
	case BatchRetried:
		m.batches.WithLabelValues(r.Job, "retried").Inc()
	}
}

// ObserveStage records one stage step.
func (m *Metrics) ObserveStage(job, stage string, d time.Duration) {
	m.stages.WithLabelValues(job, stage).Observe(d.Seconds())
}

// ModelCollector exports the usage of the jobs' paid models (see
// enrich.UsageReporter), read at each scrape: requests, retries, 429s,
// server errors, tokens by kind, rows sent, rows answered from identical
// texts and the estimated cost. Tokens per row is
// enricher_model_tokens_total{kind=~"prompt|completion"} /
// enricher_model_rows_sent_total, the cost per million posts
// enricher_model_cost_usd_total / enricher_model_rows_sent_total * 1e6.
type ModelCollector struct {
	jobs []Job
}

// NewModelCollector collects the usage of every job whose model reports it.
func NewModelCollector(jobs []Job) *ModelCollector { return &ModelCollector{jobs: jobs} }

var (
	descModelRequests = prometheus.NewDesc("enricher_model_requests_total", "HTTP requests sent to the model, retries included, by job.", []string{"job"}, nil)
	descModelRetries  = prometheus.NewDesc("enricher_model_retries_total", "Model requests that retried a failed attempt, by job.", []string{"job"}, nil)
	descModelThrottle = prometheus.NewDesc("enricher_model_throttled_total", "Model answers with HTTP 429, by job.", []string{"job"}, nil)
	descModelErrors   = prometheus.NewDesc("enricher_model_server_errors_total", "Model answers with 5xx, timeouts and network errors, by job.", []string{"job"}, nil)
	descModelSplits   = prometheus.NewDesc("enricher_model_splits_total", "Batches asked again in smaller pieces after a partial or unusable answer, by job.", []string{"job"}, nil)
	descModelTokens   = prometheus.NewDesc("enricher_model_tokens_total", "Tokens the model server reported, synchronous and Batch API, by job and kind (prompt, completion, cached: the part of prompt read from the provider's prompt cache).", []string{"job", "kind"}, nil)
	descModelRows     = prometheus.NewDesc("enricher_model_rows_sent_total", "Distinct rows sent to the model, by job.", []string{"job"}, nil)
	descModelDedup    = prometheus.NewDesc("enricher_model_dedup_hits_total", "Rows answered from an identical text already asked in this process, by job.", []string{"job"}, nil)
	descModelCost     = prometheus.NewDesc("enricher_model_cost_usd_total", "Estimated model cost in US dollars at the job spec's prices (cached prompt tokens at the cached-input price, Batch API tokens at half), by job.", []string{"job"}, nil)
)

// Describe implements prometheus.Collector.
func (c *ModelCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descModelRequests, descModelRetries, descModelThrottle, descModelErrors, descModelSplits, descModelTokens, descModelRows, descModelDedup, descModelCost} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *ModelCollector) Collect(ch chan<- prometheus.Metric) {
	for _, j := range c.jobs {
		r, ok := j.Model.(enrich.UsageReporter)
		if !ok {
			continue
		}
		u, job := r.Usage(), j.Spec.Name
		counter := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append([]string{job}, labels...)...)
		}
		counter(descModelRequests, float64(u.Requests))
		counter(descModelRetries, float64(u.Retries))
		counter(descModelThrottle, float64(u.Throttled))
		counter(descModelErrors, float64(u.ServerErrors))
		counter(descModelSplits, float64(u.Splits))
		counter(descModelTokens, float64(u.PromptTokens+u.BatchPromptTokens), "prompt")
		counter(descModelTokens, float64(u.CompletionTokens+u.BatchCompletionTokens), "completion")
		counter(descModelTokens, float64(u.CachedTokens+u.BatchCachedTokens), "cached")
		counter(descModelRows, float64(u.RowsSent))
		counter(descModelDedup, float64(u.DedupHits))
		counter(descModelCost, u.Cost())
	}
}
