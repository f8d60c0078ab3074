package pipeline

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go/table"
	"github.com/sethvargo/go-retry"
	"golang.org/x/sync/errgroup"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

// Job is a job spec with the model that serves it.
type Job struct {
	Spec  *enrich.Spec
	Model enrich.Model
}

// Options tune the pipeline. Zero values take the defaults.
type Options struct {
	// BatchRows caps the rows of one Arrow batch read from the source
	// (default 8192). Memory in flight is about BatchRows x (2 x Workers + 2).
	BatchRows int
	// ChunkRows is how many source rows go into one target commit (default
	// 250,000), whether they come from several data files or from part of
	// one. A crash loses at most the chunk in flight.
	ChunkRows int64
	// ChunkBytes, when positive, also ends a chunk once it holds about this
	// many bytes of source data (Parquet, as stored: a row counts its data
	// file's size over its row count).
	ChunkBytes int64
	// Workers is how many batches are enriched at once (default GOMAXPROCS).
	Workers int
	// ReadConcurrency is how many data files are decoded at once (default 2).
	ReadConcurrency int
	// ConflictRetries is how often a job is re-planned after another writer
	// committed to its target first (default 5).
	ConflictRetries int
	// Allocator receives every Arrow allocation (default: Go allocator).
	Allocator memory.Allocator
	// Logger receives progress and warnings (default: slog.Default()).
	Logger *slog.Logger
	// NoMaintenance turns off what the processor does for a target that
	// lives long: snapshot expiry after each commit and the automatic
	// maintenance of a target once it is due (see MaintainEvery). For
	// measurements and for tables whose owner maintains them.
	NoMaintenance bool
	// MaintainEvery and MaintainMinFiles say when a target is due for
	// automatic maintenance (compaction, manifest rewrite, expiry, orphan
	// cleanup) after an event's commits: at least MaintainMinFiles data
	// files (default 64) and no maintenance for MaintainEvery (default 1h),
	// or four times MaintainMinFiles whenever it was last maintained.
	MaintainEvery    time.Duration
	MaintainMinFiles int64
	// FailureRecordEvery is how often at most a job's failure is
	// recorded on its target (storage.RecordFailure, for status), per
	// job and processor: a commit each, so an outage costs one a minute
	// (default), not one per delivery. Negative: never.
	FailureRecordEvery time.Duration
	// BatchClaimGrace is how long a batch input file recorded without its
	// batch is left to the process that recorded it before another one
	// looks the batch up or creates it (default 5m, and never less than
	// twice the model's batch create timeout; see batch.go).
	BatchClaimGrace time.Duration
	// OnChunk, when set, is called after each chunk is committed, from
	// the writer stage: keep it quick.
	OnChunk func(ChunkCommitted)
	// OnStage, when set, receives how long a stage step took: "plan" (per
	// job and event), "enrich" (per batch, from the enrich workers,
	// concurrently) and "commit" (per chunk: writing its files and
	// committing). Keep it quick.
	OnStage func(job, stage string, d time.Duration)
}

func (o *Options) stage(job, stage string, start time.Time) {
	if o.OnStage != nil {
		o.OnStage(job, stage, time.Since(start))
	}
}

// ChunkCommitted reports one durable commit of a job to its target.
type ChunkCommitted struct {
	Job              string
	Chunk, Chunks    int
	Rows             int64
	Watermark        storage.Cursor
	TargetSnapshotID int64
}

