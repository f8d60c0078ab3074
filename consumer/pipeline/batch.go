package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/iceberg-go/table"
	"github.com/sethvargo/go-retry"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

// The Batch API path. An event whose rows go to the Batch API does not
// wait for the answers, which can take hours: its rows' range is cut into
// batches of at most model.batch.max_rows rows, each uploaded, recorded in
// the target's pending batch list (storage.PendingBatch, a commit that
// moves no watermark) and created; then the message is let go. Collect
// brings a batch's rows in once it has ended: its answers (and, for rows
// it did not answer, those of a retry) are written in one commit that
// moves the watermark to the batch's end and drops it from the list.
//
// Nothing is paid twice and nothing is lost:
//   - The input file is recorded before the batch is created. A crash
//     between the two leaves a recorded file without a batch ID; whoever
//     finds it later (after Options.BatchClaimGrace) looks the batch up by its input
//     file and adopts it, or claims the creation in a commit (which only
//     one process can win) and creates it.
//   - A batch's answers are read from the provider's files, which outlive
//     a crash: a collection that does not reach its commit is done again.
//   - The rows of a range are read again at collection, in the same order,
//     and cut into the same request lines (enrich.Batcher.PackBatch), whose
//     custom_ids hash their texts: answers map to rows without trusting the
//     order of the output file, and a line made of other texts never
//     matches.

// batching returns the Batcher of a job whose spec asks for the Batch API
// and its pending batches; nil and none for other jobs. A job whose model
// has no Batch API (a test's stand-in) is refused, not run synchronously
// behind the spec's back.
func (p *Processor) batching(j Job, tgt *table.Table) (enrich.Batcher, []storage.PendingBatch, error) {
	pending, err := storage.PendingBatches(tgt, j.Spec.Name)
	if err != nil {
		return nil, nil, err
	}
	if j.Spec.Model.BatchAPI == enrich.BatchOff || j.Spec.Model.BatchAPI == "" {
		if len(pending) > 0 {
			return nil, nil, fmt.Errorf("job %s has %d batches pending but its spec turned batch_api off: collect them first (`enricher batches collect --job %s` with the Batch API on)",
				j.Spec.Name, len(pending), j.Spec.Name)
		}
		return nil, nil, nil
	}
	b, ok := j.Model.(enrich.Batcher)
	if !ok {
		return nil, nil, fmt.Errorf("job %s: model %s has no Batch API", j.Spec.Name, j.Model.Name())
	}
	return b, pending, nil
}

// submit sends the rows of plan (which starts where the pending batches
// end) to the Batch API, one batch per model.batch.max_rows rows.
func (p *Processor) submit(ctx context.Context, log *slog.Logger, j Job, b enrich.Batcher, src, tgt *table.Table,
	pending []storage.PendingBatch, plan *storage.Plan, to int64, res *Result) error {
	spec := j.Spec
	for {
		head := plan.Head(spec.Model.Batch.MaxRows)
		texts, err := p.batchTexts(ctx, src, spec, head)
		if err != nil {
			return err
		}
		pb := storage.PendingBatch{From: head.Start, To: head.End(), Rows: head.Rows(), Texts: len(texts),
			RowsPerRequest: spec.Model.RowsPerRequest, SpecVersion: spec.Version, Created: time.Now().UTC()}
		if len(pending) > 0 {
			pb.From = pending[len(pending)-1].To
		}
		var file string
		if len(texts) > 0 {
			lines := b.PackBatch(texts, pb.RowsPerRequest)
			if file, err = b.UploadBatch(ctx, batchFileName(spec.Name, pb, 1), lines); err != nil {
				return err
			}
			pb.Attempts = []storage.BatchAttempt{{InputFile: file, Lines: len(lines), Texts: len(texts), Claimed: time.Now().UTC()}}
		}
		start := time.Now()
		next, err := p.recordPending(ctx, j, tgt, append(pending, pb))
		if err != nil {
			if file != "" {
				dropUnused(ctx, log, b, file)
			}
			return err
		}
		p.opts.stage(spec.Name, "commit", start)
		log.Info("batch range recorded", "rows", pb.Rows, "from", pb.From.String(), "to", pb.To.String(), "target_snapshot", snapshotID(next))
		tgt = next
		pending = append(pending, pb)
		res.Commits++
		res.Batches++
		res.BatchRows += pb.Rows
		res.RowsRead += pb.Rows
		res.To = pb.To
		if file != "" {
			info, err := p.createBatch(ctx, log, j, b, file, batchMetadata(spec, pb, 1))
			if err != nil {
				// Recorded without a batch: Collect creates it after
				// Options.BatchClaimGrace (or finds it, if it was created after all).
				return fmt.Errorf("job %s: create the batch of %d rows (recorded; `enricher batches collect` creates it later): %w", spec.Name, pb.Rows, err)
			}
			// The list as recorded (the next batch is added to it).
			if tgt, err = p.cat.LoadTable(ctx, spec.Target.Table); err != nil {
				return err
			}
			if pending, err = storage.PendingBatches(tgt, spec.Name); err != nil {
				return err
			}
			log.Info("batch submitted", "batch", info.ID, "rows", pb.Rows, "texts", len(texts), "from", pb.From.String(), "to", pb.To.String(), "pending_batches", len(pending))
		} else {
			log.Info("range without rows to send queued behind the pending batches", "from", pb.From.String(), "to", pb.To.String())
		}
		if head == plan {
			return nil
		}
		if plan, err = storage.PlanAppends(ctx, src, pb.To, to); err != nil {
			return planError(spec, err)
		}
	}
}

