package storage

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"iter"
	"math/bits"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// ErrNullKey is returned (wrapped) by FindMissingRows for a source row
// whose key is null, unless AntiJoinOptions.NullKeys is NullKeysSkip: a
// null key matches no target row, so a resync would enrich that row again
// every time it ran.
var ErrNullKey = errors.New("null key")

// NullKeys says what FindMissingRows does with source rows whose key is
// null.
type NullKeys int

const (
	// NullKeysRefuse fails with ErrNullKey before any row is yielded.
	NullKeysRefuse NullKeys = iota
	// NullKeysSkip passes over them (never yielded), counting them in
	// AntiJoinStats.NullKeys.
	NullKeysSkip
)

// AntiJoinPhase names a phase of FindMissingRows, for progress reports.
type AntiJoinPhase string

// Phases of FindMissingRows, in order.
const (
	PhaseTargetKeys AntiJoinPhase = "target-keys" // reading the target's keys
	PhaseSourceKeys AntiJoinPhase = "source-keys" // reading the source's keys
	PhaseJoin       AntiJoinPhase = "join"        // joining spilled partitions
)

// DefaultAntiJoinMemory is AntiJoinOptions.MemoryBytes when unset.
const DefaultAntiJoinMemory = 64 << 20

// minAntiJoinMemory is the smallest budget accepted.
const minAntiJoinMemory = 4 << 10

// AntiJoinOptions say what FindMissingRows joins and how.
type AntiJoinOptions struct {
	// Key is the source's key column (the job's source.key): long, int or
	// string. TargetKey is the target's, Key when empty; both must hold
	// keys of one kind (longs, or strings).
	Key, TargetKey string
	// TargetFilter, when set, limits the target rows whose keys count (for
	// a target shared by several writers); nil means every row.
	TargetFilter iceberg.BooleanExpression
	// Columns are the source columns of the batches yielded (the job's
	// columns); they need not include Key.
	Columns []string
	// MemoryBytes bounds the memory of the join itself: half for the keys
	// of one partition held at once, half for spill-file buffers
	// (DefaultAntiJoinMemory when 0, at least 4 KiB). Scanned batches and
	// the set of missing rows (at most one bit per source row) come on top.
	MemoryBytes int64
	// TempDir is where spill files go (os.TempDir when empty), in a
	// folder of their own that FindMissingRows removes before it returns.
	TempDir string
	// NullKeys says what to do with source rows whose key is null.
	NullKeys NullKeys
	// Read tunes the scans; Read.BatchRows is also the rows the yielded
	// batches are gathered up to (8192 when 0).
	Read ReadOptions
	// Progress, when set, is called at the start of each phase (PhaseJoin
	// only when keys were spilled), after every batch of keys read and
	// after every partition joined, on the caller's goroutine.
	Progress func(AntiJoinPhase, AntiJoinStats)
}

// AntiJoinStats count what FindMissingRows did.
type AntiJoinStats struct {
	// SourceSnapshotID is the source snapshot whose rows were read (0: the
	// source has none). Rows enriched from it bring the job up to it.
	SourceSnapshotID int64
	// SourceRows are the source rows whose keys were read; NullKeys those
	// of them whose key is null (skipped).
	SourceRows, NullKeys int64
	// TargetKeys are the non-null keys read from the target, TargetNullKeys
	// the target rows whose key is null (they match nothing).
	TargetKeys, TargetNullKeys int64
	// MissingRows are the source rows whose key has no target row: the
	// rows MissingRows.Batches yields.
	MissingRows int64
	// Partitions are the parts the keys were joined in, one at a time (1:
	// the target's keys fitted in memory, nothing was spilled).
	Partitions int
	// SpillBytes are the bytes written to spill files (a partition split
	// again is written again).
	SpillBytes int64
	// PeakKeyBytes is the largest set of target keys held at once;
	// MissingSetBytes the set of missing rows.
	PeakKeyBytes, MissingSetBytes int64
	// Files are the source's data files, FilesToRead those Batches reads
	// (all when some carry delete files: row positions are then only known
	// by reading).
	Files, FilesToRead int
}

