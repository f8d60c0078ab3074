package storage_test

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/storage"
)

func TestExpireSnapshotsWaitsForABatch(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, storage.TargetProperties(), false)
	for range storage.DefaultMinSnapshotsToKeep + storage.DefaultExpireBatch - 1 {
		c.commit()
	}
	loc := c.tgt.MetadataLocation()
	res, err := storage.ExpireSnapshots(t.Context(), c.tgt, storage.ExpireOptions{})
	require.NoError(t, err)
	assert.Same(t, c.tgt, res.Table)
	assert.Zero(t, res.Expired)
	assert.Contains(t, res.Skipped, "9 of 19 snapshots expirable")
	reloaded, err := c.cat.LoadTable(t.Context(), lifeTgt)
	require.NoError(t, err)
	assert.Equal(t, loc, reloaded.MetadataLocation(), "no commit")

	c.commit()
	res, err = storage.ExpireSnapshots(t.Context(), c.tgt, storage.ExpireOptions{})
	require.NoError(t, err)
	assert.Empty(t, res.Skipped)
	assert.Equal(t, storage.DefaultExpireBatch, res.Expired)
	assert.Equal(t, storage.DefaultMinSnapshotsToKeep, res.Held)
	assert.Len(t, res.Table.Metadata().Snapshots(), storage.DefaultMinSnapshotsToKeep)
}

func TestExpireSnapshotsHonoursTheTableRetention(t *testing.T) {
	t.Parallel()
	props := storage.TargetProperties()
	props[table.MinSnapshotsToKeepKey] = "3"
	c := newCommitter(t, props, false)
	for range 6 {
		c.commit()
	}
	ret, err := storage.RetentionOf(c.tgt)
	require.NoError(t, err)
	assert.Equal(t, storage.Retention{MinSnapshots: 3, MaxAge: 0, MinFromTable: true}, ret)
	res, err := storage.ExpireSnapshots(t.Context(), c.tgt, storage.ExpireOptions{MinExpired: 1})
	require.NoError(t, err)
	assert.Equal(t, 3, res.Expired)
	assert.Equal(t, 3, res.Held)

	// An hour of history: nothing of these minutes expires.
	aged := maps.Clone(props)
	aged[table.MaxSnapshotAgeMsKey] = "3600000"
	d := newCommitter(t, aged, false)
	for range 6 {
		d.commit()
	}
	ret, err = storage.RetentionOf(d.tgt)
	require.NoError(t, err)
	assert.Equal(t, time.Hour, ret.MaxAge)
	res, err = storage.ExpireSnapshots(t.Context(), d.tgt, storage.ExpireOptions{MinExpired: 1})
	require.NoError(t, err)
	assert.Zero(t, res.Expired)
	assert.Contains(t, res.Skipped, "0 of 6")

	// A retention the table cannot mean is an error, not a guess.
	bad := maps.Clone(props)
	bad[table.MinSnapshotsToKeepKey] = "0"
	e := newCommitter(t, bad, false)
	_, err = storage.ExpireSnapshots(t.Context(), e.tgt, storage.ExpireOptions{})
	require.ErrorContains(t, err, table.MinSnapshotsToKeepKey)
}

// An expiry that loses to a concurrent commit is skipped, not an error:
// the caller's own commit is done, and the next call expires.
func TestExpireSnapshotsSkipsOnAConflict(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, keepOne, false)
	for range 3 {
		c.commit()
	}
	stale := c.tgt
	c.commit() // another writer, as far as stale knows
	res, err := storage.ExpireSnapshots(t.Context(), stale, storage.ExpireOptions{MinExpired: 1})
	require.NoError(t, err)
	assert.True(t, res.Conflict)
	assert.Same(t, stale, res.Table)
	assert.Zero(t, res.Expired)
	res, err = storage.ExpireSnapshots(t.Context(), c.tgt, storage.ExpireOptions{MinExpired: 1})
	require.NoError(t, err)
	assert.Equal(t, 3, res.Expired)
	wm, err := storage.ReadWatermark(res.Table, lifeJob, lifeSrc)
	require.NoError(t, err)
	assert.Equal(t, storage.Cursor{SnapshotID: 4}, wm.Cursor)
}

func TestExpireSnapshotsLeavesATableWithoutGCAlone(t *testing.T) {
	t.Parallel()
	props := maps.Clone(keepOne)
	props[table.GCEnabledKey] = "false"
	c := newCommitter(t, props, false)
	for range 3 {
		c.commit()
	}
	res, err := storage.ExpireSnapshots(t.Context(), c.tgt, storage.ExpireOptions{MinExpired: 1})
	require.NoError(t, err)
	assert.Equal(t, "gc.enabled is false", res.Skipped)
	assert.Equal(t, 3, res.Held)
}

