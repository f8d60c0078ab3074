package storage_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/storage"
)

// rowsOf is one batch of n rows for the committer's table, ids from first.
func (c *committer) rowsOf(first int64, n int) (*arrow.Schema, func(yield func(arrow.RecordBatch, error) bool)) {
	b := array.NewRecordBuilder(memory.DefaultAllocator, c.schema)
	defer b.Release()
	for i := range int64(n) {
		b.Field(0).(*array.Int64Builder).Append(first + i)
		b.Field(1).(*array.StringBuilder).Append("neutral")
	}
	rec := b.NewRecordBatch()
	return c.schema, func(yield func(arrow.RecordBatch, error) bool) { yield(rec, nil) }
}

// commitAt appends rows with the watermark at cursor.
func (c *committer) commitAt(cursor storage.Cursor) {
	c.tb.Helper()
	sc, batches := c.rowsOf(cursor.SnapshotID*100, 2)
	out, _, err := storage.AppendChunk(c.tb.Context(), c.tgt, &storage.Commit{Job: lifeJob, SourceTable: lifeSrc,
		SpecVersion: "2", After: cursor, Schema: sc, Batches: batches})
	require.NoError(c.tb, err)
	c.tgt = out
}

// legacyCommitAt commits as an enricher from before the watermark
// property did: the watermark in the snapshot summary only.
func (c *committer) legacyCommitAt(cursor storage.Cursor) {
	c.tb.Helper()
	sc, batches := c.rowsOf(cursor.SnapshotID*100, 2)
	rdr := array.ReaderFromIter(sc, batches)
	defer rdr.Release()
	txn := c.tgt.NewTransaction()
	cm := storage.Commit{Job: lifeJob, SourceTable: lifeSrc, SpecVersion: "1", After: cursor}
	require.NoError(c.tb, txn.Append(c.tb.Context(), rdr, cm.Props()))
	out, err := txn.Commit(c.tb.Context())
	require.NoError(c.tb, err)
	c.tgt = out
}

// otherCommit is a commit that is not the job's: a manifest rewrite
// after an append of another writer.
func (c *committer) otherCommit() {
	c.tb.Helper()
	sc, batches := c.rowsOf(1<<40, 1)
	rdr := array.ReaderFromIter(sc, batches)
	defer rdr.Release()
	txn := c.tgt.NewTransaction()
	require.NoError(c.tb, txn.Append(c.tb.Context(), rdr, nil))
	out, err := txn.Commit(c.tb.Context())
	require.NoError(c.tb, err)
	c.tgt = out
}

// otherExpiry is an expiry to one snapshot by another process; the
// committer goes on from the table it leaves.
func (c *committer) otherExpiry() {
	c.tb.Helper()
	_, err := expireToOneOther(c.tb.Context(), c.tgt)
	require.NoError(c.tb, err)
	c.tgt, err = c.cat.LoadTable(c.tb.Context(), lifeTgt)
	require.NoError(c.tb, err)
}

func (c *committer) watermark() (storage.Watermark, error) {
	return storage.ReadWatermark(c.tgt, lifeJob, lifeSrc)
}

func TestWatermarkPropertyRecordsTheCommit(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, nil, false)
	at := storage.Cursor{SnapshotID: 7, PartialSnapshotID: 9, PartialFiles: 2, PartialRows: 5}
	c.commitAt(at)
	head := c.tgt.CurrentSnapshot()

	raw := c.tgt.Properties()[storage.WatermarkProperty(lifeJob)]
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(raw), &v), raw)
	assert.Equal(t, lifeSrc, v["source-table"])
	assert.InDelta(t, 1, v["format"], 0)
	assert.Equal(t, "7", v["source-snapshot-id"], "64-bit ids as strings")
	assert.Equal(t, "9", v["partial-snapshot-id"])
	assert.Equal(t, "5", v["partial-rows"])
	assert.InDelta(t, 2, v["partial-files"], 0)
	assert.Equal(t, "2", v["spec-version"])

	wm, err := c.watermark()
	require.NoError(t, err)
	assert.Equal(t, storage.Watermark{Cursor: at, TargetSnapshotID: head.SnapshotID,
		CommittedAt: time.UnixMilli(head.TimestampMs).UTC(), SpecVersion: "2"}, wm)

	// A commit that lost to another writer and is committed again
	// (CommitFiles) records its watermark the same way.
	stale := c.tgt
	c.otherCommit()
	sc, batches := c.rowsOf(800, 2)
	next := storage.Cursor{SnapshotID: 8}
	cm := &storage.Commit{Job: lifeJob, SourceTable: lifeSrc, SpecVersion: "2", After: next, Schema: sc, Batches: batches}
	_, _, err = storage.AppendChunk(t.Context(), stale, cm)
	var ce *storage.ConflictError
	require.ErrorAs(t, err, &ce)
	c.tgt, err = storage.CommitFiles(t.Context(), c.tgt, cm, ce.Files, ce.Rows)
	require.NoError(t, err)
	wm, err = c.watermark()
	require.NoError(t, err)
	assert.Equal(t, next, wm.Cursor)
	assert.Equal(t, c.tgt.CurrentSnapshot().SnapshotID, wm.TargetSnapshotID)
}

// keepOne is a retention that lets ExpireSnapshots expire all but the
// head.
var keepOne = map[string]string{table.MinSnapshotsToKeepKey: "1"}