func (o *Options) setDefaults() {
	if o.BatchRows <= 0 {
		o.BatchRows = 8192
	}
	if o.ChunkRows <= 0 {
		o.ChunkRows = 250_000
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.ReadConcurrency <= 0 {
		o.ReadConcurrency = 2
	}
	if o.FailureRecordEvery == 0 {
		o.FailureRecordEvery = time.Minute
	}
	if o.MaintainEvery <= 0 {
		o.MaintainEvery = time.Hour
	}
	if o.MaintainMinFiles <= 0 {
		o.MaintainMinFiles = 64
	}
	if o.BatchClaimGrace <= 0 {
		o.BatchClaimGrace = 5 * time.Minute
	}
	if o.ConflictRetries <= 0 {
		o.ConflictRetries = 5
	}
	if o.Allocator == nil {
		o.Allocator = memory.NewGoAllocator()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Processor runs the plan, read, enrich and write stages for snapshot
// events. It is safe for concurrent use, but two events for the same target
// are best processed one after the other (they would conflict and re-plan).
type Processor struct {
	cat  *storage.Catalog
	jobs []Job
	opts Options
	// reconciled holds the jobs whose target.properties were set on
	// their existing target by this processor (once per process).
	reconciled sync.Map
	// recorded holds when each job's failure was last recorded.
	recordMu sync.Mutex
	recorded map[string]time.Time
}

// NewProcessor returns a processor for jobs on the tables of cat.
func NewProcessor(cat *storage.Catalog, jobs []Job, opts Options) (*Processor, error) {
	if len(jobs) == 0 {
		return nil, errors.New("new processor: no jobs")
	}
	names := map[string]bool{}
	for _, j := range jobs {
		if names[j.Spec.Name] {
			return nil, fmt.Errorf("new processor: two jobs are named %s", j.Spec.Name)
		}
		names[j.Spec.Name] = true
	}
	opts.setDefaults()
	return &Processor{cat: cat, jobs: jobs, opts: opts, recorded: map[string]time.Time{}}, nil
}

// Jobs returns the processor's jobs.
func (p *Processor) Jobs() []Job { return p.jobs }

// Outcome of one job for one event.
type Outcome string

// Job outcomes.
const (
	OutcomeEnriched Outcome = "enriched"
	OutcomeUpToDate Outcome = "up_to_date"
	OutcomeStale    Outcome = "stale"
	// OutcomeBatched: the event's rows went to the Batch API (or queued
	// behind batches pending); collecting them commits them later.
	OutcomeBatched Outcome = "batched"
	// OutcomeFailed: the job did not reach the snapshot (Result.Err).
	OutcomeFailed Outcome = "failed"
)

// Result is what one job did for one event.
type Result struct {
	Job, SourceTable, TargetTable string
	SnapshotID                    int64
	Outcome                       Outcome
	From, To                      storage.Cursor
	Skipped                       []storage.SnapshotInfo
	RowsRead, RowsWritten         int64
	// SkippedRows counts the rows that the passed-over snapshots (not
	// appends: a MERGE, an overwrite upstream) added: at most that many
	// source rows are not enriched by events; `enricher resync` brings
	// them in. Compactions (replace) add none.
	SkippedRows        int64
	Counts             enrich.Counts
	Commits, Conflicts int
	// Batches and BatchRows count the batches submitted to the Batch API
	// for the event and their source rows.
	Batches   int
	BatchRows int64
	// PendingBatches, for an event whose rows are all in batches not yet
	// collected, is how many; To is then where those batches reach.
	PendingBatches int
	Duration       time.Duration
	// Err is why the job did not reach the event's snapshot (nil: it did,
	// or it was there already). The other jobs of the event ran anyway.
	Err error
}

// Process brings every job reading ev.Table (or the job ev.Job names) up
// to ev.SnapshotID. Each job stands on its own watermark, so one failing
// job holds back no other: every job runs, each Result says how its job
// ended, and the error joins the failures of all jobs with the class the
// message needs (see combine). A redelivery of the event is a no-op for the
// jobs that succeeded.
func (p *Processor) Process(ctx context.Context, ev consumer.SnapshotEvent) ([]Result, error) {
	var jobs []Job
	for _, j := range p.jobs {
		if j.Spec.Source.Table == ev.Table && (ev.Job == "" || ev.Job == j.Spec.Name) {
			jobs = append(jobs, j)
		}
	}
	if len(jobs) == 0 {
		if ev.Job != "" && !slices.ContainsFunc(p.jobs, func(j Job) bool { return j.Spec.Name == ev.Job }) {
			return nil, consumer.Permanentf(consumer.ReasonUnknownJob, "no job is named %q (known jobs: %s)", ev.Job, p.jobNames())
		}
		if ev.Job != "" {
			return nil, consumer.Permanentf(consumer.ReasonUnknownJob, "job %s does not read table %s (known jobs: %s)", ev.Job, ev.Table, p.jobNames())
		}
		return nil, consumer.Permanentf(consumer.ReasonUnknownTable, "no job reads table %s (known jobs: %s)", ev.Table, p.jobNames())
	}
	results := make([]Result, 0, len(jobs))
	var errs []error
	for _, j := range jobs {
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("job %s, table %s, snapshot %d: not started: %w", j.Spec.Name, ev.Table, ev.SnapshotID, ctx.Err()))
			continue
		}
		r, err := p.processJob(ctx, j, ev)
		if err != nil {
			r.Err = Classify(fmt.Errorf("job %s, table %s, snapshot %d: %w", j.Spec.Name, ev.Table, ev.SnapshotID, err))
			r.Outcome = OutcomeFailed
			errs = append(errs, r.Err)
			p.recordFailure(ctx, j, ev, r.Err)
			if len(jobs) > 1 {
				p.opts.Logger.Warn("job failed; the event's other jobs go on", "job", j.Spec.Name, "table", ev.Table,
					"snapshot", ev.SnapshotID, "class", classOf(r.Err), "err", r.Err)
			}
		}
		results = append(results, r)
	}
	return results, combine(errs)
}

// combine joins the failures of an event's jobs into one error whose class
// is what the message needs: a halt if any job halts (every message would
// fail alike); else a retry if any job may pass later (a RetryAfter with
// the longest wait when any job knows one, so that the message does not
// come back before it), since the redelivery is a no-op for the jobs that
// are done; else, when every failure is permanent, a permanent error with
// the first job's reason, to dead-letter the message.
func combine(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	if len(errs) == 1 {
		return errs[0]
	}
	joined := errors.Join(errs...)
	worst, wait, reason := consumer.ClassPermanent, time.Duration(0), ""
	var passing []error // the failures that may pass later
	for _, err := range errs {
		c, w := consumer.Classify(err)
		switch c {
		case consumer.ClassHalt:
			return consumer.Halt(joined)
		case consumer.ClassRetryAfter:
			worst = c
			wait = max(wait, w)
			passing = append(passing, err)
		case consumer.ClassPermanent:
			if reason == "" {
				reason, _ = consumer.IsPermanent(err)
			}
		default:
			worst = consumer.ClassRetry
			passing = append(passing, err)
		}
	}
	switch {
	case wait > 0:
		// A job knows how long its failure lasts: the message must not come
		// back sooner, whatever the others' backoff.
		return consumer.RetryAfter(wait, &jobErrors{all: joined, passing: passing})
	case worst != consumer.ClassPermanent:
		return &jobErrors{all: joined, passing: passing}
	}
	return consumer.Permanent(reason, joined)
}

// jobErrors are the failures of several jobs of one event when some may
// pass later: its text names them all, but only the passing ones are in
// its chain, so that consumer.Classify does not read a job's permanent
// failure as the message's, while errors.Is still finds a cancellation.
type jobErrors struct {
	all     error
	passing []error
}

func (e *jobErrors) Error() string   { return e.all.Error() }
func (e *jobErrors) Unwrap() []error { return e.passing }

// recordFailure writes job j's failure of ev on its target for status,
// at most once per Options.FailureRecordEvery; a shutdown, and an event
// waiting for a resync, are no failure.
// Recording is best effort: when it fails (the catalog may be what
// failed) it says so in the log.
func (p *Processor) recordFailure(ctx context.Context, j Job, ev consumer.SnapshotEvent, err error) {
	if p.opts.FailureRecordEvery < 0 || ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, errResyncInProgress) {
		return
	}
	now := time.Now()
	p.recordMu.Lock()
	if last, ok := p.recorded[j.Spec.Name]; ok && now.Sub(last) < p.opts.FailureRecordEvery {
		p.recordMu.Unlock()
		return
	}
	p.recorded[j.Spec.Name] = now
	p.recordMu.Unlock()
	reason, _ := consumer.IsPermanent(err)
	f := storage.JobFailure{At: now.UTC(), Class: classOf(err), Reason: reason, Error: err.Error(), Snapshot: ev.SnapshotID}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if rerr := p.cat.RecordFailure(rctx, j.Spec.Target.Table, j.Spec.Name, f); rerr != nil {
		p.opts.Logger.Warn("could not record the job's failure on its target (status will not show it)", "job", j.Spec.Name, "err", rerr)
	}
}

