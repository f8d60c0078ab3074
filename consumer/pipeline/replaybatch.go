package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/sethvargo/go-retry"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

// replayName names a replay in its batches' records: its range and status
// filter. A replay run again with the same arguments finds its batches.
func replayName(req ReplayRequest) string {
	statuses := make([]string, len(req.OnlyStatus))
	for i, s := range req.OnlyStatus {
		statuses[i] = string(s)
	}
	slices.Sort(statuses)
	return fmt.Sprintf("%d..%d[%s]", req.From, req.To, strings.Join(statuses, ","))
}

// replayGroup is one commit group of a replay through the Batch API.
type replayGroup struct {
	units  []storage.Unit
	keep   *keySet
	filter iceberg.BooleanExpression
	texts  []string
}

// replayBatched is Replay through the Batch API. Every commit group's rows
// are sent first, one batch per group, each recorded in the target's
// replay batch list (storage.ReplayBatch) before it is created; then the
// groups are committed in order as their batches end, each replacement
// removing its batch from the list in the same commit. Run again after a
// crash or an interrupt, the replay finds its recorded batches and submits
// nothing twice; the groups it had committed have no rows left to replay
// only with --only-status (without it, they are replaced again).
func (p *Processor) replayBatched(ctx context.Context, log *slog.Logger, j Job, b enrich.Batcher, src *table.Table,
	enr *enrich.Enricher, groups [][]storage.Unit, req ReplayRequest, res ReplayResult) (ReplayResult, error) {
	spec := j.Spec
	name := replayName(req)
	var todo []replayGroup
	for _, units := range groups {
		tgt, err := p.cat.LoadTable(ctx, spec.Target.Table)
		if err != nil {
			return res, fmt.Errorf("replay: %w", err)
		}
		keep, filter, err := p.replayKeys(ctx, src, tgt, spec, units, req.OnlyStatus)
		if err != nil {
			return res, err
		}
		if keep.len() == 0 {
			continue
		}
		g := replayGroup{units: units, keep: keep, filter: filter}
		if g.texts, err = p.replayTexts(ctx, src, spec, units, keep); err != nil {
			return res, fmt.Errorf("replay: %w", err)
		}
		if err := p.submitReplayGroup(ctx, log, j, b, name, g, req.OnBatch); err != nil {
			return res, fmt.Errorf("replay: %w", err)
		}
		// Only the group's units are kept until its turn: its keys and
		// texts are read again then, so memory holds one group at a time.
		todo = append(todo, replayGroup{units: units})
	}
	in, err := storage.ProjectedSchema(src, spec.Columns())
	if err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	for n, g := range todo {
		tgt, err := p.cat.LoadTable(ctx, spec.Target.Table)
		if err != nil {
			return res, fmt.Errorf("replay: %w", err)
		}
		if g.keep, g.filter, err = p.replayKeys(ctx, src, tgt, spec, g.units, req.OnlyStatus); err != nil {
			return res, err
		}
		if g.texts, err = p.replayTexts(ctx, src, spec, g.units, g.keep); err != nil {
			return res, fmt.Errorf("replay: %w", err)
		}
		answers, err := p.waitReplayGroup(ctx, log, j, b, name, g, req.OnBatch)
		if err != nil {
			return res, fmt.Errorf("replay: %w", err)
		}
		wenr, err := enrich.NewEnricher(spec, &answered{name: j.Model.Name(), answers: answers}, in, p.opts.Allocator)
		if err != nil {
			return res, fmt.Errorf("replay: %w", err)
		}
		var done replayCommit
		err = retry.Do(ctx, p.conflictBackoff(), func(ctx context.Context) error {
			tgt, list, err := p.loadReplayBatches(ctx, spec)
			if err != nil {
				return err
			}
			ids := snapshotIDs(g.units)
			list = slices.DeleteFunc(list, isReplayBatchOf(name, ids))
			set, remove, err := storage.ReplayBatchesProps(spec.Name, list)
			if err != nil {
				return err
			}
			done.counts, done.read = enrich.Counts{}, 0
			batches := p.replayBatches(ctx, src, wenr, g.units, g.keep, func(c enrich.Counts, n int64) {
				done.counts.Add(c)
				done.read += n
			})
			var out *table.Table
			out, done.written, done.deleted, err = storage.ReplaceRows(ctx, tgt, &storage.Replacement{
				Job: spec.Name, SourceTable: spec.Source.Table, SpecVersion: spec.Version,
				From: req.From, To: req.To, Filter: g.filter, Schema: enr.Schema(), Batches: batches,
				SetProps: set, RemoveProps: remove,
			})
			if errors.Is(err, storage.ErrConflict) {
				log.Warn("target commit conflict during replay, trying again", "err", err)
				return retry.RetryableError(err)
			}
			if err == nil {
				p.expire(ctx, log, out)
			}
			return err
		})
		if err != nil {
			return res, fmt.Errorf("replay commit %d of %d: %w", n+1, len(todo), err)
		}
		res.addCommit(log, req, n+1, len(todo), done, "batch_api", true)
	}
	return res, nil
}