// batchFileName names an input file after the job and range (the
// provider's console shows it).
func batchFileName(job string, pb storage.PendingBatch, attempt int) string {
	return fmt.Sprintf("enricher-%s-%s-%d", job, pb.To, attempt)
}

func batchMetadata(spec *enrich.Spec, pb storage.PendingBatch, attempt int) map[string]string {
	return map[string]string{
		"enricher_job":     spec.Name,
		"enricher_target":  spec.Target.Table,
		"enricher_range":   pb.From.String() + " .. " + pb.To.String(),
		"enricher_attempt": strconv.Itoa(attempt),
	}
}

// recordPending commits list as the job's pending batches with the
// watermark where it is, on the condition that the target has not
// changed since tgt was loaded (ErrConflict otherwise).
func (p *Processor) recordPending(ctx context.Context, j Job, tgt *table.Table, list []storage.PendingBatch) (*table.Table, error) {
	set, remove, err := storage.BatchesProps(j.Spec.Name, list)
	if err != nil {
		return nil, err
	}
	return p.recordProps(ctx, j, tgt, set, remove)
}

// recordProps commits property changes in a commit of no rows that keeps
// the watermark where tgt has it, on the condition that the target has not
// changed since tgt was loaded (ErrConflict otherwise): of two processes
// recording at once, one wins. The watermark is read from tgt itself: one
// read earlier, from an older handle, would move it back.
func (p *Processor) recordProps(ctx context.Context, j Job, tgt *table.Table, set map[string]string, remove []string) (*table.Table, error) {
	wm, err := storage.ReadWatermark(tgt, j.Spec.Name, j.Spec.Source.Table)
	if err != nil {
		return nil, err
	}
	schema, err := p.outSchema(ctx, j)
	if err != nil {
		return nil, err
	}
	c := &storage.Commit{Job: j.Spec.Name, SourceTable: j.Spec.Source.Table, SpecVersion: wm.SpecVersion,
		After: wm.Cursor, Schema: schema, Batches: func(func(arrow.RecordBatch, error) bool) {},
		SetProps: set, RemoveProps: remove}
	if c.SpecVersion == "" {
		c.SpecVersion = j.Spec.Version
	}
	out, _, err := storage.AppendChunk(ctx, tgt, c)
	if err != nil {
		return nil, err
	}
	return p.expire(ctx, p.opts.Logger, out), nil
}

// outSchema is the Arrow schema of the job's target rows.
func (p *Processor) outSchema(ctx context.Context, j Job) (*arrow.Schema, error) {
	_, enr, err := p.bind(ctx, j)
	if err != nil {
		return nil, err
	}
	return enr.Schema(), nil
}