// MissingRows are the rows of a source snapshot whose key has no row in a
// target table, found by FindMissingRows.
type MissingRows struct {
	src     *table.Table
	columns []string
	read    ReadOptions
	schema  *arrow.Schema
	tasks   []table.FileScanTask
	// starts[i] is the position of task i's first row, starts[len(tasks)]
	// the row count; nil when tasks carry deletes (then rows are counted
	// as they come).
	starts []int64
	rows   *rowSet
	stats  AntiJoinStats
}

// Stats are the counts of the join.
func (m *MissingRows) Stats() AntiJoinStats { return m.stats }

// Schema is the Arrow schema of the batches Batches yields.
func (m *MissingRows) Schema() *arrow.Schema { return m.schema }

// FindMissingRows finds the rows of src's current snapshot whose key has
// no row in tgt's current snapshot (tgt nil: a target not made yet), an
// anti-join by key in bounded memory whatever the sizes of the tables:
//
//  1. The target's keys are read into an exact in-memory set; if it grows
//     past half of opts.MemoryBytes, they go instead to partition files
//     by hash (a power of two, at most 256, sized from the target's row
//     count).
//  2. The source's keys are read, each with its row position in the
//     snapshot (its data files in planning order, rows in file order): if
//     nothing was spilled, each is looked up in the set at once; else it
//     goes to its partition's file.
//  3. Partition by partition, the target's keys are loaded into a set and
//     the source's streamed past it (a partition too big for the budget is
//     split again by further hash bits, up to 2^40 parts).
//
// Keys compare exactly (a long by value, a string byte for byte), so no
// row is lost to a hash collision. What comes out is the set of missing
// row positions, a bitmap; Batches reads those rows. Spill files are gone
// when FindMissingRows returns, whatever it returns.
//
// Every source row whose key is missing is yielded once, duplicate keys
// included (each such row has its own target row to get). Rows with a
// null key are refused (ErrNullKey) or skipped, as opts.NullKeys says.
// The tables are the snapshots the handles hold: rows committed to the
// target after it was loaded are not seen.
func FindMissingRows(ctx context.Context, src, tgt *table.Table, opts AntiJoinOptions) (res *MissingRows, err error) {
	if opts.Key == "" {
		return nil, errors.New("anti-join: no key column")
	}
	if opts.TargetKey == "" {
		opts.TargetKey = opts.Key
	}
	if len(opts.Columns) == 0 {
		return nil, errors.New("anti-join: no columns to read")
	}
	if opts.MemoryBytes == 0 {
		opts.MemoryBytes = DefaultAntiJoinMemory
	}
	if opts.MemoryBytes < minAntiJoinMemory {
		return nil, fmt.Errorf("anti-join: memory budget of %d bytes: want at least %d", opts.MemoryBytes, minAntiJoinMemory)
	}
	schema, err := ProjectedSchema(src, opts.Columns)
	if err != nil {
		return nil, fmt.Errorf("anti-join: %w", err)
	}
	kind, err := keyKindIn(src, opts.Key)
	if err != nil {
		return nil, err
	}
	hasTarget := tgt != nil && tgt.CurrentSnapshot() != nil
	if hasTarget {
		tkind, err := keyKindIn(tgt, opts.TargetKey)
		if err != nil {
			return nil, err
		}
		if tkind != kind {
			return nil, fmt.Errorf("anti-join: source key %s holds %s keys, target key %s %s keys", opts.Key, kind, opts.TargetKey, tkind)
		}
	}

	half := opts.MemoryBytes / 2
	j := &joiner{
		opts: opts, kind: kind, seed: maphash.MakeSeed(), setBudget: half, writeBudget: half,
		spill: &spiller{parent: opts.TempDir}, rows: &rowSet{},
	}
	defer func() {
		if cerr := j.spill.cleanup(); cerr != nil {
			res, err = nil, errors.Join(err, fmt.Errorf("anti-join: %w", cerr))
		}
	}()
	m := &MissingRows{src: src, columns: opts.Columns, read: opts.Read, schema: schema, rows: j.rows}
	if s := src.CurrentSnapshot(); s != nil {
		j.stats.SourceSnapshotID = s.SnapshotID
		if m.tasks, err = src.Scan(table.WithSelectedFields(opts.Key)).PlanFiles(ctx); err != nil {
			return nil, fmt.Errorf("anti-join: table %s: plan files: %w", tableName(src), err)
		}
		m.starts = rowStarts(m.tasks)
	}
	j.stats.Files = len(m.tasks)

	j.progress(PhaseTargetKeys)
	if hasTarget {
		if err := j.targetKeys(ctx, tgt); err != nil {
			return nil, fmt.Errorf("anti-join: target %s: %w", tableName(tgt), err)
		}
	}
	j.progress(PhaseSourceKeys)
	if err := j.sourceKeys(ctx, src, m); err != nil {
		return nil, fmt.Errorf("anti-join: source %s: %w", tableName(src), err)
	}
	if j.tparts != nil {
		j.progress(PhaseJoin)
		for p := range j.tparts {
			if err := j.joinPart(ctx, 1, j.tparts[p], j.sparts[p]); err != nil {
				return nil, fmt.Errorf("anti-join: %w", err)
			}
		}
	} else {
		j.stats.Partitions = 1
	}
	j.stats.MissingRows = j.rows.n
	j.stats.MissingSetBytes = j.rows.bytes()
	j.stats.SpillBytes = j.spill.written
	j.stats.FilesToRead = len(m.tasks)
	if m.starts != nil {
		j.stats.FilesToRead = 0
		for i := range m.tasks {
			if j.rows.anyIn(m.starts[i], m.starts[i+1]) {
				j.stats.FilesToRead++
			}
		}
	}
	m.stats = j.stats
	return m, nil
}