func classOf(err error) string {
	c, _ := consumer.Classify(err)
	return c.String()
}

func (p *Processor) jobNames() string {
	var out []string
	for _, j := range p.jobs {
		out = append(out, j.Spec.Name+" (reads "+j.Spec.Source.Table+")")
	}
	return strings.Join(out, ", ")
}

// processJob runs one job, re-planning after commit conflicts.
func (p *Processor) processJob(ctx context.Context, j Job, ev consumer.SnapshotEvent) (Result, error) {
	start := time.Now()
	res := Result{Job: j.Spec.Name, SourceTable: j.Spec.Source.Table, TargetTable: j.Spec.Target.Table,
		SnapshotID: ev.SnapshotID, Counts: enrich.Counts{}}
	first := true
	err := retry.Do(ctx, p.conflictBackoff(), func(ctx context.Context) error {
		err := p.runJob(ctx, j, ev, &res, first)
		first = false
		switch {
		case errors.Is(err, storage.ErrConflict):
			res.Conflicts++
			p.opts.Logger.Warn("target commit conflict, re-planning",
				"job", j.Spec.Name, "target", j.Spec.Target.Table, "attempt", res.Conflicts, "err", err)
			return retry.RetryableError(err)
		case errors.Is(err, iofs.ErrNotExist) && ctx.Err() == nil:
			// A file the loaded metadata named is gone: another process
			// expired snapshots or compacted while this one worked with
			// an older table handle. Re-plan on fresh metadata.
			res.Conflicts++
			p.opts.Logger.Warn("target commit conflict: a table file is gone (maintenance by another process), re-planning",
				"job", j.Spec.Name, "target", j.Spec.Target.Table, "attempt", res.Conflicts, "err", err)
			return retry.RetryableError(err)
		}
		return err
	})
	res.Duration = time.Since(start)
	return res, err
}

func (p *Processor) runJob(ctx context.Context, j Job, ev consumer.SnapshotEvent, res *Result, first bool) error {
	spec := j.Spec
	log := p.opts.Logger.With("job", spec.Name, "table", spec.Source.Table, "snapshot", ev.SnapshotID)
	src, enr, err := p.bind(ctx, j)
	if err != nil {
		return err
	}
	planStart := time.Now()
	tgt, err := p.target(ctx, spec, enr.Schema())
	if err != nil {
		return err
	}
	wm, err := storage.ReadWatermark(tgt, spec.Name, spec.Source.Table)
	if errors.Is(err, storage.ErrWatermarkLost) {
		return consumer.Permanent(consumer.ReasonHistory, err)
	}
	if err != nil {
		return err
	}
	if r, ok, err := storage.ResyncInProgress(tgt, spec.Name); err != nil {
		return err
	} else if ok {
		if ev.SnapshotID == r.SnapshotID || storage.IsAncestor(src.Metadata(), ev.SnapshotID, r.SnapshotID) {
			// The resync in progress brings the job to r's snapshot, past
			// this event: nothing is left for it.
			if res.RowsWritten == 0 {
				res.Outcome = OutcomeStale
			}
			log.Info("a resync in progress covers this event: nothing to do", "resync_to", r.SnapshotID)
			return nil
		}
		return resyncWait(spec.Name, r)
	}
	// With batches pending, the event's rows queue behind them: the
	// watermark moves in order, each batch's rows in the commit that
	// collects it.
	batcher, pending, err := p.batching(j, tgt)
	if err != nil {
		return err
	}
	from := wm.Cursor
	if len(pending) > 0 {
		if pending[0].From != wm.Cursor {
			return fmt.Errorf("job %s: the first pending batch starts at %s, not at the watermark %s: `enricher batches list --job %s` shows them",
				spec.Name, pending[0].From, wm.Cursor, spec.Name)
		}
		from = pending[len(pending)-1].To
	}
	if first {
		res.From = wm.Cursor
	}
	res.To = wm.Cursor
	plan, err := storage.PlanAppends(ctx, src, from, ev.SnapshotID)
	if errors.Is(err, storage.ErrSnapshotNotFound) {
		if stale, herr := expiredEvent(src, from); stale {
			if res.Outcome == "" {
				res.Outcome = OutcomeStale
			}
			log.Info("event's snapshot was expired by the table's maintenance and the watermark is past it: nothing to do", "watermark", wm.Cursor.String())
			return nil
		} else if herr != nil {
			err = herr
		}
	}
	if err := planError(spec, err); err != nil {
		return err
	}
	p.opts.stage(spec.Name, "plan", planStart)
	switch {
	case plan.Stale, plan.UpToDate:
		if res.Outcome == "" {
			res.Outcome = OutcomeStale
			if plan.UpToDate {
				res.Outcome = OutcomeUpToDate
			}
		}
		if len(pending) > 0 {
			// Sent already: the rows are in a batch not yet collected.
			res.PendingBatches = len(pending)
			res.To = from
			log.Info("event's rows are in batches pending: nothing to do", "watermark", wm.Cursor.String(), "batches_reach", from.String(), "pending_batches", len(pending))
			return nil
		}
		log.Info("event is behind or at the watermark: nothing to do", "watermark", wm.Cursor.String(), "stale", plan.Stale)
		return nil
	}
	for _, s := range plan.Skipped() {
		attrs := []any{"skipped_snapshot", s.ID, "operation", s.Operation}
		if s.Operation != string(table.OpReplace) && s.AddedRecords > 0 {
			// A MERGE or an overwrite upstream: rows it added are not
			// enriched by the consumer; resync brings them in by key.
			// added-records also counts the rows a copy-on-write delete
			// or overwrite rewrote unchanged: an upper bound.
			attrs = append(attrs, "added_rows_at_most_not_enriched", s.AddedRecords, "hint", "enricher resync --job "+spec.Name+" --dry-run counts exactly")
		}
		log.Warn("passing over a snapshot that is not an append", attrs...)
		res.Skipped = append(res.Skipped, s)
	}
	res.SkippedRows += plan.SkippedRows()
	if batcher != nil && (len(pending) > 0 || (plan.Rows() > 0 && (spec.Model.BatchAPI == enrich.BatchOn || plan.Rows() >= spec.Model.Batch.MinRows))) {
		res.Outcome = OutcomeBatched
		log.Info("plan (Batch API)", "from", from.String(), "to", plan.To, "files", len(plan.Units), "rows", plan.Rows(), "pending_batches", len(pending))
		return p.submit(ctx, log, j, batcher, src, tgt, pending, plan, ev.SnapshotID, res)
	}
	res.Outcome = OutcomeEnriched
	log.Info("plan", "from", wm.Cursor.String(), "to", plan.To, "files", len(plan.Units), "rows", plan.Rows())
	return p.pipeline(ctx, log, src, tgt, enr, plan, res, lastCommit{})
}

