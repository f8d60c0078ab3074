package pipeline

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/emf"
	mn "github.com/socialdata/enricher/internal/metricnames"
)

// DefaultEMFNamespace is the CloudWatch namespace of the EMF metrics when
// none is configured.
const DefaultEMFNamespace = mn.DefaultNamespace

// BatchFigures are the figures of one batch of messages (a Lambda
// invocation): records received, records handed back, records sent to the
// dead-letter queue, and 1 when a halt stopped the batch.
type BatchFigures struct {
	Records, FailedRecords, DeadLettered, Halts int
}

// EMFMetrics builds the CloudWatch Embedded Metric Format documents of
// one batch of messages (the Lambda handler's): one per job that ran in
// the batch, with the metrics per Job and without dimension, and one for
// the batch, without dimension. Call Begin as the batch starts (the model
// usage figures are what the jobs' models did since), wire ObserveStage to
// Options.OnStage (commit latencies), and call Documents at its end.
// Batches must not overlap.
type EMFMetrics struct {
	namespace string
	jobs      []Job

	mu      sync.Mutex
	before  map[string]enrich.Usage // job -> its model's usage at Begin
	latency map[string][]float64    // job -> milliseconds per commit since Begin
}

// NewEMFMetrics builds the documents of jobs in namespace (default
// DefaultEMFNamespace).
func NewEMFMetrics(namespace string, jobs []Job) *EMFMetrics {
	if namespace == "" {
		namespace = DefaultEMFNamespace
	}
	m := &EMFMetrics{namespace: namespace, jobs: jobs}
	m.Begin()
	return m
}

// Namespace is the documents' namespace.
func (m *EMFMetrics) Namespace() string { return m.namespace }

// Begin starts a batch: it notes each job's model usage and forgets the
// commit latencies seen so far.
func (m *EMFMetrics) Begin() {
	before := map[string]enrich.Usage{}
	for _, j := range m.jobs {
		if r, ok := j.Model.(enrich.UsageReporter); ok {
			before[j.Spec.Name] = r.Usage()
		}
	}
	m.mu.Lock()
	m.before, m.latency = before, map[string][]float64{}
	m.mu.Unlock()
}

// ObserveStage records the latency of each commit.
func (m *EMFMetrics) ObserveStage(job, stage string, d time.Duration) {
	if stage != "commit" {
		return
	}
	m.mu.Lock()
	m.latency[job] = append(m.latency[job], float64(d.Microseconds())/1000)
	m.mu.Unlock()
}

// jobFigures are one job's figures in a batch.
type jobFigures struct {
	counts                      enrich.Counts
	commits, conflicts, batches int
	budget                      bool
}

// Documents are the batch's documents: one per job that ran (a result in
// outcomes' reports, a model that was used, or a commit), in the order
// of the jobs, then the batch's. A job's CommitLatency holds one value per
// commit and is left out when the job committed nothing; past
// emf.MaxValues commits, the rest go to more documents holding only
// CommitLatency.
func (m *EMFMetrics) Documents(b BatchFigures, outcomes []consumer.MessageOutcome) []emf.Document {
	figs := map[string]*jobFigures{}
	fig := func(job string) *jobFigures {
		f := figs[job]
		if f == nil {
			f = &jobFigures{counts: enrich.Counts{}}
			figs[job] = f
		}
		return f
	}
	for _, o := range outcomes {
		rep, ok := o.Report.(*Report)
		if !ok {
			continue
		}
		for _, r := range rep.Results {
			f := fig(r.Job)
			f.counts.Add(r.Counts)
			f.commits += r.Commits
			f.conflicts += r.Conflicts
			f.batches += r.Batches
			f.budget = f.budget || errors.Is(r.Err, enrich.ErrBudgetExhausted)
		}
	}
	m.mu.Lock()
	before, latency := m.before, m.latency
	m.mu.Unlock()
	usage := map[string]enrich.Usage{}
	for _, j := range m.jobs {
		r, ok := j.Model.(enrich.UsageReporter)
		if !ok {
			continue
		}
		d := r.Usage().Sub(before[j.Spec.Name])
		usage[j.Spec.Name] = d
		if d.Requests > 0 || d.Tokens() > 0 {
			fig(j.Spec.Name)
		}
	}
	for job := range latency {
		fig(job)
	}
	names := make([]string, 0, len(figs))
	for _, j := range m.jobs {
		if figs[j.Spec.Name] != nil {
			names = append(names, j.Spec.Name)
		}
	}
	var others []string
	for job := range figs {
		if !slices.Contains(names, job) {
			others = append(others, job)
		}
	}
	slices.Sort(others)

	var docs []emf.Document
	for _, job := range append(names, others...) {
		f, u := figs[job], usage[job]
		count := func(name string, v int64) emf.Metric {
			return emf.Metric{Name: name, Unit: emf.Count, Values: []float64{float64(v)}}
		}
		budget := int64(0)
		if f.budget {
			budget = 1
		}
		metrics := []emf.Metric{
			count(mn.RowsOk, f.counts[enrich.StatusOK]),
			count(mn.RowsSkipped, f.counts[enrich.StatusSkipped]),
			count(mn.RowsFailed, f.counts[enrich.StatusFailed]),
			count(mn.RowsInvalidOutput, f.counts[enrich.StatusInvalidOutput]),
			count(mn.Commits, int64(f.commits)),
			count(mn.CommitConflicts, int64(f.conflicts)),
			count(mn.BatchesSubmitted, int64(f.batches)),
			count(mn.ModelRequests, u.Requests),
			count(mn.ModelThrottled, u.Throttled),
			count(mn.ModelServerErrors, u.ServerErrors),
			count(mn.PromptTokens, u.PromptTokens+u.BatchPromptTokens),
			count(mn.CompletionTokens, u.CompletionTokens+u.BatchCompletionTokens),
			count(mn.CachedTokens, u.CachedTokens+u.BatchCachedTokens),
			count(mn.BudgetExhausted, budget),
			{Name: mn.CostUSD, Unit: emf.None, Values: []float64{max(u.Cost(), 0)}},
		}
		lat := latency[job]
		first := lat[:min(len(lat), emf.MaxValues)]
		if len(first) > 0 {
			metrics = append(metrics, emf.Metric{Name: mn.CommitLatency, Unit: emf.Milliseconds, Values: first})
		}
		docs = append(docs, m.jobDocument(job, metrics))
		for rest := lat[len(first):]; len(rest) > 0; rest = rest[min(len(rest), emf.MaxValues):] {
			docs = append(docs, m.jobDocument(job, []emf.Metric{
				{Name: mn.CommitLatency, Unit: emf.Milliseconds, Values: rest[:min(len(rest), emf.MaxValues)]}}))
		}
	}
	batch := func(name string, v int) emf.Metric {
		return emf.Metric{Name: name, Unit: emf.Count, Values: []float64{float64(v)}}
	}
	docs = append(docs, emf.Document{Namespace: m.namespace, Dimensions: [][]string{{}}, Metrics: []emf.Metric{
		batch(mn.Records, b.Records), batch(mn.FailedRecords, b.FailedRecords),
		batch(mn.DeadLettered, b.DeadLettered), batch(mn.Halts, b.Halts),
	}})
	return docs
}

func (m *EMFMetrics) jobDocument(job string, metrics []emf.Metric) emf.Document {
	return emf.Document{Namespace: m.namespace, Dimensions: [][]string{{mn.Dimension}, {}},
		Properties: map[string]string{mn.Dimension: job}, Metrics: metrics}
}