// keyKindIn is the kind of keys column key of tbl holds.
func keyKindIn(tbl *table.Table, key string) (keyKind, error) {
	sc, err := ProjectedSchema(tbl, []string{key})
	if err != nil {
		return 0, fmt.Errorf("anti-join: key: %w", err)
	}
	k, err := keyKindOf(sc.Field(0).Type)
	if err != nil {
		return 0, fmt.Errorf("anti-join: table %s: %s: %w", tableName(tbl), key, err)
	}
	return k, nil
}

// rowStarts are the positions of the first row of each task and, last,
// the row count, from the data files' record counts; nil when a task
// carries delete files (its rows are then fewer than its file's).
func rowStarts(tasks []table.FileScanTask) []int64 {
	starts := make([]int64, len(tasks)+1)
	for i, t := range tasks {
		if len(t.DeleteFiles)+len(t.EqualityDeleteFiles)+len(t.DeletionVectorFiles) > 0 {
			return nil
		}
		starts[i+1] = starts[i] + t.File.Count()
	}
	return starts
}

// joiner is the state of one FindMissingRows.
type joiner struct {
	opts                   AntiJoinOptions
	kind                   keyKind
	seed                   maphash.Seed
	setBudget, writeBudget int64
	spill                  *spiller
	stats                  AntiJoinStats

	set            *keySet      // the target's keys, while they fit
	tparts, sparts []*spillFile // partitions of the target's and source's keys, once spilled
	rows           *rowSet      // the missing rows
}

func (j *joiner) progress(phase AntiJoinPhase) {
	if j.opts.Progress != nil {
		j.stats.SpillBytes = j.spill.written
		j.opts.Progress(phase, j.stats)
	}
}

// maxLevels is how many times keys are partitioned, 8 hash bits each.
const maxLevels = 5

// part is the partition of hash h among n (a power of two) at level.
func part(h uint64, level, n int) int { return int(h>>(8*level)) & (n - 1) }

// fanout is how many partitions (a power of two, 2 to 256) hold keys of
// est bytes within the set budget, with a quarter to spare.
func (j *joiner) fanout(est int64) int {
	n := (est + est/4) / j.setBudget
	return 1 << min(max(bits.Len64(uint64(n)), 1), 8)
}

// partitions makes n spill files whose buffers share the write budget.
func (j *joiner) partitions(n int, rows bool) ([]*spillFile, error) {
	j.spill.bufSize = int(min(max(j.writeBudget/int64(n), 512), 64<<10))
	return j.spill.createN(n, rows)
}

