package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

var _ consumer.Handler = (*Processor)(nil)

// Report is what one snapshot event did: each job's result.
type Report struct {
	Event   consumer.SnapshotEvent
	Results []Result
}

// LogAttrs implements consumer.Report: the table and snapshot,
// budget_exhausted when a job's token budget stopped it (the run
// service's metric filters count it), then jobs, a group per job (nested,
// so that no job name can stand for another attribute of the line).
func (r *Report) LogAttrs() []slog.Attr {
	attrs := []slog.Attr{slog.String("table", r.Event.Table), slog.Int64("snapshot", r.Event.SnapshotID)}
	if slices.ContainsFunc(r.Results, func(res Result) bool { return errors.Is(res.Err, enrich.ErrBudgetExhausted) }) {
		attrs = append(attrs, slog.Bool("budget_exhausted", true))
	}
	jobs := make([]any, 0, len(r.Results))
	for _, res := range r.Results {
		group := []any{"outcome", string(res.Outcome), "from", res.From.String(),
			"to", res.To.String(), "rows", res.RowsWritten, "commits", res.Commits}
		if res.Conflicts > 0 {
			group = append(group, "conflicts", res.Conflicts)
		}
		if res.Err != nil {
			group = append(group, "err", res.Err.Error())
		}
		jobs = append(jobs, slog.Group(res.Job, group...))
	}
	if len(jobs) > 0 {
		attrs = append(attrs, slog.Group("jobs", jobs...))
	}
	return attrs
}

// Key implements consumer.Handler: the events of one source table are
// handled one after the other. A body that is not an event serializes
// with nothing (it is dead-lettered at once).
func (p *Processor) Key(m *consumer.Message) string {
	if ev, err := consumer.DecodeEvent(m.Body); err == nil {
		return "table:" + ev.Table
	}
	return ""
}

// Handle implements consumer.Handler: it decodes the snapshot event and
// processes it. The error is classified for the consumer (see Classify).
func (p *Processor) Handle(ctx context.Context, m *consumer.Message) (consumer.Report, error) {
	ev, err := consumer.DecodeEvent(m.Body)
	if err != nil {
		return nil, err
	}
	results, err := p.Process(ctx, ev)
	return &Report{Event: ev, Results: results}, Classify(err)
}

// Classify gives an error of the stages its class for the consumer: a
// model that cannot be used as configured, a spent token budget, or a
// target table property its writers cannot use halts the consumer (every
// message would fail alike); a chunk the model throttled entirely
// (enrich.ThrottledError) comes back after the server's Retry-After,
// rounded up to a whole second (queues count visibility in seconds), or
// after the consumer's backoff when the server gave none; errors that
// already have a class keep it; the rest are passing failures. It returns
// nil for nil.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	if c, _ := consumer.Classify(err); c != consumer.ClassRetry {
		return err
	}
	if errors.Is(err, enrich.ErrBudgetExhausted) || errors.Is(err, enrich.ErrModelUnusable) || errors.Is(err, storage.ErrTableProperty) {
		return consumer.Halt(err)
	}
	var te *enrich.ThrottledError
	if errors.As(err, &te) && te.RetryAfter > 0 {
		return consumer.RetryAfter((te.RetryAfter + time.Second - 1).Truncate(time.Second), err)
	}
	return err
}

// BatchSummary tallies the outcomes of a batch of messages for one log
// line: rows written per job and status, commits and commit conflicts
// (the Lambda handler's "lambda batch done" line carries them).
func BatchSummary(outcomes []consumer.MessageOutcome) []slog.Attr {
	rows := map[string]int64{}
	var commits, conflicts int
	for _, o := range outcomes {
		rep, ok := o.Report.(*Report)
		if !ok {
			continue
		}
		for _, r := range rep.Results {
			for st, n := range r.Counts {
				rows[r.Job+"/"+string(st)] += n
			}
			commits += r.Commits
			conflicts += r.Conflicts
		}
	}
	return []slog.Attr{slog.Any("rows", rows), slog.Int("commits", commits), slog.Int("commit_conflicts", conflicts)}
}
