package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/iceberg-go/table"
)

// ErrSnapshotNotFound is returned (wrapped) for a snapshot id the source
// table does not have (expired, or of another table).
var ErrSnapshotNotFound = errors.New("snapshot not found")

// ErrNotAncestor is returned (wrapped) when the watermark is not in the
// history of the requested snapshot, for example after a rollback.
var ErrNotAncestor = errors.New("watermark is not an ancestor of the snapshot")

// Cursor is a position in a source table's append history: every snapshot
// up to and including SnapshotID is done and, when PartialSnapshotID is set,
// so are the first PartialFiles data files (in path order) of that snapshot
// and the first PartialRows rows of the data file after them. The zero
// Cursor is the start of the history.
type Cursor struct {
	SnapshotID        int64 `json:"snapshot,omitempty"`
	PartialSnapshotID int64 `json:"partial_snapshot,omitempty"`
	PartialFiles      int   `json:"partial_files,omitempty"`
	PartialRows       int64 `json:"partial_rows,omitempty"`
}

// IsZero reports whether c is the start of the history.
func (c Cursor) IsZero() bool { return c == Cursor{} }

func (c Cursor) String() string {
	if c.PartialSnapshotID != 0 && c.PartialRows != 0 {
		return fmt.Sprintf("%d+%d files %d rows of %d", c.SnapshotID, c.PartialFiles, c.PartialRows, c.PartialSnapshotID)
	}
	if c.PartialSnapshotID != 0 {
		return fmt.Sprintf("%d+%d files of %d", c.SnapshotID, c.PartialFiles, c.PartialSnapshotID)
	}
	if c.SnapshotID == 0 {
		return "start"
	}
	return fmt.Sprint(c.SnapshotID)
}

// SnapshotInfo describes one source snapshot of a plan.
type SnapshotInfo struct {
	ID        int64
	Operation string
	// Files is the number of data files still to read from it (0 for a
	// snapshot that is not an append).
	Files int
	Rows  int64
	// AddedRecords and DeletedRecords are the snapshot summary's
	// added-records and deleted-records (0 when absent). For a snapshot
	// that is not an append, AddedRecords are rows the plan does not read:
	// see Plan.SkippedRows.
	AddedRecords, DeletedRecords int64
}

// Unit is one data file to read, or the rows of one that are left when a
// cursor stands partway through it.
type Unit struct {
	SnapshotID int64
	Task       table.FileScanTask
	// Skip is how many leading rows of the file are already done (read and
	// dropped by ReadUnits); Rows is how many are left to read.
	Skip, Rows int64
	// After is the cursor once this unit (and every unit before it) is done.
	After Cursor

	index  int   // the file's place in its snapshot (path order)
	parent int64 // the snapshot's parent (0: none)
}

// Within is the cursor once the first done rows of u's Rows (and every unit
// before it) are done: a finer watermark than After, for a chunk that ends
// inside a data file. Within(u.Rows) is u.After.
func (u Unit) Within(done int64) Cursor {
	if done >= u.Rows {
		return u.After
	}
	if u.Skip+done == 0 {
		if u.index == 0 {
			// Nothing of the snapshot is done yet: the end of the unit before.
			return Cursor{SnapshotID: u.parent}
		}
		return Cursor{SnapshotID: u.parent, PartialSnapshotID: u.SnapshotID, PartialFiles: u.index}
	}
	return Cursor{SnapshotID: u.parent, PartialSnapshotID: u.SnapshotID, PartialFiles: u.index, PartialRows: u.Skip + done}
}

// Plan is what an event asks of a source table: the appended data files
// between a cursor and a snapshot, in commit order.
type Plan struct {
	From, To  int64
	Start     Cursor
	Snapshots []SnapshotInfo // oldest first, appends and others
	Units     []Unit
	// Stale is set when To is already behind the cursor (a redelivered or
	// old event); UpToDate when To is the cursor itself.
	Stale, UpToDate bool

	// until, when set, is where a plan cut by Head ends.
	until *Cursor
}