// replayTexts is the distinct texts of a group's rows to replay, in order.
func (p *Processor) replayTexts(ctx context.Context, src *table.Table, spec *enrich.Spec, units []storage.Unit, keep *keySet) ([]string, error) {
	enr, rec, err := p.recording(src, spec)
	if err != nil {
		return nil, err
	}
	for out, err := range p.replayBatches(ctx, src, enr, units, keep, func(enrich.Counts, int64) {}) {
		if err != nil {
			return nil, err
		}
		out.Release()
	}
	return rec.texts, nil
}

// isReplayBatchOf reports whether a record in the replay batch list is
// the one of the group of snapshots ids of replay name.
func isReplayBatchOf(name string, ids []int64) func(storage.ReplayBatch) bool {
	return func(rb storage.ReplayBatch) bool { return rb.Replay == name && slices.Equal(rb.Snapshots, ids) }
}

// findReplayBatch returns the index of a group's record in list (-1: none).
func findReplayBatch(list []storage.ReplayBatch, name string, ids []int64) int {
	return slices.IndexFunc(list, isReplayBatchOf(name, ids))
}

// submitReplayGroup sends a group's texts as a batch, unless the group's
// batch is recorded already (a replay run again).
func (p *Processor) submitReplayGroup(ctx context.Context, log *slog.Logger, j Job, b enrich.Batcher, name string, g replayGroup, onBatch func(BatchReport)) error {
	spec := j.Spec
	ids := snapshotIDs(g.units)
	tgt, list, err := p.loadReplayBatches(ctx, spec)
	if err != nil {
		return err
	}
	if i := findReplayBatch(list, name, ids); i >= 0 {
		if list[i].Texts != len(g.texts) {
			return fmt.Errorf("the batch recorded for snapshots %v of replay %s asked %d texts, the rows to replay now give %d: cancel batch %s and drop table property %s, or replay with the same arguments",
				ids, name, list[i].Texts, len(g.texts), list[i].Attempts[len(list[i].Attempts)-1].Batch, storage.ReplayBatchesProperty(spec.Name))
		}
		log.Info("replay batch already submitted: waiting for it", "snapshots", ids, "batch", list[i].Attempts[len(list[i].Attempts)-1].Batch)
		return nil
	}
	rb := storage.ReplayBatch{Replay: name, Snapshots: ids, Texts: len(g.texts), RowsPerRequest: spec.Model.RowsPerRequest, Created: time.Now().UTC()}
	lines := b.PackBatch(g.texts, rb.RowsPerRequest)
	file, err := b.UploadBatch(ctx, fmt.Sprintf("enricher-%s-replay-%d", spec.Name, ids[0]), lines)
	if err != nil {
		return err
	}
	rb.Attempts = []storage.BatchAttempt{{InputFile: file, Lines: len(lines), Texts: len(g.texts), Claimed: time.Now().UTC()}}
	if err := p.recordReplayBatches(ctx, j, tgt, append(list, rb)); err != nil {
		dropUnused(ctx, log, b, file)
		return err
	}
	info, err := p.createBatch(ctx, log, j, b, file, replayMetadata(spec, name, 1))
	if err != nil {
		return fmt.Errorf("create the replay batch of %d texts (recorded: run the replay again to create it): %w", len(g.texts), err)
	}
	log.Info("replay batch submitted", "batch", info.ID, "snapshots", ids, "texts", len(g.texts))
	if onBatch != nil {
		onBatch(BatchReport{Job: spec.Name, Batch: info.ID, Status: info.Status, State: BatchCreated, Rows: int64(len(g.texts)), Attempt: 1, Total: info.Total})
	}
	return nil
}

func replayMetadata(spec *enrich.Spec, name string, attempt int) map[string]string {
	return map[string]string{
		"enricher_job":     spec.Name,
		"enricher_target":  spec.Target.Table,
		"enricher_replay":  name,
		"enricher_attempt": fmt.Sprint(attempt),
	}
}

// loadReplayBatches loads the job's target and the replay batches it
// records.
func (p *Processor) loadReplayBatches(ctx context.Context, spec *enrich.Spec) (*table.Table, []storage.ReplayBatch, error) {
	tgt, err := p.cat.LoadTable(ctx, spec.Target.Table)
	if err != nil {
		return nil, nil, err
	}
	list, err := storage.ReplayBatches(tgt, spec.Name)
	return tgt, list, err
}