// recordBatchID records the batch created from an input file, in the
// pending list or a replay's list: the batch exists and is paid for, so
// the record must not be lost to another writer's commit.
func (p *Processor) recordBatchID(ctx context.Context, j Job, file, id string) (*table.Table, error) {
	return p.updateAttempt(ctx, j, file, func(a *storage.BatchAttempt) (bool, error) {
		switch a.Batch {
		case id:
			return false, nil
		case "":
			a.Batch = id
			return true, nil
		}
		return false, fmt.Errorf("job %s: input file %s has two batches, %s (recorded) and %s: cancel %s in the provider's console", j.Spec.Name, file, a.Batch, id, id)
	})
}

// recordRefusal records that the provider refused to create the batch of
// an input file: the attempt has ended without answers.
func (p *Processor) recordRefusal(ctx context.Context, log *slog.Logger, j Job, file string, cause error) error {
	reason := clip(cause.Error())
	log.Warn("the provider refused the batch: its rows are asked again or written failed with the reason", "file", file, "reason", reason)
	_, err := p.updateAttempt(ctx, j, file, func(a *storage.BatchAttempt) (bool, error) {
		if a.Batch != "" || a.Refused != "" {
			return false, nil
		}
		a.Refused = reason
		return true, nil
	})
	return err
}