func (j *joiner) readBuf() int { return int(min(max(j.writeBudget/2, 512), 64<<10)) }

// scanKeys reads column key of tasks, handing each batch's keys to f.
func scanKeys(ctx context.Context, tbl *table.Table, key string, filter iceberg.BooleanExpression, kind keyKind, read ReadOptions, tasks []table.FileScanTask, f func(keyCol) error) error {
	opts := []table.ScanOption{table.WithSelectedFields(key),
		table.WithArrowBatchSize(read.BatchRows), table.WithMaxConcurrency(max(1, read.Concurrency))}
	if filter != nil {
		opts = append(opts, table.WithRowFilter(filter))
	}
	scan := tbl.Scan(opts...)
	if tasks == nil {
		var err error
		if tasks, err = scan.PlanFiles(ctx); err != nil {
			return fmt.Errorf("plan files: %w", err)
		}
	}
	_, recs, err := scan.ReadTasks(ctx, tasks)
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	for rec, err := range recs {
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		kc, err := newKeyCol(rec.Column(0), kind)
		if err == nil {
			err = f(kc)
		}
		rec.Release()
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %s: %w", key, context.Cause(ctx))
		}
	}
	return nil
}

// targetKeys reads the target's keys into j.set, or into j.tparts once
// they outgrow the set budget.
func (j *joiner) targetKeys(ctx context.Context, tgt *table.Table) error {
	scan := tgt.Scan(table.WithSelectedFields(j.opts.TargetKey))
	if j.opts.TargetFilter != nil {
		scan = tgt.Scan(table.WithSelectedFields(j.opts.TargetKey), table.WithRowFilter(j.opts.TargetFilter))
	}
	tasks, err := scan.PlanFiles(ctx)
	if err != nil {
		return fmt.Errorf("plan files: %w", err)
	}
	var total int64 // the rows the files hold, for sizing partitions
	for _, t := range tasks {
		total += t.File.Count()
	}
	j.set = newKeySet(j.kind, j.seed, 0, 0)
	err = scanKeys(ctx, tgt, j.opts.TargetKey, j.opts.TargetFilter, j.kind, j.opts.Read, tasks, func(kc keyCol) error {
		for i := range kc.Arr.Len() {
			if kc.Arr.IsNull(i) {
				j.stats.TargetNullKeys++
				continue
			}
			j.stats.TargetKeys++
			if j.set != nil && !j.set.room(keyLen(kc, i), j.setBudget) {
				if err := j.spillTarget(total); err != nil {
					return err
				}
			}
			if err := j.addTarget(kc, i); err != nil {
				return err
			}
		}
		j.progress(PhaseTargetKeys)
		return nil
	})
	if err != nil {
		return err
	}
	if j.set != nil {
		j.set.seal()
		j.stats.PeakKeyBytes = j.set.bytes()
		return nil
	}
	for _, f := range j.tparts {
		if err := j.spill.finish(f); err != nil {
			return err
		}
	}
	return nil
}

// keyLen is the bytes of row i's key when it is a string (0 for a long).
func keyLen(kc keyCol, i int) int {
	if kc.Strs != nil {
		return len(kc.Strs(i))
	}
	return 0
}

func (j *joiner) addTarget(kc keyCol, i int) error {
	if kc.Ints != nil {
		h := mix64(uint64(kc.Ints(i)))
		if j.set != nil {
			j.set.addHash(h)
			return nil
		}
		return j.spill.writeHash(j.tparts[part(h, 0, len(j.tparts))], h, 0)
	}
	k := kc.Strs(i)
	if j.set != nil {
		return j.set.addString(k)
	}
	return j.spill.writeString(j.tparts[part(maphash.String(j.seed, k), 0, len(j.tparts))], unsafe.Slice(unsafe.StringData(k), len(k)), 0)
}

