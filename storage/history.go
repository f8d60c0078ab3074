package storage

import (
	"errors"
	"fmt"
	"time"

	"github.com/apache/iceberg-go/table"
)

// ErrHistoryExpired is returned (wrapped, in a *HistoryError that also
// matches ErrNotAncestor) when a source table's history no longer reaches
// a cursor because snapshot expiry removed it: the cursor's snapshot is
// gone and the current snapshot's ancestry is cut (its oldest held
// ancestor names a parent the table no longer has). For the zero Cursor
// (nothing read yet) any cut is expiry: the rows of the expired snapshots
// can no longer be read incrementally. Incremental reads cannot catch up
// without skipping rows; a resync by key (FindMissingRows) can.
var ErrHistoryExpired = errors.New("source history expired past the watermark")

// HistoryError says why a source table's history does not reach a cursor.
// It matches ErrNotAncestor, as the plans of such cursors always failed,
// and ErrHistoryExpired when Expired is set.
type HistoryError struct {
	Table  string
	Cursor Cursor
	// Snapshot is the snapshot whose history was walked back (the current
	// one, or the one planned to); 0 when the table has none.
	Snapshot int64
	// Oldest is the oldest snapshot held of Snapshot's history and
	// OldestAt its commit time; Cut is its parent when expiry removed that
	// (0: Oldest is the table's first snapshot, the history is whole).
	Oldest   int64
	OldestAt time.Time
	Cut      int64
	// Held is set when the table still holds the cursor's snapshot but it
	// is on another line of history (a rollback, or a branch), or when the
	// history reaches it but the snapshot the cursor stands partway
	// through does not follow it there.
	Held bool
	// Expired is set when expiry cut the history before reaching the
	// cursor (see ErrHistoryExpired). When the history is whole and the
	// table never held the cursor's snapshot, the cursor names another
	// table's snapshot (a table dropped and created again, or a job
	// pointed at another table): Held and Expired are both false. Once the
	// history is cut the two cannot be told apart and expiry is reported.
	Expired bool

	partial bool // the cursor's snapshot is reached, its partial one is not after it
}

func (e *HistoryError) Error() string {
	switch {
	case e.Expired && e.Cursor.SnapshotID == 0:
		return fmt.Sprintf("table %s: %v: nothing is read yet but snapshot %d's history is cut at %d (committed %s; its parent %d expired), so the rows of the expired snapshots cannot be read incrementally",
			e.Table, ErrHistoryExpired, e.Snapshot, e.Oldest, e.OldestAt.Format(time.RFC3339), e.Cut)
	case e.Expired:
		return fmt.Sprintf("table %s: %v: watermark %s names snapshot %d, which the table no longer holds; snapshot %d's history is cut at %d (committed %s; its parent %d expired)",
			e.Table, ErrHistoryExpired, e.Cursor, e.Cursor.SnapshotID, e.Snapshot, e.Oldest, e.OldestAt.Format(time.RFC3339), e.Cut)
	case e.partial:
		return fmt.Sprintf("table %s: %v: watermark %s is partway through snapshot %d, which does not follow %d in snapshot %d's history",
			e.Table, ErrNotAncestor, e.Cursor, e.Cursor.PartialSnapshotID, e.Cursor.SnapshotID, e.Snapshot)
	case e.Held:
		return fmt.Sprintf("table %s: %v: watermark %s, snapshot %d (rolled back, or on another branch)",
			e.Table, ErrNotAncestor, e.Cursor, e.Snapshot)
	case e.Snapshot == 0:
		return fmt.Sprintf("table %s: %v: watermark %s, but the table has no snapshot: it is not the table the watermark was written for",
			e.Table, ErrNotAncestor, e.Cursor)
	default:
		return fmt.Sprintf("table %s: %v: watermark %s names snapshot %d, which was never in snapshot %d's history (whole back to the first snapshot %d): another table's snapshot",
			e.Table, ErrNotAncestor, e.Cursor, e.Cursor.SnapshotID, e.Snapshot, e.Oldest)
	}
}

func (e *HistoryError) Unwrap() []error {
	if e.Expired {
		return []error{ErrHistoryExpired, ErrNotAncestor}
	}
	return []error{ErrNotAncestor}
}

// CheckHistory reports whether src's history still reaches c: nil when
// c's snapshot is the current snapshot or one of its ancestors (and, for a
// cursor partway through a snapshot, that snapshot follows it there), or,
// for the zero Cursor, when no snapshot of the current history has been
// expired. Otherwise it returns a *HistoryError, matching
// ErrHistoryExpired when snapshot expiry is the cause. A table without
// snapshots reaches only the zero Cursor.
func CheckHistory(src *table.Table, c Cursor) error {
	var cur int64
	if s := src.CurrentSnapshot(); s != nil {
		cur = s.SnapshotID
	}
	if err := historyReaches(tableName(src), src.Metadata(), c, cur); err != nil {
		return err
	}
	return nil
}

// historyReaches is CheckHistory from snapshot of (0: none) instead of
// the current one.
func historyReaches(name string, meta table.Metadata, c Cursor, of int64) error {
	e := &HistoryError{Table: name, Cursor: c, Snapshot: of}
	reached := false
	var oldest *table.Snapshot
	for s := meta.SnapshotByID(of); s != nil; {
		if c.SnapshotID != 0 && s.SnapshotID == c.SnapshotID {
			reached = true
			break
		}
		oldest = s
		if s.ParentSnapshotID == nil {
			break
		}
		s = meta.SnapshotByID(*s.ParentSnapshotID)
	}
	if oldest != nil {
		e.Oldest, e.OldestAt = oldest.SnapshotID, time.UnixMilli(oldest.TimestampMs).UTC()
		if oldest.ParentSnapshotID != nil {
			e.Cut = *oldest.ParentSnapshotID
		}
	}
	switch {
	case c.SnapshotID == 0:
		// The start: every snapshot of the history must still be held.
		reached = e.Cut == 0
	case !reached && e.Cut == c.SnapshotID:
		// The cursor's own snapshot is expired, but its child is the
		// oldest held: every snapshot after the cursor is still there
		// (ingestion's expiry of a table a consumer has caught up with).
		reached = true
	}
	if !reached {
		e.Held = c.SnapshotID != 0 && meta.SnapshotByID(c.SnapshotID) != nil
		e.Expired = !e.Held && e.Cut != 0
		return e
	}
	if c.PartialSnapshotID == 0 {
		return nil
	}
	if p := meta.SnapshotByID(c.PartialSnapshotID); p != nil && parentOr(p) == c.SnapshotID && IsAncestor(meta, p.SnapshotID, of) {
		return nil
	}
	e.Held, e.partial = true, true
	return e
}
