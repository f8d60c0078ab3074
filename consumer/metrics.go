package consumer

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	reg.MustRegister(m.messages, m.rows, m.duration, m.stages, m.dlq, m.conflicts, m.commits, m.lag)
	return m
}

// Observe records one settled message.
func (m *Metrics) Observe(o MessageOutcome) {
	m.messages.WithLabelValues(o.Action).Inc()
	m.duration.WithLabelValues(o.Action).Observe(o.Duration.Seconds())
	if o.Action == ActionDeadLettered {
		m.dlq.WithLabelValues(o.Reason).Inc()
	}
	for _, r := range o.Results {
		for status, n := range r.Counts {
			m.rows.WithLabelValues(r.Job, string(status)).Add(float64(n))
		}
		m.conflicts.WithLabelValues(r.Job).Add(float64(r.Conflicts))
		m.commits.WithLabelValues(r.Job).Add(float64(r.Commits))
		if o.Event.PublishedAt != nil && r.Commits > 0 && o.Err == nil {
			m.lag.WithLabelValues(r.Job).Observe(time.Since(*o.Event.PublishedAt).Seconds())
		}
	}
}

// ObserveStage records one stage step.
func (m *Metrics) ObserveStage(job, stage string, d time.Duration) {
	m.stages.WithLabelValues(job, stage).Observe(d.Seconds())
}