// spillTarget moves the keys of j.set to partition files, sized for the
// total rows the target's files hold at the bytes per key seen so far.
func (j *joiner) spillTarget(total int64) error {
	s := j.set
	j.stats.PeakKeyBytes = max(j.stats.PeakKeyBytes, s.bytes())
	per := s.entBytes() + 2 + int64(len(s.arena))/max(int64(s.len()), 1) // 2: the directory
	est := max(total, j.stats.TargetKeys) * per
	parts, err := j.partitions(j.fanout(est), false)
	if err != nil {
		return err
	}
	j.tparts, j.set = parts, nil
	for _, h := range s.hs {
		if err := j.spill.writeHash(parts[part(h, 0, len(parts))], h, 0); err != nil {
			return err
		}
	}
	for _, e := range s.ents {
		if err := j.spill.writeString(parts[part(e.h, 0, len(parts))], s.arena[e.off:e.off+e.n], 0); err != nil {
			return err
		}
	}
	return nil
}

// sourceKeys reads the source's keys with their row positions: looked up
// in j.set at once, or written to j.sparts when the target's keys were
// spilled.
func (j *joiner) sourceKeys(ctx context.Context, src *table.Table, m *MissingRows) error {
	if j.tparts != nil {
		parts, err := j.partitions(len(j.tparts), true)
		if err != nil {
			return err
		}
		j.sparts = parts
	}
	if j.set == nil && j.tparts == nil {
		j.set = newKeySet(j.kind, j.seed, 0, 0) // no target: an empty set
		j.set.seal()
	}
	var row int64
	err := scanKeys(ctx, src, j.opts.Key, nil, j.kind, j.opts.Read, m.tasks, func(kc keyCol) error {
		for i := range kc.Arr.Len() {
			if kc.Arr.IsNull(i) {
				if j.opts.NullKeys != NullKeysSkip {
					return fmt.Errorf("row %d of snapshot %d: %s is null: %w (a null key matches no target row, so it would be enriched again by every resync; skip such rows to go on)",
						row, j.stats.SourceSnapshotID, j.opts.Key, ErrNullKey)
				}
				j.stats.NullKeys++
				row++
				continue
			}
			if err := j.addSource(kc, i, row); err != nil {
				return err
			}
			row++
		}
		j.stats.SourceRows = row
		j.progress(PhaseSourceKeys)
		return nil
	})
	if err != nil {
		return err
	}
	j.stats.SourceRows = row
	if m.starts != nil && row != m.starts[len(m.tasks)] {
		return fmt.Errorf("snapshot %d: %d rows read, its data files hold %d: %w", j.stats.SourceSnapshotID, row, m.starts[len(m.tasks)], ErrRowCount)
	}
	for _, f := range j.sparts {
		if err := j.spill.finish(f); err != nil {
			return err
		}
	}
	return nil
}

func (j *joiner) addSource(kc keyCol, i int, row int64) error {
	if kc.Ints != nil {
		h := mix64(uint64(kc.Ints(i)))
		if j.sparts == nil {
			if !j.set.hasHash(h) {
				j.rows.add(row)
			}
			return nil
		}
		return j.spill.writeHash(j.sparts[part(h, 0, len(j.sparts))], h, row)
	}
	k := kc.Strs(i)
	h := maphash.String(j.seed, k)
	if j.sparts == nil {
		if !j.set.hasString(h, k) {
			j.rows.add(row)
		}
		return nil
	}
	return j.spill.writeString(j.sparts[part(h, 0, len(j.sparts))], unsafe.Slice(unsafe.StringData(k), len(k)), row)
}

// joinPart finds the missing rows of one partition: the source keys of s
// that are not among the target keys of t. A t too big for the set
// budget is split by the hash bits of level first, s with it.
func (j *joiner) joinPart(ctx context.Context, level int, t, s *spillFile) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	est := setBytes(j.kind, t.n, t.keyBytes)
	if s.n > 0 && est > j.setBudget && level < maxLevels {
		n := j.fanout(est)
		tc, err := j.split(ctx, t, level, n)
		if err != nil {
			return err
		}
		sc, err := j.split(ctx, s, level, n)
		if err != nil {
			return err
		}
		for i := range tc {
			if err := j.joinPart(ctx, level+1, tc[i], sc[i]); err != nil {
				return err
			}
		}
		return nil
	}
	if s.n > 0 {
		set, err := j.load(ctx, t)
		if err != nil {
			return err
		}
		j.stats.PeakKeyBytes = max(j.stats.PeakKeyBytes, set.bytes())
		if err := j.probe(ctx, set, s); err != nil {
			return err
		}
	}
	if err := j.spill.remove(t); err != nil {
		return err
	}
	if err := j.spill.remove(s); err != nil {
		return err
	}
	j.stats.Partitions++
	j.stats.MissingRows = j.rows.n
	j.progress(PhaseJoin)
	return nil
}

