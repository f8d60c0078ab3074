package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/sethvargo/go-retry"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

// ReplayRequest asks to enrich again the rows that a range of source
// snapshots appended, for a new prompt or model, or to retry rows that
// failed.
type ReplayRequest struct {
	Job string
	// From and To are source snapshot ids, both included: From must be To
	// or an ancestor of it, and the job must already have passed To.
	From, To int64
	// OnlyStatus, when set, limits the replay to the rows whose target row
	// has one of these statuses (for example failed and invalid_output).
	OnlyStatus []enrich.Status
	// OnCommit, when set, is called after each replacement commits.
	OnCommit func(ReplayProgress)
	// OnBatch, when set, is called each time a replay through the Batch
	// API submits a batch or finds one still running.
	OnBatch func(BatchReport)
}

// ReplayProgress reports one committed replacement.
type ReplayProgress struct {
	Commit, Commits int
	Rows            int64
}

// ReplayResult tallies a replay.
type ReplayResult struct {
	Snapshots   int   // append snapshots in the range
	RowsRead    int64 // source rows enriched again
	RowsDeleted int64 // target rows replaced
	Commits     int
	Counts      enrich.Counts
}

// ErrNotYetEnriched is returned (wrapped) when a replay reaches past the
// job's watermark: those rows are the consumer's to write, and replaying
// them would write them twice.
var ErrNotYetEnriched = errors.New("range not yet enriched by the job")

