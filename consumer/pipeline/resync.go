package pipeline

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/sethvargo/go-retry"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

// ResyncRequest asks to bring a job up to its source's current snapshot
// by key, when incremental reads cannot: the source's history was expired
// past the watermark, or overwrite snapshots (a MERGE upstream) added rows
// that events pass over.
type ResyncRequest struct {
	Job string
	// MemoryBytes bounds the key sets of the anti-join (0: 64 MiB); keys
	// beyond it spill to files in TempDir (default: the system's).
	MemoryBytes int64
	TempDir     string
	// SkipNullKeys passes over (and counts) source rows whose key is null,
	// which no target row can match; without it they refuse the resync.
	SkipNullKeys bool
	// DryRun finds and counts the missing rows, and writes nothing.
	DryRun bool
	// Progress, when set, is called as the anti-join goes (phase and
	// counts so far) and after each commit, on the caller's goroutine.
	Progress func(ResyncProgress)
}

// ResyncProgress reports how far a resync has come.
type ResyncProgress struct {
	Phase string // storage's anti-join phases, then "commit"
	Stats storage.AntiJoinStats
	// Commits and RowsWritten count what is committed so far.
	Commits     int
	RowsWritten int64
}

// ResyncResult tallies a resync.
type ResyncResult struct {
	// SourceSnapshotID is the source snapshot the job stands at after it.
	SourceSnapshotID int64
	// From is the watermark before.
	From storage.Cursor
	// Stats are the anti-join's counts of its last pass (missing rows,
	// null keys, partitions, spill bytes); after a conflict the last pass
	// finds fewer missing rows than RowsWritten, which counts every pass.
	Stats       storage.AntiJoinStats
	RowsWritten int64
	Counts      enrich.Counts
	Commits     int
	Conflicts   int
	Duration    time.Duration
}

// Resync enriches exactly the rows of the job's source (its current
// snapshot) whose key has no row in the target, and moves the job's
// watermark to that snapshot.
//
// The rows go in commits of about ChunkRows. Every commit but the last
// keeps the watermark where it was and sets the resync marker on the
// target (storage.ResyncProperty), so that consumers leave the job alone
// meanwhile (their events come back later, see resyncWait); the last moves
// the watermark and removes the marker, in one commit. Interrupted, it can
// be run again: the rows committed are found present and the rest are
// written. A commit that loses to another writer deletes its files and
// the resync starts over from the anti-join, so no row is written twice.
func (p *Processor) Resync(ctx context.Context, req ResyncRequest) (ResyncResult, error) {
	start := time.Now()
	i := slices.IndexFunc(p.jobs, func(j Job) bool { return j.Spec.Name == req.Job })
	if i < 0 {
		return ResyncResult{}, fmt.Errorf("resync: unknown job %q (jobs: %s)", req.Job, p.jobNames())
	}
	j := p.jobs[i]
	log := p.opts.Logger.With("job", j.Spec.Name, "table", j.Spec.Source.Table, "resync", true)
	// A pass that loses a conflict has committed some chunks already: the
	// result counts every pass's commits and rows, and progress goes on
	// numbering them.
	res := ResyncResult{Counts: enrich.Counts{}}
	conflicts, passes := 0, 0
	progress := req.Progress
	err := retry.Do(ctx, p.conflictBackoff(), func(ctx context.Context) error {
		done := res
		pass := req
		if progress != nil {
			pass.Progress = func(pr ResyncProgress) {
				pr.Commits += done.Commits
				pr.RowsWritten += done.RowsWritten
				progress(pr)
			}
		}
		r, err := p.resyncOnce(ctx, j, pass, log)
		if passes++; passes == 1 {
			res.From = r.From
		}
		res.SourceSnapshotID, res.Stats = r.SourceSnapshotID, r.Stats
		res.RowsWritten += r.RowsWritten
		res.Commits += r.Commits
		res.Counts.Add(r.Counts)
		if errors.Is(err, storage.ErrConflict) {
			conflicts++
			log.Warn("resync commit conflict: finding the missing rows again", "attempt", conflicts, "err", err)
			return retry.RetryableError(err)
		}
		return err
	})
	res.Conflicts = conflicts
	res.Duration = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("resync job %s: %w", j.Spec.Name, err)
	}
	return res, nil
}