// expiredEvent tells what an event for a snapshot the source does not
// hold means once snapshot expiry has cut the source's history. Expiry
// removes the oldest ancestors first, so an expired snapshot of the
// table is at or before the cut: when the history still reaches the
// cursor, the cursor is past the event's snapshot (stale: its rows are
// written), and when it does not, the event needs a resync like the
// newest one (herr, ErrHistoryExpired). An uncut history says nothing
// (false, nil): the snapshot never was the table's.
func expiredEvent(src *table.Table, from storage.Cursor) (stale bool, herr error) {
	if !errors.Is(storage.CheckHistory(src, storage.Cursor{}), storage.ErrHistoryExpired) {
		return false, nil
	}
	err := storage.CheckHistory(src, from)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, storage.ErrHistoryExpired) {
		return false, err
	}
	return false, nil
}

// planError maps the errors of PlanAppends to the classes an event needs.
func planError(spec *enrich.Spec, err error) error {
	switch {
	case errors.Is(err, storage.ErrHistoryExpired):
		// Reading on would skip the rows of the expired snapshots; starting
		// over would write rows twice. resync catches up by key.
		return consumer.Permanent(consumer.ReasonHistoryExpired,
			fmt.Errorf("%w; run `enricher resync --job %s` to catch up exactly once", err, spec.Name))
	case errors.Is(err, storage.ErrSnapshotNotFound):
		return consumer.Permanent(consumer.ReasonSnapshotNotFound, err)
	case errors.Is(err, storage.ErrNotAncestor):
		return consumer.Permanent(consumer.ReasonHistory, err)
	}
	return err
}

// resyncWaitTime is how long an event waits while a resync of its job
// is in progress before it comes back.
const resyncWaitTime = time.Minute

// resyncWait is the RetryAfter error of an event that comes after the
// snapshot a resync in progress of job catches up to: its rows would be
// written twice if the consumer wrote them now.
func resyncWait(job string, r storage.Resync) error {
	return consumer.RetryAfter(resyncWaitTime, fmt.Errorf("job %s: %w to source snapshot %d since %s (if no resync is running, one was interrupted: run `enricher resync --job %s` again); the event waits",
		job, errResyncInProgress, r.SnapshotID, r.Since.Format(time.RFC3339), job))
}

// errResyncInProgress marks an event that waits for a resync: no failure
// of the job (status shows the resync itself).
var errResyncInProgress = errors.New("a resync is in progress")

// bind loads the job's source table and builds the enricher for its
// schema. A missing table or a schema the job cannot read is permanent.
func (p *Processor) bind(ctx context.Context, j Job) (*table.Table, *enrich.Enricher, error) {
	spec := j.Spec
	src, err := p.cat.LoadTable(ctx, spec.Source.Table)
	if errors.Is(err, storage.ErrTableNotFound) {
		return nil, nil, consumer.Permanent(consumer.ReasonTableNotFound, err)
	}
	if err != nil {
		return nil, nil, err
	}
	in, err := storage.ProjectedSchema(src, spec.Columns())
	if err != nil {
		return nil, nil, consumer.Permanent(consumer.ReasonSchemaMismatch, fmt.Errorf("job %s cannot read table %s: %w", spec.Name, spec.Source.Table, err))
	}
	enr, err := enrich.NewEnricher(spec, j.Model, in, p.opts.Allocator)
	if err != nil {
		var se *enrich.SchemaError
		if errors.As(err, &se) {
			return nil, nil, consumer.Permanent(consumer.ReasonSchemaMismatch, err)
		}
		return nil, nil, err
	}
	return src, enr, nil
}