// Replay enriches the rows of req's range again and replaces their target
// rows. Each commit is one Iceberg overwrite: the target rows of the
// commit's source snapshots (and, with OnlyStatus, of the keys whose rows
// had those statuses) are deleted and the new rows appended in the same
// snapshot, so the target holds one row per source row and job throughout.
// A commit covers whole source snapshots, about ChunkRows rows; it is
// retried after a concurrent commit to the target. An interrupted replay
// can be run again: it replaces the same rows (with OnlyStatus, only those
// still failing).
func (p *Processor) Replay(ctx context.Context, req ReplayRequest) (ReplayResult, error) {
	res := ReplayResult{Counts: enrich.Counts{}}
	i := slices.IndexFunc(p.jobs, func(j Job) bool { return j.Spec.Name == req.Job })
	if i < 0 {
		return res, fmt.Errorf("replay: unknown job %q (jobs: %s)", req.Job, p.jobNames())
	}
	j := p.jobs[i]
	spec := j.Spec
	log := p.opts.Logger.With("job", spec.Name, "table", spec.Source.Table, "from", req.From, "to", req.To)

	src, enr, err := p.bind(ctx, j)
	if err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	tgt, err := p.cat.LoadTable(ctx, spec.Target.Table)
	if err != nil {
		return res, fmt.Errorf("replay: target of job %s: %w", spec.Name, err)
	}
	meta := src.Metadata()
	// A snapshot expiry removed is named as such: replay reads a range's
	// rows from its snapshots, so rows of expired snapshots are out of
	// its reach.
	expired := ""
	if errors.Is(storage.CheckHistory(src, storage.Cursor{}), storage.ErrHistoryExpired) {
		expired = " (the source's snapshot expiry has removed its oldest snapshots: replay reads a range from its snapshots, so rows of expired ones cannot be replayed)"
	}
	from := meta.SnapshotByID(req.From)
	if from == nil {
		return res, fmt.Errorf("replay: %s has no snapshot %d%s: %w", spec.Source.Table, req.From, expired, storage.ErrSnapshotNotFound)
	}
	if meta.SnapshotByID(req.To) == nil {
		return res, fmt.Errorf("replay: %s has no snapshot %d%s: %w", spec.Source.Table, req.To, expired, storage.ErrSnapshotNotFound)
	}
	if !storage.IsAncestor(meta, req.From, req.To) {
		return res, fmt.Errorf("replay: snapshot %d is not %d or an ancestor of it: %w", req.From, req.To, storage.ErrNotAncestor)
	}
	wm, err := storage.ReadWatermark(tgt, spec.Name, spec.Source.Table)
	if err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	if !storage.IsAncestor(meta, req.To, wm.SnapshotID) {
		return res, fmt.Errorf("replay: job %s stands at %s of %s, before snapshot %d: %w",
			spec.Name, wm.Cursor, spec.Source.Table, req.To, ErrNotYetEnriched)
	}

	var start storage.Cursor
	if from.ParentSnapshotID != nil {
		start = storage.Cursor{SnapshotID: *from.ParentSnapshotID}
	}
	plan, err := storage.PlanAppends(ctx, src, start, req.To)
	if err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}

	batcher, _, err := p.batching(j, tgt)
	if err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	if batcher != nil && spec.Model.BatchAPI != enrich.BatchOn && plan.Rows() < spec.Model.Batch.MinRows {
		batcher = nil // auto, and too few rows to wait a day for
	}
	// Commits of whole snapshots, about ChunkRows rows each; through the
	// Batch API (one batch per commit) at most batch.max_rows, unless one
	// snapshot alone holds more.
	var groups [][]storage.Unit
	var rows int64
	for _, snap := range bySnapshot(plan.Units) {
		var n int64
		for _, u := range snap {
			n += u.Rows
		}
		full := rows >= p.opts.ChunkRows
		if batcher != nil {
			full = rows > 0 && rows+n > spec.Model.Batch.MaxRows
		}
		if len(groups) == 0 || full {
			groups = append(groups, nil)
			rows = 0
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], snap...)
		rows += n
	}
	for _, s := range plan.Snapshots {
		if s.Operation == string(table.OpAppend) {
			res.Snapshots++
		}
	}
	log.Info("replay planned", "snapshots", res.Snapshots, "rows", plan.Rows(), "commits", len(groups), "only_status", req.OnlyStatus, "batch_api", batcher != nil)
	if batcher != nil {
		return p.replayBatched(ctx, log, j, batcher, src, enr, groups, req, res)
	}
	for n, units := range groups {
		keep, filter, err := p.replayKeys(ctx, src, tgt, spec, units, req.OnlyStatus)
		if err != nil {
			return res, err
		}
		if keep.len() == 0 {
			continue
		}
		var done replayCommit
		err = retry.Do(ctx, p.conflictBackoff(), func(ctx context.Context) error {
			if tgt, err = p.cat.LoadTable(ctx, spec.Target.Table); err != nil {
				return err
			}
			done.counts, done.read = enrich.Counts{}, 0
			batches := p.replayBatches(ctx, src, enr, units, keep, func(c enrich.Counts, n int64) {
				done.counts.Add(c)
				done.read += n
			})
			var out *table.Table
			out, done.written, done.deleted, err = storage.ReplaceRows(ctx, tgt, &storage.Replacement{
				Job: spec.Name, SourceTable: spec.Source.Table, SpecVersion: spec.Version,
				From: req.From, To: req.To, Filter: filter, Schema: enr.Schema(), Batches: batches,
			})
			if errors.Is(err, storage.ErrConflict) {
				log.Warn("target commit conflict during replay, trying again", "err", err)
				return retry.RetryableError(err)
			}
			if err == nil {
				tgt = p.expire(ctx, log, out)
			}
			return err
		})
		if err != nil {
			return res, fmt.Errorf("replay commit %d of %d: %w", n+1, len(groups), err)
		}
		res.addCommit(log, req, n+1, len(groups), done)
	}
	return res, nil
}

// replayCommit is what one replay commit read and wrote.
type replayCommit struct {
	counts                 enrich.Counts
	read, written, deleted int64
}

// addCommit tallies the commit-th of commits replay commits in res, logs
// it (with attrs after the common ones) and reports it to req.OnCommit.
func (res *ReplayResult) addCommit(log *slog.Logger, req ReplayRequest, commit, commits int, done replayCommit, attrs ...any) {
	res.Commits++
	res.RowsRead += done.read
	res.RowsDeleted += done.deleted
	res.Counts.Add(done.counts)
	log.Info("replay committed", append([]any{"commit", commit, "commits", commits, "rows", done.written, "replaced", done.deleted}, attrs...)...)
	if req.OnCommit != nil {
		req.OnCommit(ReplayProgress{Commit: commit, Commits: commits, Rows: done.written})
	}
}