// Rows is the number of rows the plan reads.
func (p *Plan) Rows() int64 {
	var n int64
	for _, u := range p.Units {
		n += u.Rows
	}
	return n
}

// Skipped lists the snapshots in the plan that are not appends.
func (p *Plan) Skipped() []SnapshotInfo {
	var out []SnapshotInfo
	for _, s := range p.Snapshots {
		if s.Operation != string(table.OpAppend) {
			out = append(out, s)
		}
	}
	return out
}

// SkippedRows is how many rows the snapshots of the plan that are not
// appends added (their added-records), which the plan does not read: at
// most that many source rows are not enriched (a copy-on-write overwrite
// or delete counts the rows it rewrote unchanged as well), and
// FindMissingRows finds exactly those. Replace snapshots (compactions)
// only rewrite rows already there and count none.
func (p *Plan) SkippedRows() int64 {
	var n int64
	for _, s := range p.Skipped() {
		if s.Operation != string(table.OpReplace) {
			n += s.AddedRecords
		}
	}
	return n
}

// End is the cursor once the whole plan is done.
func (p *Plan) End() Cursor {
	if p.until != nil {
		return *p.until
	}
	return Cursor{SnapshotID: p.To}
}

// Head is the plan of the first n rows of p: p itself when it has no
// more; otherwise a plan whose units end after n rows (the last one maybe
// inside a data file) and whose End is the cursor after them. Snapshots
// after the cut are left to the rest of p, which PlanAppends from Head's
// End plans. n must be positive.
func (p *Plan) Head(n int64) *Plan {
	if n >= p.Rows() || n <= 0 {
		return p
	}
	h := *p
	h.Units = nil
	var last Unit
	for _, u := range p.Units {
		if n == 0 {
			break
		}
		if u.Rows > n {
			u.After = u.Within(n)
			u.Rows = n
		}
		n -= u.Rows
		h.Units = append(h.Units, u)
		last = u
	}
	end := last.After
	h.until = &end
	// Keep the snapshots up to the one the cut falls in.
	for i, s := range p.Snapshots {
		if s.ID == last.SnapshotID {
			h.Snapshots = p.Snapshots[: i+1 : i+1]
			break
		}
	}
	return &h
}

