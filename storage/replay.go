package storage

import (
	"context"
	"fmt"
	"iter"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
)

// Snapshot summary properties of a replay commit, next to the job's
// watermark (which a replay carries forward unchanged).
const (
	PropReplayFrom = "enricher.replay-from-snapshot-id"
	PropReplayTo   = "enricher.replay-to-snapshot-id"
)

// Replacement is one atomic overwrite of a target table: the target rows
// that Filter matches are deleted and the rows of Batches appended, in one
// snapshot, so that readers see either the old rows or the new ones.
type Replacement struct {
	Job, SourceTable, SpecVersion string
	// From and To are the source snapshot range the rows come from, for
	// the snapshot summary.
	From, To int64
	// Filter selects the target rows to replace.
	Filter iceberg.BooleanExpression
	// Schema is the Arrow schema of the batches.
	Schema *arrow.Schema
	// Batches are the new rows; each one is released once written.
	Batches iter.Seq2[arrow.RecordBatch, error]
	// SetProps and RemoveProps change table properties in the same commit
	// (a replay's batch record).
	SetProps    map[string]string
	RemoveProps []string
}

// ReplaceRows commits r to tgt on the condition that tgt's main branch is
// still where tgt says it is (else ErrConflict, nothing committed). The
// commit carries the job's current watermark forward (summary and
// property), so a replay never moves or hides it. It returns the table as committed, the rows written
// and the rows deleted.
func ReplaceRows(ctx context.Context, tgt *table.Table, r *Replacement) (*table.Table, int64, int64, error) {
	name := tableName(tgt)
	wm, err := ReadWatermark(tgt, r.Job, r.SourceTable)
	if err != nil {
		return nil, 0, 0, err
	}
	props := (&Commit{Job: r.Job, SourceTable: r.SourceTable, SpecVersion: wm.SpecVersion, After: wm.Cursor}).Props()
	props[PropReplayFrom] = strconv.FormatInt(r.From, 10)
	props[PropReplayTo] = strconv.FormatInt(r.To, 10)

	txn := tgt.NewTransaction()
	if err := txn.AssertRefSnapshotID(table.MainBranch); err != nil {
		return nil, 0, 0, fmt.Errorf("table %s: pin branch: %w", name, err)
	}
	var rows int64
	rdr := array.ReaderFromIter(r.Schema, counting(r.Batches, &rows))
	defer rdr.Release()
	if err := txn.Overwrite(ctx, rdr, props, table.WithOverwriteFilter(r.Filter)); err != nil {
		return nil, 0, 0, fmt.Errorf("table %s: %w", name, writeFailed("overwrite", tgt, err))
	}
	// The watermark property moves to this commit too, unchanged, so that
	// it keeps naming a snapshot on the main branch.
	if err := stageWatermark(tgt, txn, r.Job, r.SourceTable, Watermark{Cursor: wm.Cursor, SpecVersion: wm.SpecVersion}); err != nil {
		return nil, 0, 0, fmt.Errorf("table %s: %w", name, err)
	}
	if err := (&Commit{SetProps: r.SetProps, RemoveProps: r.RemoveProps}).stageProps(txn); err != nil {
		return nil, 0, 0, fmt.Errorf("table %s: %w", name, err)
	}
	out, err := txn.Commit(ctx)
	if err != nil {
		if isConflict(err) {
			return nil, 0, 0, fmt.Errorf("table %s: commit: %w: %w", name, ErrConflict, err)
		}
		return nil, 0, 0, fmt.Errorf("table %s: commit: %w", name, err)
	}
	// Copy-on-write rewrites whole files: deleted-records counts every row
	// of a rewritten file and added-records the rows it kept besides ours.
	var deleted int64
	if s := out.CurrentSnapshot(); s != nil && s.Summary != nil {
		d, _ := strconv.ParseInt(s.Summary.Properties["deleted-records"], 10, 64)
		a, _ := strconv.ParseInt(s.Summary.Properties["added-records"], 10, 64)
		deleted = d - (a - rows)
	}
	return out, rows, deleted, nil
}

// ScanColumn streams one column of the rows of tbl that filter matches,
// for finding the keys of rows to replay. Each array is the caller's to
// Release, also the one it stops the loop on.
func ScanColumn(ctx context.Context, tbl *table.Table, column string, filter iceberg.BooleanExpression) iter.Seq2[arrow.Array, error] {
	return func(yield func(arrow.Array, error) bool) {
		_, recs, err := tbl.Scan(table.WithSelectedFields(column), table.WithRowFilter(filter)).ToArrowRecords(ctx)
		if err != nil {
			yield(nil, fmt.Errorf("table %s: scan %s: %w", tableName(tbl), column, err))
			return
		}
		for rec, err := range recs {
			if err != nil {
				yield(nil, fmt.Errorf("table %s: scan %s: %w", tableName(tbl), column, err))
				return
			}
			col := rec.Column(0)
			col.Retain()
			rec.Release()
			if !yield(col, nil) { // the caller owns col either way
				return
			}
		}
	}
}