// replayKeys finds the keys of a commit group's rows to replay and the
// filter of their target rows.
func (p *Processor) replayKeys(ctx context.Context, src, tgt *table.Table, spec *enrich.Spec, units []storage.Unit, only []enrich.Status) (*keySet, iceberg.BooleanExpression, error) {
	ids := snapshotIDs(units)
	filter := iceberg.IsIn(iceberg.Reference(enrich.ColSourceSnapshotID), ids...)
	// Only the target rows of keys these snapshots appended are
	// replaced: rows that a resync wrote under one of these snapshot
	// ids (it tags what it reads with the snapshot it read) are not
	// rows this replay writes again, so it must not delete them.
	keep, err := p.sourceKeys(ctx, src, spec.Source.Key, units)
	if err != nil {
		return nil, nil, fmt.Errorf("replay: %w", err)
	}
	if len(only) > 0 {
		statuses := make([]string, len(only))
		for k, s := range only {
			statuses[k] = string(s)
		}
		failing, err := scanKeys(ctx, tgt, spec.Source.Key, iceberg.NewAnd(filter, iceberg.IsIn(iceberg.Reference(enrich.ColStatus), statuses...)))
		if err != nil {
			return nil, nil, fmt.Errorf("replay: %w", err)
		}
		keep = keep.intersect(failing)
	}
	return keep, iceberg.NewAnd(filter, keep.in(spec.Source.Key)), nil
}

// replayBatches reads units (whole snapshots), keeps the rows whose key is
// in keep (all when nil), and enriches them.
func (p *Processor) replayBatches(ctx context.Context, src *table.Table, enr *enrich.Enricher, units []storage.Unit, keep *keySet, tally func(enrich.Counts, int64)) func(func(arrow.RecordBatch, error) bool) {
	ropts := storage.ReadOptions{BatchRows: p.opts.BatchRows, Concurrency: p.opts.ReadConcurrency}
	ctx = compute.WithAllocator(ctx, p.opts.Allocator)
	return func(yield func(arrow.RecordBatch, error) bool) {
		for _, snap := range bySnapshot(units) {
			for rec, err := range storage.ReadUnits(ctx, src, enr.Spec().Columns(), snap, ropts) {
				if err != nil {
					yield(nil, err)
					return
				}
				if keep != nil {
					// The projection keeps the table's column order: find
					// the key by name, not by its place in the spec.
					idx := rec.Schema().FieldIndices(enr.Spec().Source.Key)
					if len(idx) == 0 {
						rec.Release()
						yield(nil, fmt.Errorf("replay: key column %q is not in the source rows", enr.Spec().Source.Key))
						return
					}
					kept, err := keep.filter(ctx, rec, idx[0])
					rec.Release()
					if err != nil {
						yield(nil, err)
						return
					}
					rec = kept
				}
				if rec.NumRows() == 0 {
					rec.Release()
					continue
				}
				out, counts, err := enr.Enrich(ctx, rec, snap[0].SnapshotID)
				n := rec.NumRows()
				rec.Release()
				if err != nil {
					yield(nil, err)
					return
				}
				tally(counts, n)
				if !yield(out, nil) {
					return
				}
			}
		}
	}
}

func snapshotIDs(units []storage.Unit) []int64 {
	var ids []int64
	for _, u := range units {
		if len(ids) == 0 || ids[len(ids)-1] != u.SnapshotID {
			ids = append(ids, u.SnapshotID)
		}
	}
	return ids
}

// keySet holds the keys of the rows to replay: longs or strings, as the
// job's key column is, and null when a row to replay has a null key. Null
// matches null here, on both sides: the rows deleted and the rows written
// again are the same, so a replay never ends with fewer rows.
type keySet struct {
	ints map[int64]struct{}
	strs map[string]struct{}
	null bool
}

func (k *keySet) len() int {
	n := len(k.ints) + len(k.strs)
	if k.null {
		n++
	}
	return n
}

// in is the Iceberg predicate "column is one of the keys" (or null, when
// null is one of them: SQL's IN never matches a null).
func (k *keySet) in(column string) iceberg.BooleanExpression {
	ref := iceberg.Reference(column)
	switch {
	case !k.null:
		return k.values(ref)
	case len(k.ints)+len(k.strs) == 0:
		return iceberg.IsNull(ref)
	}
	return iceberg.NewOr(k.values(ref), iceberg.IsNull(ref))
}