// PlanAppends plans the data files that the append snapshots after cursor
// and up to snapshot to added to src. Snapshots that are not appends
// (overwrite, delete, replace) are listed but contribute no files. A to
// that the cursor has already passed yields a plan marked Stale; a to equal
// to the cursor one marked UpToDate. Both have no units. A cursor that
// to's history does not reach (and, for the zero Cursor, a history cut by
// snapshot expiry) fails with a *HistoryError: ErrNotAncestor, and
// ErrHistoryExpired when expiry is the cause.
func PlanAppends(ctx context.Context, src *table.Table, from Cursor, to int64) (*Plan, error) {
	meta := src.Metadata()
	name := tableName(src)
	if meta.SnapshotByID(to) == nil {
		return nil, fmt.Errorf("table %s: snapshot %d: %w", name, to, ErrSnapshotNotFound)
	}
	p := &Plan{From: from.SnapshotID, To: to, Start: from}
	switch {
	case to == from.SnapshotID && from.PartialSnapshotID == 0:
		p.UpToDate = true
		return p, nil
	case to == from.SnapshotID || (from.SnapshotID != 0 && IsAncestor(meta, to, from.SnapshotID)):
		p.Stale = true
		return p, nil
	}

	// The cursor must be in to's history, and from the start no snapshot
	// of it may be expired: reading on would skip rows (*HistoryError).
	if err := historyReaches(name, meta, from, to); err != nil {
		return nil, err
	}
	// Walk back from `to` to the cursor.
	var chain []*table.Snapshot
	for s := meta.SnapshotByID(to); s != nil && s.SnapshotID != from.SnapshotID; {
		chain = append(chain, s)
		if s.ParentSnapshotID == nil {
			break
		}
		s = meta.SnapshotByID(*s.ParentSnapshotID)
	}
	slices.Reverse(chain)

	for i, s := range chain {
		info := SnapshotInfo{ID: s.SnapshotID}
		if s.Summary != nil {
			info.Operation = string(s.Summary.Operation)
			var err error
			if info.AddedRecords, err = summaryInt(s.Summary.Properties, "added-records"); err != nil {
				return nil, fmt.Errorf("table %s: snapshot %d: %w", name, s.SnapshotID, err)
			}
			if info.DeletedRecords, err = summaryInt(s.Summary.Properties, "deleted-records"); err != nil {
				return nil, fmt.Errorf("table %s: snapshot %d: %w", name, s.SnapshotID, err)
			}
		}
		if info.Operation != string(table.OpAppend) {
			p.Snapshots = append(p.Snapshots, info)
			continue
		}
		scan := src.NewIncrementalAppendScan().ToSnapshot(s.SnapshotID)
		if s.ParentSnapshotID != nil {
			scan = scan.FromSnapshotExclusive(*s.ParentSnapshotID)
		} else {
			scan = scan.FromSnapshotInclusive(s.SnapshotID)
		}
		tasks, err := scan.PlanFiles(ctx)
		if err != nil {
			return nil, fmt.Errorf("table %s: plan files of snapshot %d: %w", name, s.SnapshotID, err)
		}
		slices.SortFunc(tasks, func(a, b table.FileScanTask) int {
			return cmp.Or(cmp.Compare(a.File.FilePath(), b.File.FilePath()), cmp.Compare(a.Start, b.Start))
		})
		skip, skipRows := 0, int64(0)
		if i == 0 && from.PartialSnapshotID == s.SnapshotID {
			skip, skipRows = min(from.PartialFiles, len(tasks)), from.PartialRows
			if skipRows < 0 || (skipRows > 0 && (skip == len(tasks) || skipRows >= tasks[skip].File.Count())) {
				return nil, fmt.Errorf("table %s: watermark %s is past the rows of snapshot %d's data files: %w",
					name, from, s.SnapshotID, ErrNotAncestor)
			}
		}
		for j := skip; j < len(tasks); j++ {
			u := Unit{SnapshotID: s.SnapshotID, Task: tasks[j], Rows: tasks[j].File.Count(), index: j, parent: parentOr(s)}
			if j == skip {
				u.Skip, u.Rows = skipRows, u.Rows-skipRows
			}
			if j == len(tasks)-1 {
				u.After = Cursor{SnapshotID: s.SnapshotID}
			} else {
				u.After = Cursor{SnapshotID: parentOr(s), PartialSnapshotID: s.SnapshotID, PartialFiles: j + 1}
			}
			p.Units = append(p.Units, u)
			info.Files++
			info.Rows += u.Rows
		}
		p.Snapshots = append(p.Snapshots, info)
	}
	if from.PartialSnapshotID != 0 && (len(chain) == 0 || chain[0].SnapshotID != from.PartialSnapshotID) {
		return nil, fmt.Errorf("table %s: watermark is partway through snapshot %d, which does not follow snapshot %d: %w",
			name, from.PartialSnapshotID, from.SnapshotID, ErrNotAncestor)
	}
	// A unit that completes its snapshot also completes every following
	// snapshot that has nothing to read, up to the next unit.
	next := to
	for i := len(p.Units) - 1; i >= 0; i-- {
		u := &p.Units[i]
		if u.After.PartialSnapshotID == 0 {
			u.After.SnapshotID = next
		}
		next = parentOr(meta.SnapshotByID(u.SnapshotID))
	}
	return p, nil
}

// summaryInt is a count of a snapshot summary, 0 when absent.
func summaryInt(props map[string]string, key string) (int64, error) {
	v, ok := props[key]
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("summary %s=%q: %w", key, v, err)
	}
	return n, nil
}

func parentOr(s *table.Snapshot) int64 {
	if s.ParentSnapshotID == nil {
		return 0
	}
	return *s.ParentSnapshotID
}

// IsAncestor reports whether snapshot ancestor is of itself or one of its
// ancestors in meta.
func IsAncestor(meta table.Metadata, ancestor, of int64) bool {
	for s := meta.SnapshotByID(of); s != nil; {
		if s.SnapshotID == ancestor {
			return true
		}
		if s.ParentSnapshotID == nil {
			return false
		}
		s = meta.SnapshotByID(*s.ParentSnapshotID)
	}
	return false
}