func TestReconcileProperties(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, map[string]string{"a": "1", "b": "2", "keep": "me"}, false)
	c.commit()
	tbl, changes, err := c.cat.ReconcileProperties(t.Context(), lifeTgt, map[string]string{"a": "1", "b": "3", "c": "4"})
	require.NoError(t, err)
	assert.Equal(t, []storage.PropertyChange{
		{Key: "b", Old: "2", New: "3"},
		{Key: "c", New: "4", Added: true},
	}, changes)
	assert.Equal(t, "b=3 (was 2)", changes[0].String())
	assert.Equal(t, "c=4 (was unset)", changes[1].String())
	p := tbl.Properties()
	assert.Equal(t, "1", p["a"])
	assert.Equal(t, "3", p["b"])
	assert.Equal(t, "4", p["c"])
	assert.Equal(t, "me", p["keep"], "never removed")
	assert.Contains(t, p, storage.WatermarkProperty(lifeJob))

	loc := tbl.MetadataLocation()
	tbl, changes, err = c.cat.ReconcileProperties(t.Context(), lifeTgt, map[string]string{"a": "1", "b": "3"})
	require.NoError(t, err)
	assert.Empty(t, changes)
	assert.Equal(t, loc, tbl.MetadataLocation(), "nothing differs: no commit")

	_, _, err = c.cat.ReconcileProperties(t.Context(), lifeTgt, map[string]string{"enricher.watermark.sentiment": "{}"})
	require.ErrorContains(t, err, "the enricher's own")
	_, _, err = c.cat.ReconcileProperties(t.Context(), "social.nope", map[string]string{"a": "1"})
	require.ErrorIs(t, err, storage.ErrTableNotFound)

	// A compression level is checked on the codec the table would hold:
	// gzip set earlier (by a spec since edited, or by the table's owner)
	// takes no level 20, though zstd, the default, would.
	_, _, err = c.cat.ReconcileProperties(t.Context(), lifeTgt, map[string]string{table.ParquetCompressionKey: "gzip"})
	require.NoError(t, err)
	require.NoError(t, storage.CheckProperties(map[string]string{table.ParquetCompressionLevelKey: "20"}), "alone it is a zstd level")
	_, _, err = c.cat.ReconcileProperties(t.Context(), lifeTgt, map[string]string{table.ParquetCompressionLevelKey: "20"})
	require.ErrorContains(t, err, "gzip takes levels -3 to 9")
	require.ErrorIs(t, err, storage.ErrTableProperty, "a consumer halts on it")
	_, _, err = c.cat.ReconcileProperties(t.Context(), lifeTgt, map[string]string{table.ParquetCompressionLevelKey: "5"})
	require.NoError(t, err)
	_, _, err = c.cat.ReconcileProperties(t.Context(), lifeTgt, map[string]string{table.ParquetCompressionKey: "zstd"})
	require.NoError(t, err, "5 is a zstd level too")
	_, _, err = c.cat.ReconcileProperties(t.Context(), lifeTgt, map[string]string{table.ParquetCompressionKey: "brotli", table.ParquetCompressionLevelKey: "-1"})
	require.NoError(t, err)
}

func TestHealthOfAFreshTable(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, storage.TargetProperties(), false)
	h, err := storage.Health(t.Context(), c.tgt)
	require.NoError(t, err)
	assert.Zero(t, h.Snapshots)
	assert.Equal(t, 1, h.MetadataFiles)
	assert.Positive(t, h.MetadataBytes)
	assert.Equal(t, h.MetadataBytes, h.CurrentMetadataBytes)
	assert.Zero(t, h.DataFiles)
	assert.Zero(t, h.MeanDataFileBytes())
	assert.True(t, h.LastMaintenance.IsZero())
	c.commit()
	c.commit()
	h, err = storage.Health(t.Context(), c.tgt)
	require.NoError(t, err)
	assert.Equal(t, 2, h.Snapshots)
	assert.Equal(t, 3, h.MetadataFiles)
	assert.Equal(t, int64(2), h.DataFiles)
	assert.Equal(t, int64(2*committerRows), h.Rows)
	assert.Equal(t, h.DataBytes/2, h.MeanDataFileBytes())
	assert.Equal(t, 2, h.Manifests)
}

// TestRetentionOfCenturiesIsAHundredYears: an age its owner set on a table
// beyond what the enricher takes in a spec is read as 100 years, not as
// an error that stops every expiry and status.
func TestRetentionOfCenturiesIsAHundredYears(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, map[string]string{table.MaxSnapshotAgeMsKey: "6307200000000"}, false) // 200 years
	r, err := storage.RetentionOf(c.tgt)
	require.NoError(t, err)
	assert.Equal(t, 100*365*24*time.Hour, r.MaxAge)
	assert.True(t, r.AgeFromTable)
}

// TestRecordFailure: a job's failure is kept on its target, its text cut
// to 1000 bytes on a rune boundary; on a target that does not exist yet
// there is nothing to record on, and that is no error.
func TestRecordFailure(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, nil, false)
	long := strings.Repeat("é", 600) // 1200 bytes
	f := storage.JobFailure{At: time.Now().UTC().Truncate(time.Second), Class: "retry", Error: long, Snapshot: 7}
	require.NoError(t, c.cat.RecordFailure(t.Context(), lifeTgt, lifeJob, f))
	tbl, err := c.cat.LoadTable(t.Context(), lifeTgt)
	require.NoError(t, err)
	got, ok, err := storage.LastFailure(tbl, lifeJob)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, strings.Repeat("é", 500)+"…", got.Error)
	assert.Equal(t, f.At, got.At)
	assert.Equal(t, int64(7), got.Snapshot)

	require.NoError(t, c.cat.RecordFailure(t.Context(), "social.not_yet", lifeJob, f))
}