func TestWatermarkOfATableFromBeforeTheProperty(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, keepOne, false)
	for i := range int64(5) {
		c.legacyCommitAt(storage.Cursor{SnapshotID: i + 1})
	}
	c.otherCommit()
	wm, err := c.watermark()
	require.NoError(t, err)
	assert.Equal(t, storage.Cursor{SnapshotID: 5}, wm.Cursor, "found in the snapshot summaries")

	// Expiry by the enricher first writes the watermark to the property,
	// in the same commit: after it, nothing depends on the history.
	res, err := storage.ExpireSnapshots(t.Context(), c.tgt, storage.ExpireOptions{MinExpired: 1})
	require.NoError(t, err)
	require.NotNil(t, res.Table)
	assert.Equal(t, []string{lifeJob}, res.Migrated)
	c.tgt = res.Table
	c.otherExpiry()
	require.Len(t, c.tgt.Metadata().Snapshots(), 1)
	wm, err = c.watermark()
	require.NoError(t, err)
	assert.Equal(t, storage.Cursor{SnapshotID: 5}, wm.Cursor, "from the property")

	// Without the property, history cut by another process loses it, as
	// before.
	d := newCommitter(t, nil, false)
	d.legacyCommitAt(storage.Cursor{SnapshotID: 1})
	d.otherCommit()
	d.otherExpiry()
	_, err = d.watermark()
	require.ErrorIs(t, err, storage.ErrWatermarkLost)
}

// An enricher that does not keep the property (an older version still
// running during a deployment) commits after one that does: its newer
// snapshot summary wins over the property, and the next expiry moves the
// property to it.
func TestWatermarkOfANewerSummaryWins(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, keepOne, false)
	c.commitAt(storage.Cursor{SnapshotID: 1})
	c.legacyCommitAt(storage.Cursor{SnapshotID: 2})
	c.otherCommit()
	wm, err := c.watermark()
	require.NoError(t, err)
	assert.Equal(t, storage.Cursor{SnapshotID: 2}, wm.Cursor)

	res, err := storage.ExpireSnapshots(t.Context(), c.tgt, storage.ExpireOptions{MinExpired: 1})
	require.NoError(t, err)
	assert.Equal(t, []string{lifeJob}, res.Migrated)
	c.tgt = res.Table
	c.otherExpiry()
	wm, err = c.watermark()
	require.NoError(t, err)
	assert.Equal(t, storage.Cursor{SnapshotID: 2}, wm.Cursor)
}

// A rollback of the target to before the job's last commits takes the
// watermark back with it: the property of a commit that is no longer on
// the main branch is ignored.
func TestWatermarkAfterARollback(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, nil, false)
	c.commitAt(storage.Cursor{SnapshotID: 1})
	first := c.tgt.CurrentSnapshot().SnapshotID
	c.commitAt(storage.Cursor{SnapshotID: 2})
	txn := c.tgt.NewTransaction()
	require.NoError(t, txn.RollbackToSnapshot(first))
	out, err := txn.Commit(t.Context())
	require.NoError(t, err)
	c.tgt = out
	wm, err := c.watermark()
	require.NoError(t, err)
	assert.Equal(t, storage.Cursor{SnapshotID: 1}, wm.Cursor)
	assert.Equal(t, first, wm.TargetSnapshotID)
}

func TestWatermarkPropertyItCannotRead(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, nil, false)
	set := func(v string) {
		txn := c.tgt.NewTransaction()
		require.NoError(t, txn.SetProperties(iceberg.Properties{storage.WatermarkProperty(lifeJob): v}))
		out, err := txn.Commit(t.Context())
		require.NoError(t, err)
		c.tgt = out
	}
	set(`{"format":2,"source-table":"social.posts"}`)
	_, err := c.watermark()
	require.ErrorIs(t, err, storage.ErrWatermarkFormat)
	set(`{"format":1,"source-table":"social.posts","source-snapshot-id":"x"}`)
	_, err = c.watermark()
	require.ErrorContains(t, err, "enricher.watermark.sentiment")

	// A watermark for another source (the job moved) is not this one's.
	set(`{"format":1,"source-table":"social.old","source-snapshot-id":"4","target-snapshot-id":"0","committed-at":"2026-01-01T00:00:00Z"}`)
	wm, err := c.watermark()
	require.NoError(t, err)
	assert.True(t, wm.IsZero())
}

// A replay carries the watermark forward in the property too.
func TestReplaceRowsKeepsTheWatermarkProperty(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, nil, false)
	c.commitAt(storage.Cursor{SnapshotID: 3})
	sc, batches := c.rowsOf(300, 2)
	out, written, _, err := storage.ReplaceRows(t.Context(), c.tgt, &storage.Replacement{Job: lifeJob, SourceTable: lifeSrc,
		From: 0, To: 3, Filter: iceberg.EqualTo(iceberg.Reference("post_id"), int64(300)), Schema: sc, Batches: batches})
	require.NoError(t, err)
	assert.Equal(t, int64(2), written)
	c.tgt = out
	c.otherCommit()
	c.otherExpiry()
	wm, err := c.watermark()
	require.NoError(t, err)
	assert.Equal(t, storage.Cursor{SnapshotID: 3}, wm.Cursor)
	assert.Equal(t, "2", wm.SpecVersion)
	assert.Equal(t, out.CurrentSnapshot().SnapshotID, wm.TargetSnapshotID, "the replay's commit")
	assert.Equal(t, table.OpAppend, c.tgt.CurrentSnapshot().Summary.Operation)
}