// split writes the records of f to n new files by the hash bits of level
// and removes f.
func (j *joiner) split(ctx context.Context, f *spillFile, level, n int) ([]*spillFile, error) {
	out, err := j.partitions(n, f.rows)
	if err != nil {
		return nil, err
	}
	err = j.each(ctx, f, func(h uint64, key []byte, row int64) error {
		o := out[part(h, level, n)]
		if j.kind == kindInt {
			return j.spill.writeHash(o, h, row)
		}
		return j.spill.writeString(o, key, row)
	})
	if err != nil {
		return nil, err
	}
	for _, o := range out {
		if err := j.spill.finish(o); err != nil {
			return nil, err
		}
	}
	if err := j.spill.remove(f); err != nil {
		return nil, err
	}
	return out, nil
}

// load reads the target keys of t into a sealed set.
func (j *joiner) load(ctx context.Context, t *spillFile) (*keySet, error) {
	set := newKeySet(j.kind, j.seed, t.n, t.keyBytes)
	err := j.each(ctx, t, func(h uint64, key []byte, _ int64) error {
		if j.kind == kindInt {
			set.addHash(h)
			return nil
		}
		return set.addBytes(key)
	})
	if err != nil {
		return nil, err
	}
	set.seal()
	return set, nil
}

// probe adds to j.rows the rows of s whose key is not in set.
func (j *joiner) probe(ctx context.Context, set *keySet, s *spillFile) error {
	return j.each(ctx, s, func(h uint64, key []byte, row int64) error {
		var found bool
		if j.kind == kindInt {
			found = set.hasHash(h)
		} else {
			found = set.hasString(h, unsafe.String(unsafe.SliceData(key), len(key)))
		}
		if !found {
			j.rows.add(row)
		}
		return nil
	})
}