// recordReplayBatches commits list as the job's replay batches, with the
// watermark where it is (ErrConflict if tgt changed meanwhile).
func (p *Processor) recordReplayBatches(ctx context.Context, j Job, tgt *table.Table, list []storage.ReplayBatch) error {
	set, remove, err := storage.ReplayBatchesProps(j.Spec.Name, list)
	if err != nil {
		return err
	}
	_, err = p.recordProps(ctx, j, tgt, set, remove)
	return err
}

// waitReplayGroup waits, every model.batch.poll, until the group's batch
// has ended, asks again what it left unanswered (synchronously when few,
// else as a new batch, up to model.batch.attempts) and returns the answers
// by text.
func (p *Processor) waitReplayGroup(ctx context.Context, log *slog.Logger, j Job, b enrich.Batcher, name string, g replayGroup, onBatch func(BatchReport)) (map[string]enrich.Answer, error) {
	spec := j.Spec
	ids := snapshotIDs(g.units)
	poll := spec.Model.Batch.PollInterval()
	for {
		tgt, list, err := p.loadReplayBatches(ctx, spec)
		if err != nil {
			return nil, err
		}
		i := findReplayBatch(list, name, ids)
		if i < 0 {
			return nil, fmt.Errorf("the batch of snapshots %v of replay %s is not recorded any more (another replay committed it?)", ids, name)
		}
		rb := list[i]
		last := rb.Attempts[len(rb.Attempts)-1]
		rep := BatchReport{Job: spec.Name, Batch: last.Batch, Rows: int64(rb.Texts), Attempt: len(rb.Attempts), Age: time.Since(rb.Created)}
		if last.Batch == "" && !last.Ended() {
			state, err := p.adoptOrCreate(ctx, log, j, b, last, replayMetadata(spec, name, len(rb.Attempts)), func(at time.Time) error {
				list[i].Attempts = slices.Clone(rb.Attempts)
				list[i].Attempts[len(rb.Attempts)-1].Claimed = at
				return p.recordReplayBatches(ctx, j, tgt, list)
			})
			if err != nil {
				return nil, err
			}
			if state == BatchCreated {
				continue
			}
			rep.State = state
		} else {
			info, err := attemptInfo(ctx, b, last)
			if err != nil {
				return nil, err
			}
			rep.Status, rep.Done, rep.Total = info.Status, info.Completed+info.Failed, info.Total
			if info.Done() {
				answers, ask, err := answersOf(ctx, b, g.texts, rb.Attempts, rb.RowsPerRequest, info)
				if err != nil {
					return nil, err
				}
				if len(ask) == 0 || len(rb.Attempts) >= spec.Model.Batch.Attempts {
					return answers, nil
				}
				if syncRetry(spec, len(ask)) {
					log.Info("replay batch ended with rows unanswered: asking them synchronously", "batch", last.Batch, "rows", len(ask))
					return answers, askSync(ctx, b, ask, answers)
				}
				if err := p.retryReplayBatch(ctx, log, j, b, tgt, list, i, ask); err != nil {
					return nil, err
				}
				continue
			}
			rep.State = BatchWaiting
		}
		if onBatch != nil {
			onBatch(rep)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for batch %s (recorded: run the replay again to go on waiting): %w", last.Batch, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// retryReplayBatch sends what a group's batches left unanswered as a new
// batch of the group's record.
func (p *Processor) retryReplayBatch(ctx context.Context, log *slog.Logger, j Job, b enrich.Batcher, tgt *table.Table,
	list []storage.ReplayBatch, i int, ask []string) error {
	spec := j.Spec
	rb := list[i]
	attempt := len(rb.Attempts) + 1
	lines := b.PackBatch(ask, attemptRows(rb.RowsPerRequest, attempt))
	file, err := b.UploadBatch(ctx, fmt.Sprintf("enricher-%s-replay-%d-%d", spec.Name, rb.Snapshots[0], attempt), lines)
	if err != nil {
		return err
	}
	list[i].Attempts = append(slices.Clone(rb.Attempts), storage.BatchAttempt{InputFile: file, Lines: len(lines), Texts: len(ask), Claimed: time.Now().UTC()})
	if err := p.recordReplayBatches(ctx, j, tgt, list); err != nil {
		dropUnused(ctx, log, b, file)
		return err
	}
	info, err := p.createBatch(ctx, log, j, b, file, replayMetadata(spec, rb.Replay, attempt))
	if err != nil {
		return fmt.Errorf("create the retry batch of %d rows (recorded: run the replay again to create it): %w", len(ask), err)
	}
	log.Info("replay batch ended with rows unanswered: sent them again as a new batch", "batch", info.ID, "rows", len(ask), "attempt", attempt)
	return nil
}