func (p *Processor) resyncOnce(ctx context.Context, j Job, req ResyncRequest, log *slog.Logger) (ResyncResult, error) {
	spec := j.Spec
	res := ResyncResult{Counts: enrich.Counts{}}
	_, enr, err := p.bind(ctx, j) // the source's schema; the table is read again below
	if err != nil {
		return res, err
	}
	tgt, err := p.target(ctx, spec, enr.Schema())
	if err != nil {
		return res, err
	}
	wm, err := storage.ReadWatermark(tgt, spec.Name, spec.Source.Table)
	if err != nil {
		return res, err
	}
	res.From = wm.Cursor
	// The source again, now that the target is read: a consumer that
	// committed between the two loads may have moved the watermark to a
	// snapshot newer than the source first loaded, and moving it back to
	// that older snapshot would have its rows written twice.
	src, err := p.cat.LoadTable(ctx, spec.Source.Table)
	if err != nil {
		return res, err
	}
	marker, resyncing, err := storage.ResyncInProgress(tgt, spec.Name)
	if err != nil {
		return res, err
	}
	opts := storage.AntiJoinOptions{
		Key: spec.Source.Key, Columns: spec.Columns(), MemoryBytes: req.MemoryBytes, TempDir: req.TempDir,
		Read: storage.ReadOptions{BatchRows: p.opts.BatchRows, Concurrency: p.opts.ReadConcurrency},
	}
	if req.SkipNullKeys {
		opts.NullKeys = storage.NullKeysSkip
	}
	if req.Progress != nil {
		opts.Progress = func(phase storage.AntiJoinPhase, st storage.AntiJoinStats) {
			req.Progress(ResyncProgress{Phase: string(phase), Stats: st})
		}
	}
	missing, err := storage.FindMissingRows(ctx, src, tgt, opts)
	if err != nil {
		return res, err
	}
	res.Stats = missing.Stats()
	snap := res.Stats.SourceSnapshotID
	res.SourceSnapshotID = snap
	log.Info("resync planned", "source_snapshot", snap, "watermark", wm.Cursor.String(), "source_rows", res.Stats.SourceRows,
		"missing_rows", res.Stats.MissingRows, "null_keys", res.Stats.NullKeys, "partitions", res.Stats.Partitions,
		"spill_bytes", res.Stats.SpillBytes)
	switch {
	case req.DryRun:
		return res, nil
	case snap == 0:
		return res, nil // an empty source: nothing to catch up
	case res.Stats.MissingRows == 0 && !resyncing && wm.Cursor == (storage.Cursor{SnapshotID: snap}):
		res.SourceSnapshotID = snap
		return res, nil // already caught up
	}
	if !resyncing {
		marker = storage.Resync{SnapshotID: snap, Since: time.Now().UTC()}
	}
	marker.SnapshotID = snap

	next, stop := iter.Pull2(missing.Batches(ctx))
	defer stop()
	left := res.Stats.MissingRows
	exhausted := false
	for final := false; !final; {
		final = left <= p.opts.ChunkRows || exhausted
		counts := enrich.Counts{}
		var rows int64
		c := &storage.Commit{Job: spec.Name, SourceTable: spec.Source.Table, SpecVersion: spec.Version,
			After: wm.Cursor, Schema: enr.Schema(),
			Batches: resyncBatches(ctx, next, enr, snap, final, p.opts.ChunkRows, counts, &rows, &exhausted)}
		if final {
			c.After = storage.Cursor{SnapshotID: snap}
			if _, has := tgt.Properties()[storage.ResyncProperty(spec.Name)]; has {
				c.RemoveProps = []string{storage.ResyncProperty(spec.Name)}
			}
			// Batches pending when the resync began hold rows it found
			// missing and wrote: their answers are not needed any more.
			if dropped, err := storage.PendingBatches(tgt, spec.Name); err != nil {
				return res, err
			} else if len(dropped) > 0 {
				c.RemoveProps = append(c.RemoveProps, storage.BatchesProperty(spec.Name))
				var ids []string
				for _, pb := range dropped {
					ids = append(ids, pb.Last().Batch)
				}
				log.Warn("the resync wrote the rows of the job's pending batches: dropping them; cancel those still running in the provider's console",
					"batches", ids)
			}
		} else {
			c.SetProps = map[string]string{storage.ResyncProperty(spec.Name): marker.Marker()}
		}
		out, written, err := storage.AppendChunk(ctx, tgt, c)
		if ce := (*storage.ConflictError)(nil); errors.As(err, &ce) {
			if rerr := storage.RemoveFiles(context.WithoutCancel(ctx), tgt, ce.Files); rerr != nil {
				log.Warn("could not delete the data files of a lost resync commit: `enricher orphans` lists them", "err", rerr)
			}
			return res, err
		}
		if err != nil {
			return res, err
		}
		tgt = p.expire(ctx, log, out)
		res.Commits++
		res.RowsWritten += written
		res.Counts.Add(counts)
		left -= rows
		log.Info("resync committed", "commit", res.Commits, "rows", written, "final", final, "target_snapshot", snapshotID(tgt))
		if req.Progress != nil {
			req.Progress(ResyncProgress{Phase: "commit", Stats: res.Stats, Commits: res.Commits, RowsWritten: res.RowsWritten})
		}
	}
	return res, nil
}

// resyncBatches enriches the next missing rows pulled from next: about
// chunkRows of them, or, for the final chunk, all that are left. Rows
// carry snap as their source snapshot (the one they were read from).
func resyncBatches(ctx context.Context, next func() (arrow.RecordBatch, error, bool), enr *enrich.Enricher, snap int64,
	final bool, chunkRows int64, counts enrich.Counts, rows *int64, exhausted *bool) iter.Seq2[arrow.RecordBatch, error] {
	return func(yield func(arrow.RecordBatch, error) bool) {
		for final || *rows < chunkRows {
			rec, err, ok := next()
			if !ok {
				*exhausted = true
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
			out, c, err := enr.Enrich(ctx, rec, snap)
			n := rec.NumRows()
			rec.Release()
			if err != nil {
				yield(nil, err)
				return
			}
			counts.Add(c)
			*rows += n
			if !yield(out, nil) {
				return
			}
		}
	}
}