// values is "column is one of the non-null keys".
func (k *keySet) values(ref iceberg.UnboundTerm) iceberg.BooleanExpression {
	if k.strs != nil {
		vals := make([]string, 0, len(k.strs))
		for s := range k.strs {
			vals = append(vals, s)
		}
		slices.Sort(vals)
		return iceberg.IsIn(ref, vals...)
	}
	vals := make([]int64, 0, len(k.ints))
	for v := range k.ints {
		vals = append(vals, v)
	}
	slices.Sort(vals)
	return iceberg.IsIn(ref, vals...)
}

func (k *keySet) has(c storage.KeyColumn, i int) bool {
	if c.Arr.IsNull(i) {
		return k.null
	}
	if c.Ints != nil {
		_, ok := k.ints[c.Ints(i)]
		return ok
	}
	_, ok := k.strs[c.Strs(i)]
	return ok
}

func (k *keySet) add(c storage.KeyColumn, i int) {
	if c.Arr.IsNull(i) {
		k.null = true
		return
	}
	if c.Ints != nil {
		if k.ints == nil {
			k.ints = map[int64]struct{}{}
		}
		k.ints[c.Ints(i)] = struct{}{}
		return
	}
	if k.strs == nil {
		k.strs = map[string]struct{}{}
	}
	k.strs[strings.Clone(c.Strs(i))] = struct{}{} // not the Arrow buffer's memory
}

// filter keeps the rows of rec whose column col holds a key of the set.
func (k *keySet) filter(ctx context.Context, rec arrow.RecordBatch, col int) (arrow.RecordBatch, error) {
	keys, err := storage.NewKeyColumn(rec.Column(col))
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	b := array.NewBooleanBuilder(compute.GetAllocator(ctx))
	defer b.Release()
	n := int(rec.NumRows())
	b.Reserve(n)
	for i := range n {
		b.UnsafeAppend(k.has(keys, i))
	}
	mask := b.NewArray()
	defer mask.Release()
	return compute.FilterRecordBatch(ctx, rec, mask, compute.DefaultFilterOptions())
}

// sourceKeys collects the keys of the rows units appended to the source
// (at most a commit group's rows: about ChunkRows).
func (p *Processor) sourceKeys(ctx context.Context, src *table.Table, key string, units []storage.Unit) (*keySet, error) {
	k := &keySet{}
	ropts := storage.ReadOptions{BatchRows: p.opts.BatchRows, Concurrency: p.opts.ReadConcurrency}
	for _, snap := range bySnapshot(units) {
		for rec, err := range storage.ReadUnits(ctx, src, []string{key}, snap, ropts) {
			if err != nil {
				return nil, err
			}
			keys, err := storage.NewKeyColumn(rec.Column(0))
			if err == nil {
				for i := range int(rec.NumRows()) {
					k.add(keys, i)
				}
			}
			rec.Release()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
		}
	}
	return k, nil
}

// intersect returns the keys in both k and o.
func (k *keySet) intersect(o *keySet) *keySet {
	out := &keySet{null: k.null && o.null}
	for v := range k.ints {
		if _, ok := o.ints[v]; ok {
			if out.ints == nil {
				out.ints = map[int64]struct{}{}
			}
			out.ints[v] = struct{}{}
		}
	}
	for v := range k.strs {
		if _, ok := o.strs[v]; ok {
			if out.strs == nil {
				out.strs = map[string]struct{}{}
			}
			out.strs[v] = struct{}{}
		}
	}
	return out
}

// scanKeys collects the key column of the target rows filter matches.
func scanKeys(ctx context.Context, tgt *table.Table, key string, filter iceberg.BooleanExpression) (*keySet, error) {
	k := &keySet{}
	for col, err := range storage.ScanColumn(ctx, tgt, key, filter) {
		if err != nil {
			return nil, err
		}
		keys, err := storage.NewKeyColumn(col)
		if err == nil {
			for i := range col.Len() {
				k.add(keys, i)
			}
		}
		col.Release()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
	}
	return k, nil
}