// each calls f for every record of spill file sf, checking ctx now and
// then.
func (j *joiner) each(ctx context.Context, sf *spillFile, f func(h uint64, key []byte, row int64) error) (err error) {
	r, err := openSpill(sf, j.kind, j.seed, j.readBuf())
	if err != nil {
		return err
	}
	defer func() {
		if cerr := r.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	for i := 0; ; i++ {
		if i&0xfff == 0 {
			if err := ctx.Err(); err != nil {
				return context.Cause(ctx)
			}
		}
		h, key, row, err := r.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := f(h, key, row); err != nil {
			return err
		}
	}
}

// defaultGatherRows is how many rows Batches gathers into one batch when
// ReadOptions.BatchRows is 0.
const defaultGatherRows = 8192

// Batches streams the missing rows, projected to the columns asked for,
// in the source's row order, gathered into batches of about
// ReadOptions.BatchRows rows. Only the data files holding missing rows are
// read (every one when some carry delete files). Each batch is the
// caller's to Release; an error ends the stream and means the batches
// before it must not be used as complete (nothing is yielded twice).
// Batches may be called again: each call reads the files again. Arrow
// memory comes from compute.GetAllocator(ctx).
func (m *MissingRows) Batches(ctx context.Context) iter.Seq2[arrow.RecordBatch, error] {
	return func(yield func(arrow.RecordBatch, error) bool) {
		if m.stats.MissingRows == 0 {
			return
		}
		name := tableName(m.src)
		fail := func(err error) { yield(nil, fmt.Errorf("missing rows of %s: %w", name, err)) }

		// The files to read and the positions of their rows.
		type span struct{ start, n int64 }
		var tasks []table.FileScanTask
		var spans []span
		if m.starts == nil {
			tasks, spans = m.tasks, []span{{0, m.stats.SourceRows}}
		} else {
			for i, t := range m.tasks {
				if lo, hi := m.starts[i], m.starts[i+1]; m.rows.anyIn(lo, hi) {
					tasks = append(tasks, t)
					spans = append(spans, span{lo, hi - lo})
				}
			}
		}
		scan := m.src.Scan(table.WithSelectedFields(m.columns...),
			table.WithArrowBatchSize(m.read.BatchRows), table.WithMaxConcurrency(max(1, m.read.Concurrency)))
		_, recs, err := scan.ReadTasks(ctx, tasks)
		if err != nil {
			fail(err)
			return
		}
		mem := compute.GetAllocator(ctx)
		g := gatherer{rows: int64(m.read.BatchRows)}
		if g.rows <= 0 {
			g.rows = defaultGatherRows
		}
		defer g.release()
		si, pos := 0, int64(0) // the span of the next row, and its place in it
		var kept int64
		for rec, err := range recs {
			if err != nil {
				fail(err)
				return
			}
			n := int(rec.NumRows())
			mb := array.NewBooleanBuilder(mem)
			mb.Reserve(n)
			keep := 0
			for range n {
				if si == len(spans) {
					break
				}
				k := m.rows.has(spans[si].start + pos)
				mb.UnsafeAppend(k)
				if k {
					keep++
				}
				if pos++; pos == spans[si].n {
					si, pos = si+1, 0
				}
			}
			if mb.Len() < n {
				mb.Release()
				rec.Release()
				fail(fmt.Errorf("more rows than the key scan read: %w", ErrRowCount))
				return
			}
			var out arrow.RecordBatch
			switch keep {
			case 0:
			case n:
				out = rec
				out.Retain()
			default:
				mask := mb.NewBooleanArray()
				out, err = compute.FilterRecordBatch(ctx, rec, mask, compute.DefaultFilterOptions())
				mask.Release()
			}
			mb.Release()
			rec.Release()
			if err != nil {
				fail(fmt.Errorf("filter: %w", err))
				return
			}
			if out == nil {
				continue
			}
			kept += int64(keep)
			full, err := g.add(out, mem)
			if err != nil {
				fail(err)
				return
			}
			if full != nil && !yield(full, nil) {
				return
			}
		}
		if si != len(spans) {
			fail(fmt.Errorf("fewer rows than the key scan read: %w", ErrRowCount))
			return
		}
		if kept != m.stats.MissingRows {
			fail(fmt.Errorf("%d missing rows read, %d found", kept, m.stats.MissingRows))
			return
		}
		if last, err := g.flush(mem); err != nil {
			fail(err)
		} else if last != nil {
			yield(last, nil)
		}
	}
}

// gatherer gathers small batches into one of about rows rows.
type gatherer struct {
	rows    int64
	pending []arrow.RecordBatch
	n       int64
}

// add takes rec; it returns a batch once rows are gathered.
func (g *gatherer) add(rec arrow.RecordBatch, mem memory.Allocator) (arrow.RecordBatch, error) {
	g.pending = append(g.pending, rec)
	g.n += rec.NumRows()
	if g.n < g.rows {
		return nil, nil
	}
	return g.flush(mem)
}

// flush returns the gathered rows as one batch (nil when none).
func (g *gatherer) flush(mem memory.Allocator) (arrow.RecordBatch, error) {
	defer g.release()
	switch len(g.pending) {
	case 0:
		return nil, nil
	case 1:
		out := g.pending[0]
		out.Retain()
		return out, nil
	}
	sc := g.pending[0].Schema()
	cols := make([]arrow.Array, sc.NumFields())
	defer func() {
		for _, c := range cols {
			if c != nil {
				c.Release()
			}
		}
	}()
	parts := make([]arrow.Array, len(g.pending))
	for c := range cols {
		for i, p := range g.pending {
			parts[i] = p.Column(c)
		}
		col, err := array.Concatenate(parts, mem)
		if err != nil {
			return nil, fmt.Errorf("gather column %s: %w", sc.Field(c).Name, err)
		}
		cols[c] = col
	}
	return array.NewRecordBatch(sc, cols, g.n), nil
}

func (g *gatherer) release() {
	for _, p := range g.pending {
		p.Release()
	}
	g.pending, g.n = g.pending[:0], 0
}