func tableName(t *table.Table) string {
	id := t.Identifier()
	out := ""
	for i, p := range id {
		if i > 0 {
			out += "."
		}
		out += p
	}
	return out
}

// ReadOptions tune how data files are read.
type ReadOptions struct {
	// BatchRows caps the rows of one Arrow batch (0: the table's setting).
	BatchRows int
	// Concurrency is how many files are decoded at once (0: one).
	Concurrency int
}

// ProjectedSchema is the Arrow schema of the batches ReadUnits yields for
// columns of src.
func ProjectedSchema(src *table.Table, columns []string) (*arrow.Schema, error) {
	sc, err := src.Scan(table.WithSelectedFields(columns...)).Projection()
	if err != nil {
		return nil, fmt.Errorf("table %s: project %v: %w", tableName(src), columns, err)
	}
	as, err := table.SchemaToArrowSchema(sc, nil, false, false)
	if err != nil {
		return nil, fmt.Errorf("table %s: arrow schema: %w", tableName(src), err)
	}
	return as, nil
}

// ErrRowCount is returned (wrapped) when a data file yields another number
// of rows than its manifest records: row positions in cursors would be
// wrong, so nothing is written.
var ErrRowCount = errors.New("data file row count differs from its manifest")

// ReadUnits streams the rows of units, which must all belong to one
// snapshot, as Arrow batches of the given columns: for each unit its Rows
// rows after the first Skip (the rest of its file, when a plan was cut by
// Head inside it, is read and dropped). Every batch yielded is the
// caller's to Release. Batches come in unit order.
func ReadUnits(ctx context.Context, src *table.Table, columns []string, units []Unit, opts ReadOptions) iter.Seq2[arrow.RecordBatch, error] {
	return func(yield func(arrow.RecordBatch, error) bool) {
		if len(units) == 0 {
			return
		}
		fail := func(err error) {
			yield(nil, fmt.Errorf("table %s: read snapshot %d: %w", tableName(src), units[0].SnapshotID, err))
		}
		tasks := make([]table.FileScanTask, len(units))
		for i, u := range units {
			tasks[i] = u.Task
		}
		scan := src.Scan(table.WithSelectedFields(columns...),
			table.WithArrowBatchSize(opts.BatchRows),
			table.WithMaxConcurrency(max(1, opts.Concurrency)))
		_, recs, err := scan.ReadTasks(ctx, tasks)
		if err != nil {
			fail(err)
			return
		}
		// The tasks come back in order, each file whole: pos is the row of
		// the current unit's file that the next batch starts at.
		i, pos := 0, int64(0)
		for rec, err := range recs {
			if err != nil {
				fail(err)
				return
			}
			n, off := rec.NumRows(), int64(0)
			for off < n {
				if i == len(units) {
					rec.Release()
					fail(fmt.Errorf("more rows than the files' %w", ErrRowCount))
					return
				}
				u := units[i]
				// The file yields total rows; the unit keeps [Skip, end).
				end := u.Skip + u.Rows
				total := max(end, u.Task.File.Count())
				take := min(n-off, total-pos)
				lo, hi := off+max(0, u.Skip-pos), off+max(0, min(take, end-pos)) // keep [lo, hi) of rec
				var out arrow.RecordBatch
				switch {
				case lo >= hi:
				case lo == 0 && hi == n:
					out = rec
					out.Retain()
				default:
					out = rec.NewSlice(lo, hi)
				}
				off += take
				if pos += take; pos == total {
					i, pos = i+1, 0
				}
				if out != nil && !yield(out, nil) {
					rec.Release()
					return
				}
			}
			rec.Release()
		}
		if i != len(units) {
			fail(fmt.Errorf("%s: %d rows, want %d: %w", units[i].Task.File.FilePath(), pos, max(units[i].Skip+units[i].Rows, units[i].Task.File.Count()), ErrRowCount))
		}
	}
}