// conflictBackoff spaces the tries of every loop that commits to a target
// again after a conflict: storage.ConflictBackoff, the one backoff of
// every conflict retry, for ConflictRetries retries.
func (p *Processor) conflictBackoff() retry.Backoff {
	return storage.ConflictBackoff(p.opts.ConflictRetries+1, 0)
}

// target loads the job's target table, creating it with schema when it
// does not exist, and checks that it can take the job's rows.
func (p *Processor) target(ctx context.Context, spec *enrich.Spec, schema *arrow.Schema) (*table.Table, error) {
	tgt, err := p.cat.LoadTable(ctx, spec.Target.Table)
	if errors.Is(err, storage.ErrTableNotFound) {
		// Long-life defaults (bounded metadata), the job's own properties
		// on top.
		props := storage.TargetProperties()
		maps.Copy(props, spec.Target.Properties)
		props["enricher.job"] = spec.Name
		tgt, err = p.cat.CreateTable(ctx, spec.Target.Table, schema, props)
		if err != nil {
			// Another consumer may have created it first.
			if t, lerr := p.cat.LoadTable(ctx, spec.Target.Table); lerr == nil {
				tgt, err = t, nil
			}
		} else {
			p.opts.Logger.Info("created target table", "job", spec.Name, "target", spec.Target.Table)
			p.reconciled.Store(spec.Name, true)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := storage.CheckSchema(tgt, schema); err != nil {
		return nil, consumer.Permanent(consumer.ReasonSchemaMismatch, fmt.Errorf("job %s: %w", spec.Name, err))
	}
	if _, done := p.reconciled.Load(spec.Name); !done && len(spec.Target.Properties) > 0 {
		// An existing target takes the job's target.properties where they
		// differ (never removing any), once per process.
		out, changes, err := p.cat.ReconcileProperties(ctx, spec.Target.Table, spec.Target.Properties)
		if err != nil {
			return nil, fmt.Errorf("job %s: target.properties: %w", spec.Name, err)
		}
		for _, c := range changes {
			p.opts.Logger.Info("target property set", "job", spec.Name, "target", spec.Target.Table, "change", c.String())
		}
		tgt = out
		p.reconciled.Store(spec.Name, true)
	}
	return tgt, nil
}

// expire runs after each commit to a target: it expires the snapshots the
// table's retention no longer keeps (a no-op until a batch of them can
// go) and returns the table to go on with. Its failure is not the
// commit's: it is logged and the next commit tries again.
func (p *Processor) expire(ctx context.Context, log *slog.Logger, tgt *table.Table) *table.Table {
	if p.opts.NoMaintenance {
		return tgt
	}
	r, err := storage.ExpireSnapshots(ctx, tgt, storage.ExpireOptions{})
	switch {
	case err != nil:
		log.Warn("snapshot expiry after the commit failed; the next commit tries again", "err", err)
	case r.Expired > 0:
		log.Info("expired target snapshots", "expired", r.Expired, "held", r.Held)
	}
	if r.Table != nil {
		return r.Table
	}
	return tgt
}

// maintainBurstFiles times MaintainMinFiles data files make a target due
// for maintenance however recently it was maintained.
const maintainBurstFiles = 4

// autoCompactBytes is the data file size automatic maintenance compacts
// to: a table gains a file per 32 MiB of enriched rows, and no run
// rewrites what an earlier run wrote.
const autoCompactBytes = 32 << 20

// maintainIfDue runs the whole maintenance of a target (compaction,
// manifest rewrite, expiry, orphan cleanup) once it is due: it holds at
// least MaintainMinFiles data files and was last maintained more than
// MaintainEvery ago. Its failure is logged, not returned.
func (p *Processor) maintainIfDue(ctx context.Context, log *slog.Logger, tgt *table.Table) {
	if p.opts.NoMaintenance || tgt == nil {
		return
	}
	due, err := storage.MaintenanceDue(tgt, p.opts.MaintainEvery, p.opts.MaintainMinFiles, time.Now())
	if err == nil && !due {
		// At a backfill's pace an hour brings thousands of files: then a
		// target is due at four times the file trigger, whenever it was
		// last maintained (the long run in BENCHMARKS.md, section 7).
		due, err = storage.MaintenanceDue(tgt, 0, maintainBurstFiles*p.opts.MaintainMinFiles, time.Now())
	}
	if err != nil || !due {
		if err != nil {
			log.Warn("cannot tell whether the target is due for maintenance", "err", err)
		}
		return
	}
	name := strings.Join(tgt.Identifier(), ".")
	// Files compaction wrote before (>= 75% of the target size) are left
	// alone, so that an hourly run rewrites the new small files, not the
	// whole table.
	rep, err := p.cat.Maintain(ctx, name, storage.MaintainOptions{TargetFileBytes: autoCompactBytes})
	if err != nil {
		log.Warn("automatic maintenance of the target failed; `enricher maintain` runs it by hand", "target", name, "err", err)
		return
	}
	log.Info("target maintained", "target", name, "data_files_before", rep.Before.DataFiles, "data_files_after", rep.After.DataFiles,
		"snapshots_expired", rep.SnapshotsExpired, "orphan_files", rep.OrphanFiles, "took_ms", rep.Took.Milliseconds())
}

// chunk is a run of source rows committed together: the next rows of the
// plan, in plan order.
type chunk struct {
	rows  int64
	after storage.Cursor
}

// chunks cuts a plan into commits of at most chunkRows rows and, when
// chunkBytes is set, about chunkBytes bytes of source data (a row counts
// its data file's size over its row count). A chunk may end inside a data
// file; its cursor then records the rows done in that file. A plan without
// units still yields one (empty) chunk so that the watermark moves past
// snapshots that added nothing to read.
func chunks(plan *storage.Plan, chunkRows, chunkBytes int64) []chunk {
	var out []chunk
	var cur chunk
	var curBytes float64
	for _, u := range plan.Units {
		rowBytes := 0.0
		if n := u.Task.File.Count(); n > 0 {
			rowBytes = float64(u.Task.File.FileSizeBytes()) / float64(n)
		}
		for done := int64(0); done < u.Rows; {
			room := chunkRows - cur.rows
			if chunkBytes > 0 && rowBytes > 0 {
				room = min(room, int64((float64(chunkBytes)-curBytes)/rowBytes))
			}
			if room <= 0 && cur.rows > 0 {
				cur.after = u.Within(done)
				out = append(out, cur)
				cur, curBytes = chunk{}, 0
				continue
			}
			take := min(u.Rows-done, max(room, 1))
			done += take
			cur.rows += take
			curBytes += float64(take) * rowBytes
			if cur.rows >= chunkRows || (chunkBytes > 0 && curBytes >= float64(chunkBytes)) {
				cur.after = u.Within(done)
				out = append(out, cur)
				cur, curBytes = chunk{}, 0
			}
		}
	}
	if cur.rows > 0 || len(out) == 0 {
		out = append(out, cur)
	}
	// The last chunk always ends at the plan's end, so that snapshots after
	// the last file are passed over too.
	out[len(out)-1].after = plan.End()
	return out
}

// piece is the part of a batch that goes to one chunk: rows from offset,
// after which ends chunks end (0 or 1, more only for empty chunks).
type piece struct {
	offset, rows int64
	ends         int
}

// cutter cuts the batches of a plan, in order, at the ends of its chunks.
type cutter struct {
	sizes []int64 // rows of each chunk
	i     int     // the chunk being filled
	left  int64   // rows the chunk still takes
}

// errTooManyRows says that the source yielded rows past the plan's last
// chunk.
var errTooManyRows = errors.New("the source yielded more rows than planned")

// newCutter starts at the first chunk; ends counts the chunks that end
// before any row (empty ones: a plan without rows has one).
func newCutter(sizes []int64) (c *cutter, ends int) {
	c = &cutter{sizes: sizes}
	if len(sizes) > 0 {
		c.left = sizes[0]
	}
	return c, c.skipEnded()
}

// skipEnded moves past the chunks that are full and counts them.
func (c *cutter) skipEnded() int {
	n := 0
	for c.i < len(c.sizes) && c.left == 0 {
		n++
		if c.i++; c.i < len(c.sizes) {
			c.left = c.sizes[c.i]
		}
	}
	return n
}

// cut splits the next batch of n rows into the pieces of each chunk.
func (c *cutter) cut(n int64) ([]piece, error) {
	var out []piece
	for off := int64(0); off < n; {
		if c.i == len(c.sizes) {
			return nil, errTooManyRows
		}
		take := min(n-off, c.left)
		c.left -= take
		out = append(out, piece{offset: off, rows: take, ends: c.skipEnded()})
		off += take
	}
	return out, nil
}

// finished reports whether every chunk is full.
func (c *cutter) finished() bool { return c.i == len(c.sizes) }

// bySnapshot splits units into runs of the same snapshot.
func bySnapshot(units []storage.Unit) [][]storage.Unit {
	var out [][]storage.Unit
	for i := 0; i < len(units); {
		j := i + 1
		for j < len(units) && units[j].SnapshotID == units[i].SnapshotID {
			j++
		}
		out = append(out, units[i:j])
		i = j
	}
	return out
}

// slot is one place in the ordered stream from the reader to the writer.
// The reader queues slots in source order; a worker fills one and closes
// done; the writer takes them in order. A slot with end set marks the end
// of a chunk and carries no batch.
type slot struct {
	done   chan struct{}
	out    arrow.RecordBatch
	counts enrich.Counts
	rows   int64
	err    error
	end    bool
}

type workItem struct {
	slot  *slot
	rec   arrow.RecordBatch
	snap  int64
	chunk int // index of the chunk the batch belongs to
}

// pipeline streams the plan through read -> enrich -> write. The reader
// owns (and closes) the order and work channels; workers fill slots; the
// writer commits chunk after chunk and, however it ends, drains and
// releases what is still queued.
func (p *Processor) pipeline(ctx context.Context, log *slog.Logger, src, tgt *table.Table, enr *enrich.Enricher, plan *storage.Plan, res *Result, lc lastCommit) error {
	spec := enr.Spec()
	cs := chunks(plan, p.opts.ChunkRows, p.opts.ChunkBytes)
	if lc.oneChunk {
		cs = chunks(plan, max(1, plan.Rows()), 0)
	}
	g, gctx := errgroup.WithContext(compute.WithAllocator(ctx, p.opts.Allocator))
	// Each chunk's model calls share an enrich.Chunk: a chunk of which
	// the model answered nothing because it throttled every request
	// fails with an *enrich.ThrottledError instead of writing its rows
	// failed. The enrich workers run on ectx, which the first failure
	// cancels, except a throttled chunk's: then every chunk is abandoned
	// instead (no request is sent or retried any more, but those in
	// flight are not cut off: their answers are paid for and go to the
	// model's cache for the retry).
	scopes := make([]*enrich.Chunk, len(cs))
	for i := range scopes {
		scopes[i] = enrich.NewChunk()
	}
	ectx, cancelEnrich := context.WithCancelCause(compute.WithAllocator(ctx, p.opts.Allocator))
	defer cancelEnrich(nil)
	defer context.AfterFunc(gctx, func() {
		if cause := context.Cause(gctx); errors.Is(cause, enrich.ErrThrottled) {
			for _, sc := range scopes {
				sc.Abandon()
			}
		} else {
			cancelEnrich(cause)
		}
	})()
	// order is how far reading and enriching may run ahead of writing.
	order := make(chan *slot, 2*p.opts.Workers)
	work := make(chan workItem)
	closed := make(chan struct{})
	close(closed)

	g.Go(func() error { // reader
		defer close(order)
		defer close(work)
		// send queues one batch of chunk ci (owned by the callee from
		// here on).
		ci := 0
		send := func(rec arrow.RecordBatch, snap int64) error {
			s := &slot{done: make(chan struct{}), rows: rec.NumRows()}
			select {
			case order <- s:
			case <-gctx.Done():
				rec.Release()
				return gctx.Err()
			}
			select {
			case work <- workItem{slot: s, rec: rec, snap: snap, chunk: ci}:
				return nil
			case <-gctx.Done():
				rec.Release()
				s.err = gctx.Err()
				close(s.done)
				return gctx.Err()
			}
		}
		// The plan's rows stream in order, each file read once; the end of
		// a chunk may fall inside a batch, which is then cut in pieces.
		endChunks := func(n int) error {
			for range n {
				select {
				case order <- &slot{done: closed, end: true}:
					ci++
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		}
		sizes := make([]int64, len(cs))
		for i, c := range cs {
			sizes[i] = c.rows
		}
		cut, ends := newCutter(sizes)
		if err := endChunks(ends); err != nil {
			return err
		}
		ropts := storage.ReadOptions{BatchRows: p.opts.BatchRows, Concurrency: p.opts.ReadConcurrency}
		for _, run := range bySnapshot(plan.Units) {
			for rec, err := range storage.ReadUnits(gctx, src, spec.Columns(), run, ropts) {
				if err != nil {
					return err
				}
				pieces, err := cut.cut(rec.NumRows())
				if err != nil {
					rec.Release()
					return fmt.Errorf("table %s: %w (%d planned)", spec.Source.Table, err, plan.Rows())
				}
				for _, pc := range pieces {
					piece := rec
					if pc.rows < rec.NumRows() {
						piece = rec.NewSlice(pc.offset, pc.offset+pc.rows)
					} else {
						rec.Retain() // piece and rec are the same batch
					}
					if err := send(piece, run[0].SnapshotID); err != nil {
						rec.Release()
						return err
					}
					if err := endChunks(pc.ends); err != nil {
						rec.Release()
						return err
					}
				}
				rec.Release()
			}
		}
		if !cut.finished() {
			return fmt.Errorf("table %s: the source yielded fewer rows than planned (%d)", spec.Source.Table, plan.Rows())
		}
		return nil
	})

	for range p.opts.Workers {
		g.Go(func() error {
			for w := range work {
				start := time.Now()
				out, counts, err := enr.Enrich(enrich.WithChunk(ectx, scopes[w.chunk]), w.rec, w.snap)
				p.opts.stage(spec.Name, "enrich", start)
				w.rec.Release()
				w.slot.out, w.slot.counts, w.slot.err = out, counts, err
				close(w.slot.done)
				switch {
				case errors.Is(err, enrich.ErrThrottled):
					// The chunk will not be written, nor any after it;
					// the chunks before it go on, and the writer, which
					// commits them in order, fails at this batch.
					for _, sc := range scopes[w.chunk+1:] {
						sc.Abandon()
					}
				case errors.Is(err, enrich.ErrChunkAbandoned):
					// A chunk after a throttled one: the writer fails
					// before it.
				case err != nil:
					return err
				}
			}
			return nil
		})
	}

	var last *table.Table // the target after the writer's last commit
	g.Go(func() error {   // writer
		defer func() { last = tgt }()
		from := plan.Start // where the next chunk starts
		for i, c := range cs {
			counts := enrich.Counts{}
			var read int64
			var failed error // the error of a batch of the chunk
			batches := func(yield func(arrow.RecordBatch, error) bool) {
				for {
					var s *slot
					select {
					case s = <-order:
					case <-gctx.Done():
						yield(nil, gctx.Err())
						return
					}
					if s == nil {
						yield(nil, errors.New("reader stopped before the end of a chunk"))
						return
					}
					<-s.done // workers always close it, also on cancellation
					switch {
					case s.end:
						return
					case s.err != nil:
						failed = s.err
						yield(nil, s.err)
						return
					}
					counts.Add(s.counts)
					read += s.rows
					if !yield(s.out, nil) {
						return
					}
				}
			}
			commit := &storage.Commit{Job: spec.Name, SourceTable: spec.Source.Table, SpecVersion: spec.Version,
				After: c.after, Schema: enr.Schema(), Batches: batches}
			last := i == len(cs)-1 && lc.props != nil
			if last {
				var perr error
				if commit.SetProps, commit.RemoveProps, perr = lc.props(tgt); perr != nil {
					return perr
				}
			}
			start := time.Now()
			next, written, err := storage.AppendChunk(gctx, tgt, commit)
			if ce := (*storage.ConflictError)(nil); errors.As(err, &ce) {
				var props func(*table.Table) (map[string]string, []string, error)
				if last {
					props = lc.props
				}
				next, err = p.settleConflict(gctx, log, spec, tgt, from, commit, ce, res, props)
				written = ce.Rows
			}
			if err != nil && failed != nil {
				// Not the commit's fault: the chunk's batch failed.
				err = failed
			}
			if errors.Is(err, enrich.ErrThrottled) {
				log.Warn("chunk not committed: the model throttled every request of it and answered none; the event comes back",
					"chunk", i+1, "chunks", len(cs), "rows", c.rows, "watermark", from.String(), "err", err)
			}
			if err != nil {
				return err
			}
			p.opts.stage(spec.Name, "commit", start)
			tgt = p.expire(gctx, log, next)
			res.Commits++
			res.RowsRead += read
			res.RowsWritten += written
			res.Counts.Add(counts)
			res.To = c.after
			from = c.after
			// counts (rows per status) feed the run service's metric
			// filters (internal/metricnames.RunFilters).
			log.Info("chunk committed", "chunk", i+1, "chunks", len(cs), "rows", written, "counts", counts,
				"watermark", c.after.String(), "target_snapshot", snapshotID(tgt))
			if p.opts.OnChunk != nil {
				p.opts.OnChunk(ChunkCommitted{Job: spec.Name, Chunk: i + 1, Chunks: len(cs), Rows: written,
					Watermark: c.after, TargetSnapshotID: snapshotID(tgt)})
			}
		}
		return nil
	})
	err := g.Wait()
	// However the stages ended, the reader has closed order and every
	// queued slot is (or will be) filled: release what was not written.
	// Draining here, after Wait, lets the first error cancel the reader
	// and the workers at once instead of reading on to the end.
	for s := range order {
		<-s.done
		if s.out != nil {
			s.out.Release()
		}
	}
	if err == nil {
		p.maintainIfDue(ctx, log, last)
	}
	return err
}

// lastCommit is what the last commit of a pipeline carries besides its
// rows and watermark.
type lastCommit struct {
	// oneChunk commits the whole plan at once (a collected batch: its
	// rows and its removal from the pending list are one commit).
	oneChunk bool
	// props, when set, gives the table property changes of the last
	// commit, from the target it is committed to: called again on the
	// reloaded target when the commit lost a conflict and is made again,
	// so that what another writer recorded meanwhile (a batch submitted
	// while one is collected) is kept.
	props func(tgt *table.Table) (set map[string]string, remove []string, err error)
}

// errDropped says that a chunk whose commit lost a conflict is not needed
// any more: another consumer committed its rows.
var errDropped = errors.New("another consumer committed the chunk's rows")

// settleConflict decides what becomes of a chunk whose commit lost to
// another writer. It reloads the target and re-reads the watermark. If the
// watermark is still where the chunk starts, the other writer was not this
// job (another job on the same table, a replay): the chunk's data files
// are committed again with its watermark, with backoff, and nothing is
// enriched twice. Otherwise another consumer committed these rows: the
// chunk's files are deleted and the conflict is returned, so that the job
// re-plans from the new watermark.
func (p *Processor) settleConflict(ctx context.Context, log *slog.Logger, spec *enrich.Spec, stale *table.Table,
	from storage.Cursor, commit *storage.Commit, ce *storage.ConflictError, res *Result,
	props func(*table.Table) (map[string]string, []string, error)) (*table.Table, error) {
	if len(ce.Files) == 0 {
		return nil, ce // nothing to keep (or the files could not be listed): re-plan
	}
	attempts := 0
	var out *table.Table
	err := retry.Do(ctx, p.conflictBackoff(), func(ctx context.Context) error {
		attempts++
		tgt, err := p.cat.LoadTable(ctx, spec.Target.Table)
		if err != nil {
			return err
		}
		wm, err := storage.ReadWatermark(tgt, spec.Name, spec.Source.Table)
		if err != nil {
			return err
		}
		if _, resyncing, err := storage.ResyncInProgress(tgt, spec.Name); err != nil {
			return err
		} else if resyncing {
			// Not "target commit conflict...": processJob logs the
			// conflict it re-plans after, and the CommitConflicts metric
			// filter counts those lines once each (Result.Conflicts).
			log.Warn("chunk dropped after a target commit conflict: a resync of the job is in progress",
				"chunk_from", from.String(), "files", len(ce.Files))
			return errDropped
		}
		if wm.Cursor != from {
			log.Warn("chunk dropped after a target commit conflict: another consumer committed these rows",
				"chunk_from", from.String(), "watermark", wm.Cursor.String(), "files", len(ce.Files))
			return errDropped
		}
		if props != nil {
			if commit.SetProps, commit.RemoveProps, err = props(tgt); err != nil {
				return err
			}
		}
		// One conflict settled, one line (the CommitConflicts metric
		// filter counts the lines): counted here, whatever comes of it.
		res.Conflicts++
		log.Warn("target commit conflict with another writer: committing the chunk's files again",
			"chunk_from", from.String(), "files", len(ce.Files), "attempt", attempts)
		out, err = storage.CommitFiles(ctx, tgt, commit, ce.Files, ce.Rows)
		if errors.Is(err, storage.ErrConflict) {
			return retry.RetryableError(err)
		}
		return err
	})
	if err == nil {
		return out, nil
	}
	// processJob counts (and logs) the conflict it re-plans after.
	if errors.Is(err, errDropped) || errors.Is(err, storage.ErrConflict) {
		// No snapshot references the files (the catalog refused every
		// commit of them): delete them now rather than leave orphans.
		if rerr := storage.RemoveFiles(context.WithoutCancel(ctx), stale, ce.Files); rerr != nil {
			log.Warn("could not delete the data files of a dropped chunk: `enricher orphans` lists them", "err", rerr)
		}
		return nil, ce
	}
	return nil, err
}

func snapshotID(t *table.Table) int64 {
	if s := t.CurrentSnapshot(); s != nil {
		return s.SnapshotID
	}
	return 0
}