// clip keeps a recorded reason short (table properties are read often).
func clip(s string) string {
	const n = 500
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// updateAttempt changes the recorded attempt of an input file, in the
// pending list or a replay's list, reloading the target after conflicts.
// change reports whether it changed anything (else nothing is committed).
func (p *Processor) updateAttempt(ctx context.Context, j Job, file string, change func(*storage.BatchAttempt) (bool, error)) (*table.Table, error) {
	var out *table.Table
	name := j.Spec.Name
	err := retry.Do(ctx, p.conflictBackoff(), func(ctx context.Context) error {
		tgt, err := p.cat.LoadTable(ctx, j.Spec.Target.Table)
		if err != nil {
			return err
		}
		pending, err := storage.PendingBatches(tgt, name)
		if err != nil {
			return err
		}
		replays, err := storage.ReplayBatches(tgt, name)
		if err != nil {
			return err
		}
		var attempts []*storage.BatchAttempt
		for i := range pending {
			for k := range pending[i].Attempts {
				attempts = append(attempts, &pending[i].Attempts[k])
			}
		}
		inPending := len(attempts)
		for i := range replays {
			for k := range replays[i].Attempts {
				attempts = append(attempts, &replays[i].Attempts[k])
			}
		}
		at := slices.IndexFunc(attempts, func(a *storage.BatchAttempt) bool { return a.InputFile == file })
		if at < 0 {
			return fmt.Errorf("job %s: the batch of input file %s is not recorded any more", name, file)
		}
		changed, err := change(attempts[at])
		if err != nil || !changed {
			out = tgt
			return err
		}
		var set map[string]string
		var remove []string
		if at < inPending {
			set, remove, err = storage.BatchesProps(name, pending)
		} else {
			set, remove, err = storage.ReplayBatchesProps(name, replays)
		}
		if err != nil {
			return err
		}
		out, err = p.recordProps(ctx, j, tgt, set, remove)
		if errors.Is(err, storage.ErrConflict) {
			return retry.RetryableError(err)
		}
		return err
	})
	return out, err
}

// createBatch creates the batch of a recorded input file and records its
// ID; a refusal is recorded as the attempt's end (and is no error).
func (p *Processor) createBatch(ctx context.Context, log *slog.Logger, j Job, b enrich.Batcher, file string, meta map[string]string) (enrich.BatchInfo, error) {
	info, err := b.CreateBatch(ctx, file, meta)
	if errors.Is(err, enrich.ErrBatchRefused) {
		return enrich.BatchInfo{}, p.recordRefusal(ctx, log, j, file, err)
	}
	if err != nil {
		return enrich.BatchInfo{}, err
	}
	if _, err := p.recordBatchID(ctx, j, file, info.ID); err != nil {
		return enrich.BatchInfo{}, err
	}
	return info, nil
}

// attemptInfo is what the provider says of an attempt's batch (a refused
// one ended without answers).
func attemptInfo(ctx context.Context, b enrich.Batcher, a storage.BatchAttempt) (enrich.BatchInfo, error) {
	if a.Refused != "" {
		return enrich.BatchInfo{Status: enrich.BatchRefused, InputFile: a.InputFile, Errors: a.Refused}, nil
	}
	return b.RetrieveBatch(ctx, a.Batch)
}

// recorder is the model that batchTexts runs the enricher with: it answers
// nothing and keeps each distinct text it is asked, in order. Blank rows,
// rows in a language the model does not read and the cut of over-long
// texts are the enricher's, as on the synchronous path.
type recorder struct {
	name  string
	seen  map[string]struct{}
	texts []string
}

func (r *recorder) Name() string { return r.name }

func (r *recorder) Annotate(_ context.Context, items []enrich.Item, out []enrich.Answer) error {
	for i, it := range items {
		if _, ok := r.seen[it.Text]; !ok {
			r.seen[it.Text] = struct{}{}
			r.texts = append(r.texts, it.Text)
		}
		out[i] = enrich.Answer{Status: enrich.StatusFailed, Error: "recorded, not answered"}
	}
	return nil
}

// recording returns an enricher of the job's rows whose model records
// the texts it is asked (see recorder).
func (p *Processor) recording(src *table.Table, spec *enrich.Spec) (*enrich.Enricher, *recorder, error) {
	in, err := storage.ProjectedSchema(src, spec.Columns())
	if err != nil {
		return nil, nil, err
	}
	rec := &recorder{name: spec.Model.ID(), seen: map[string]struct{}{}}
	enr, err := enrich.NewEnricher(spec, rec, in, p.opts.Allocator)
	if err != nil {
		return nil, nil, err
	}
	return enr, rec, nil
}

// dropUnused deletes an uploaded input file whose record lost (nobody will
// create its batch), logging a failure: the provider expires files anyway.
func dropUnused(ctx context.Context, log *slog.Logger, b enrich.Batcher, file string) {
	if err := b.DeleteBatchFile(context.WithoutCancel(ctx), file); err != nil {
		log.Warn("could not delete an unused batch input file", "file", file, "err", err)
	}
}

// batchTexts reads the rows of plan in order and returns the distinct
// texts the model is to answer, in the order of their first row. The same
// plan always gives the same texts.
func (p *Processor) batchTexts(ctx context.Context, src *table.Table, spec *enrich.Spec, plan *storage.Plan) ([]string, error) {
	enr, rec, err := p.recording(src, spec)
	if err != nil {
		return nil, err
	}
	ropts := storage.ReadOptions{BatchRows: p.opts.BatchRows, Concurrency: p.opts.ReadConcurrency}
	for _, run := range bySnapshot(plan.Units) {
		for batch, err := range storage.ReadUnits(ctx, src, spec.Columns(), run, ropts) {
			if err != nil {
				return nil, err
			}
			out, _, err := enr.Enrich(ctx, batch, run[0].SnapshotID)
			batch.Release()
			if err != nil {
				return nil, err
			}
			out.Release()
		}
	}
	return rec.texts, nil
}

// answered is the model a collected batch's rows are written with: the
// answers by text.
type answered struct {
	name    string
	answers map[string]enrich.Answer
}

func (a *answered) Name() string { return a.name }

func (a *answered) Annotate(_ context.Context, items []enrich.Item, out []enrich.Answer) error {
	for i, it := range items {
		ans, ok := a.answers[it.Text]
		if !ok {
			ans = enrich.Answer{Status: enrich.StatusFailed, Error: "no batch answered this row"}
		}
		out[i] = ans
	}
	return nil
}

// BatchState is what Collect found of one pending batch.
type BatchState string

// Batch states of a collection.
const (
	// BatchWaiting: the provider has not finished the batch.
	BatchWaiting BatchState = "waiting"
	// BatchCommitted: its rows are written and it left the pending list.
	BatchCommitted BatchState = "committed"
	// BatchRetried: it ended with rows unanswered, sent again as a new
	// batch.
	BatchRetried BatchState = "retried"
	// BatchCreated: its batch was created (or found) after a crash
	// between recording its input file and recording its ID.
	BatchCreated BatchState = "created"
	// BatchClaimed: another process recorded it moments ago and is
	// creating its batch.
	BatchClaimed BatchState = "claimed"
	// BatchResyncing: a resync of the job is in progress; it writes the
	// batch's rows itself and drops the pending list when it ends.
	BatchResyncing BatchState = "resyncing"
)

// BatchReport is one pending batch as Collect left it.
type BatchReport struct {
	Job      string
	Batch    string // the provider's ID of the latest attempt
	Status   string // the provider's status ("" when not asked)
	State    BatchState
	From, To storage.Cursor
	Rows     int64
	Attempt  int
	Age      time.Duration
	// Counts are the statuses of the rows written (BatchCommitted).
	Counts enrich.Counts
	// Retried counts the rows asked again (synchronously or in a new
	// batch).
	Retried int
	// Done and Total are the provider's request lines of the batch.
	Done, Total int
}

// Collect brings in the batches of job (every batch job when job is "")
// that have ended, oldest first: each one's rows in one commit that moves
// the watermark to its end. It stops at a job's first batch still waiting,
// since the watermark moves in order. It returns what it found of each
// batch it looked at.
func (p *Processor) Collect(ctx context.Context, job string) ([]BatchReport, error) {
	var out []BatchReport
	var errs []error
	for _, j := range p.jobs {
		if job != "" && j.Spec.Name != job {
			continue
		}
		if j.Spec.Model.BatchAPI == enrich.BatchOff {
			continue
		}
		reps, err := p.collectJob(ctx, j)
		out = append(out, reps...)
		if err != nil {
			errs = append(errs, fmt.Errorf("job %s: %w", j.Spec.Name, err))
		}
	}
	return out, errors.Join(errs...)
}

// collectJob collects the job's ended batches, re-reading the target after
// a conflict.
func (p *Processor) collectJob(ctx context.Context, j Job) ([]BatchReport, error) {
	var out []BatchReport
	err := retry.Do(ctx, p.conflictBackoff(), func(ctx context.Context) error {
		for {
			rep, more, err := p.collectOne(ctx, j)
			if rep != nil && err == nil {
				out = append(out, *rep) // a try that lost a conflict is reported by the next
			}
			switch {
			case errors.Is(err, storage.ErrConflict):
				p.opts.Logger.Warn("target commit conflict while collecting a batch, reloading", "job", j.Spec.Name, "err", err)
				return retry.RetryableError(err)
			case err != nil:
				return err
			case !more:
				return nil
			}
		}
	})
	return out, err
}

// collectOne looks at the job's first pending batch and brings it in if it
// has ended. more says whether the next one may be ready too.
func (p *Processor) collectOne(ctx context.Context, j Job) (rep *BatchReport, more bool, err error) {
	spec := j.Spec
	log := p.opts.Logger.With("job", spec.Name)
	src, enr, err := p.bind(ctx, j)
	if err != nil {
		return nil, false, err
	}
	tgt, err := p.target(ctx, spec, enr.Schema())
	if err != nil {
		return nil, false, err
	}
	b, pending, err := p.batching(j, tgt)
	if err != nil || len(pending) == 0 {
		return nil, false, err
	}
	wm, err := storage.ReadWatermark(tgt, spec.Name, spec.Source.Table)
	if err != nil {
		return nil, false, err
	}
	pb := pending[0]
	if r, ok, err := storage.ResyncInProgress(tgt, spec.Name); err != nil {
		return nil, false, err
	} else if ok {
		// The resync writes every missing row, these too, and drops the
		// list when it ends: committing them now would write them twice.
		log.Info("a resync of the job is in progress: its pending batches wait", "resync_to", r.SnapshotID)
		return &BatchReport{Job: spec.Name, Batch: pb.Last().Batch, State: BatchResyncing, From: pb.From, To: pb.To, Rows: pb.Rows,
			Attempt: len(pb.Attempts), Age: time.Since(pb.Created)}, false, nil
	}
	if pb.From != wm.Cursor {
		return nil, false, fmt.Errorf("the first pending batch starts at %s, not at the watermark %s", pb.From, wm.Cursor)
	}
	rep = &BatchReport{Job: spec.Name, From: pb.From, To: pb.To, Rows: pb.Rows, Attempt: len(pb.Attempts), Age: time.Since(pb.Created)}
	var answers map[string]enrich.Answer
	if !pb.Empty() {
		last := pb.Last()
		rep.Batch = last.Batch
		if last.Batch == "" && !last.Ended() {
			state, err := p.recoverBatch(ctx, log, j, b, tgt, pending)
			rep.State = state
			return rep, state == BatchCreated, err
		}
		info, err := attemptInfo(ctx, b, last)
		if err != nil {
			return rep, false, err
		}
		rep.Status, rep.Done, rep.Total = info.Status, info.Completed+info.Failed, info.Total
		if !info.Done() {
			rep.State = BatchWaiting
			return rep, false, nil
		}
		if pb.SpecVersion != spec.Version {
			log.Warn("the job spec's version changed since the batch was submitted: rows whose request changed with it (max_text_chars, languages, rows_per_request) find no answer and are asked again",
				"batch", last.Batch, "submitted_with", pb.SpecVersion, "now", spec.Version)
		}
		texts, err := p.rangeTexts(ctx, src, spec, pb)
		if err != nil {
			return rep, false, err
		}
		var ask []string
		answers, ask, err = answersOf(ctx, b, texts, pb.Attempts, pb.RowsPerRequest, info)
		if err != nil {
			return rep, false, err
		}
		if len(ask) > 0 && len(pb.Attempts) < spec.Model.Batch.Attempts {
			rep.Retried = len(ask)
			if syncRetry(spec, len(ask)) {
				log.Info("batch ended with rows unanswered: asking them synchronously", "batch", last.Batch, "rows", len(ask))
				if err := askSync(ctx, b, ask, answers); err != nil {
					return rep, false, err
				}
			} else {
				err := p.retryBatch(ctx, log, j, b, tgt, pending, ask)
				if err == nil {
					rep.State = BatchRetried
				}
				return rep, false, err
			}
		}
	}
	// Write the range's rows with the answers, the watermark to its end
	// and the list without it, in one commit.
	plan, err := p.rangePlan(ctx, src, spec, pb)
	if err != nil {
		return rep, false, err
	}
	// The list without this batch, as the target holds it when the commit
	// is made: a batch submitted meanwhile stays on it.
	props := func(t *table.Table) (map[string]string, []string, error) {
		cur, err := storage.PendingBatches(t, spec.Name)
		if err != nil {
			return nil, nil, err
		}
		if len(cur) == 0 || cur[0].From != pb.From || cur[0].To != pb.To {
			return nil, nil, fmt.Errorf("%w: the pending batch %s..%s is not first on the list any more", errDropped, pb.From, pb.To)
		}
		return storage.BatchesProps(spec.Name, cur[1:])
	}
	model := &answered{name: j.Model.Name(), answers: answers}
	in, err := storage.ProjectedSchema(src, spec.Columns())
	if err != nil {
		return rep, false, err
	}
	wenr, err := enrich.NewEnricher(spec, model, in, p.opts.Allocator)
	if err != nil {
		return rep, false, err
	}
	res := &Result{Job: spec.Name, SourceTable: spec.Source.Table, TargetTable: spec.Target.Table, Counts: enrich.Counts{}}
	if err := p.pipeline(ctx, log, src, tgt, wenr, plan, res, lastCommit{oneChunk: true, props: props}); err != nil {
		return rep, false, err
	}
	rep.State, rep.Counts = BatchCommitted, res.Counts
	log.Info("batch collected", "batch", rep.Batch, "rows", res.RowsWritten, "counts", res.Counts, "watermark", pb.To.String(), "pending_batches", len(pending)-1)
	return rep, len(pending) > 1, nil
}

// answersOf reads the answers of a range's attempts, whose first one asked
// texts and whose last one is info: each later attempt asked the texts the
// ones before left without an ok answer. It returns the answers by text
// and the texts still without an ok answer, in order.
func answersOf(ctx context.Context, b enrich.Batcher, texts []string, attempts []storage.BatchAttempt, rpr int, info enrich.BatchInfo) (map[string]enrich.Answer, []string, error) {
	answers := map[string]enrich.Answer{}
	ask := texts
	for k, a := range attempts {
		ai := info
		if k < len(attempts)-1 {
			var err error
			if ai, err = attemptInfo(ctx, b, a); err != nil {
				return nil, nil, err
			}
		}
		lines := b.PackBatch(ask, attemptRows(rpr, k+1))
		if len(lines) != a.Lines {
			return nil, nil, fmt.Errorf("batch %s: its rows make %d request lines now, the batch has %d: the source rows or the job spec changed since it was submitted", a.Batch, len(lines), a.Lines)
		}
		err := b.BatchAnswers(ctx, ai, lines, func(text string, ans enrich.Answer) {
			if old, ok := answers[text]; !ok || old.Status != enrich.StatusOK {
				answers[text] = ans
			}
		})
		if err != nil {
			return nil, nil, err
		}
		ask = unanswered(ask, answers)
	}
	return answers, ask, nil
}

// syncRetry says whether n unanswered texts are asked synchronously.
func syncRetry(spec *enrich.Spec, n int) bool {
	return spec.Model.Batch.Retry == enrich.BatchRetrySync && n <= spec.Model.Batch.SyncMaxRows
}

// askSync asks texts with chat requests (which split what fails in
// halves) and puts the answers in answers.
func askSync(ctx context.Context, b enrich.Batcher, texts []string, answers map[string]enrich.Answer) error {
	items := make([]enrich.Item, len(texts))
	for i, t := range texts {
		items[i] = enrich.Item{ID: i, Text: t}
	}
	got := make([]enrich.Answer, len(items))
	if err := b.Annotate(ctx, items, got); err != nil {
		return err
	}
	for i, t := range texts {
		answers[t] = got[i]
	}
	return nil
}

// attemptRows is the rows per request line of an attempt: halved for each
// retry, as the synchronous path asks again in halves.
func attemptRows(rpr, attempt int) int {
	return max(1, rpr>>(attempt-1))
}

// unanswered is the texts of ask without an ok answer, in order.
func unanswered(ask []string, answers map[string]enrich.Answer) []string {
	var out []string
	for _, t := range ask {
		if answers[t].Status != enrich.StatusOK {
			out = append(out, t)
		}
	}
	return out
}

// rangePlan plans the rows of a pending batch's range from the watermark
// (its start) and checks that it ends where the batch does.
func (p *Processor) rangePlan(ctx context.Context, src *table.Table, spec *enrich.Spec, pb storage.PendingBatch) (*storage.Plan, error) {
	to := pb.To.SnapshotID
	if pb.To.PartialSnapshotID != 0 {
		to = pb.To.PartialSnapshotID
	}
	plan, err := storage.PlanAppends(ctx, src, pb.From, to)
	if err != nil {
		return nil, fmt.Errorf("plan the rows of the pending batch %s..%s: %w", pb.From, pb.To, planError(spec, err))
	}
	if pb.Rows > 0 {
		plan = plan.Head(pb.Rows)
	}
	if plan.End() != pb.To || plan.Rows() != pb.Rows {
		return nil, fmt.Errorf("the pending batch %s..%s of %d rows plans as %d rows ending at %s: the source table's history changed", pb.From, pb.To, pb.Rows, plan.Rows(), plan.End())
	}
	return plan, nil
}

// rangeTexts reads a pending batch's range again: the texts its first
// attempt was made of.
func (p *Processor) rangeTexts(ctx context.Context, src *table.Table, spec *enrich.Spec, pb storage.PendingBatch) ([]string, error) {
	plan, err := p.rangePlan(ctx, src, spec, pb)
	if err != nil {
		return nil, err
	}
	texts, err := p.batchTexts(ctx, src, spec, plan)
	if err != nil {
		return nil, err
	}
	if len(texts) != pb.Texts {
		return nil, fmt.Errorf("the pending batch %s..%s was made of %d texts, its rows now give %d: the job spec (language, max_text_chars) or the source changed", pb.From, pb.To, pb.Texts, len(texts))
	}
	return texts, nil
}

// retryBatch sends the texts a range's batches left unanswered as a new
// batch: recorded (input file, then ID) like the first.
func (p *Processor) retryBatch(ctx context.Context, log *slog.Logger, j Job, b enrich.Batcher, tgt *table.Table,
	pending []storage.PendingBatch, ask []string) error {
	spec := j.Spec
	pb := pending[0]
	attempt := len(pb.Attempts) + 1
	lines := b.PackBatch(ask, attemptRows(pb.RowsPerRequest, attempt))
	file, err := b.UploadBatch(ctx, batchFileName(spec.Name, pb, attempt), lines)
	if err != nil {
		return err
	}
	list := clonePending(pending)
	list[0].Attempts = append(list[0].Attempts, storage.BatchAttempt{InputFile: file, Lines: len(lines), Texts: len(ask), Claimed: time.Now().UTC()})
	if _, err := p.recordPending(ctx, j, tgt, list); err != nil {
		dropUnused(ctx, log, b, file)
		return err
	}
	info, err := p.createBatch(ctx, log, j, b, file, batchMetadata(spec, pb, attempt))
	if err != nil {
		return fmt.Errorf("create the retry batch of %d rows (recorded; the next collection creates it): %w", len(ask), err)
	}
	log.Info("batch ended with rows unanswered: sent them again as a new batch", "batch", info.ID, "rows", len(ask), "attempt", attempt)
	return nil
}

// recoverBatch handles a pending batch whose input file is recorded but
// not its batch (see adoptOrCreate).
func (p *Processor) recoverBatch(ctx context.Context, log *slog.Logger, j Job, b enrich.Batcher, tgt *table.Table,
	pending []storage.PendingBatch) (BatchState, error) {
	pb := pending[0]
	return p.adoptOrCreate(ctx, log, j, b, pb.Last(), batchMetadata(j.Spec, pb, len(pb.Attempts)), func(at time.Time) error {
		list := clonePending(pending)
		list[0].Attempts[len(list[0].Attempts)-1].Claimed = at
		_, err := p.recordPending(ctx, j, tgt, list)
		return err
	})
}

// adoptOrCreate handles an attempt whose input file is recorded but not
// its batch: a crash (or a failed create) between the two. Within
// Options.BatchClaimGrace of the record it is another process's to
// finish. After, the batch is looked up by its input file and adopted, or,
// if there is none, the creation is claimed in a commit (claim: of two
// processes, one wins) and the batch created.
func (p *Processor) adoptOrCreate(ctx context.Context, log *slog.Logger, j Job, b enrich.Batcher, a storage.BatchAttempt,
	meta map[string]string, claim func(time.Time) error) (BatchState, error) {
	// A create in flight ends (answered or timed out) within
	// CreateTimeout: a claim younger than twice that may still be one.
	if time.Since(a.Claimed) < max(p.opts.BatchClaimGrace, 2*b.CreateTimeout()) {
		return BatchClaimed, nil
	}
	info, found, err := b.FindBatch(ctx, a.InputFile, a.Claimed)
	if err != nil {
		return "", err
	}
	if !found {
		if err := claim(time.Now().UTC()); err != nil {
			return "", err // a conflict: someone else claimed it (or moved on)
		}
		if info, err = p.createBatch(ctx, log, j, b, a.InputFile, meta); err != nil {
			return "", fmt.Errorf("create the batch of recorded input file %s: %w", a.InputFile, err)
		}
		log.Warn("created the batch of an input file recorded without one (a crash or a failed create before)", "batch", info.ID, "file", a.InputFile)
		return BatchCreated, nil
	}
	log.Warn("found the batch of an input file recorded without one (a crash after creating it): adopting it", "batch", info.ID, "file", a.InputFile)
	if _, err := p.recordBatchID(ctx, j, a.InputFile, info.ID); err != nil {
		return "", err
	}
	return BatchCreated, nil
}

func clonePending(list []storage.PendingBatch) []storage.PendingBatch {
	out := make([]storage.PendingBatch, len(list))
	for i, pb := range list {
		out[i] = pb
		out[i].Attempts = append([]storage.BatchAttempt(nil), pb.Attempts...)
	}
	return out
}
