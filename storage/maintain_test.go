package storage_test

import (
	"context"
	iofs "io/fs"
	"os"
	"testing"
	"time"

	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/storage"
)

func TestMaintainCompactsExpiresAndCleans(t *testing.T) {
	t.Parallel()
	l := newLife(t, storage.TargetProperties())
	ctx := t.Context()
	files := 0
	for i := range 8 {
		l.event(3 + i%3)
		files += (3 + i%3 + 2) / 3 // a file per 3 rows
	}
	orphans := l.plantOrphans() // two hours old
	wantRows := l.nextID - 1

	// A grace shorter than a commit may take is refused before any step.
	_, err := l.cat.Maintain(ctx, lifeTgt, storage.MaintainOptions{OrphanGrace: time.Minute})
	require.ErrorIs(t, err, storage.ErrGraceTooShort)
	h, err := storage.Health(ctx, l.target())
	require.NoError(t, err)
	require.Equal(t, int64(files), h.DataFiles, "nothing compacted by a refused maintenance")

	rep, err := l.cat.Maintain(ctx, lifeTgt, storage.MaintainOptions{OrphanGrace: time.Hour})
	require.NoError(t, err)
	t.Logf("%+v", *rep)
	assert.Equal(t, int64(files), rep.Before.DataFiles)
	assert.Equal(t, int64(1), rep.After.DataFiles, "compacted into one")
	assert.Equal(t, wantRows, rep.After.Rows)
	assert.Equal(t, 1, rep.CompactedGroups)
	assert.Equal(t, files, rep.FilesReplaced)
	assert.Equal(t, 1, rep.FilesWritten)
	assert.Equal(t, rep.Before.Snapshots+2-10, rep.SnapshotsExpired,
		"the compaction and the manifest rewrite added two snapshots; 10 are kept")
	assert.Equal(t, storage.DefaultMinSnapshotsToKeep, rep.After.Snapshots)
	assert.Equal(t, 1, rep.After.Manifests)
	assert.Equal(t, 2, rep.OrphanFiles, "the planted ones")
	for _, p := range orphans {
		_, err := os.Stat(p)
		assert.ErrorIs(t, err, iofs.ErrNotExist, p)
	}
	assert.WithinDuration(t, rep.At, rep.After.LastMaintenance, time.Millisecond)
	assert.True(t, rep.Before.LastMaintenance.IsZero())
	l.requireExactlyOnce()

	// Once the retention has moved past the compaction, its replaced
	// files are deleted by the per-commit expiry, and the table keeps
	// working.
	l.expire = true
	for range storage.DefaultMinSnapshotsToKeep + storage.DefaultExpireBatch {
		l.event(2)
	}
	l.requireExactlyOnce()
	h, err = storage.Health(ctx, l.target())
	require.NoError(t, err)
	assert.Equal(t, int64(storage.DefaultMinSnapshotsToKeep+storage.DefaultExpireBatch+1), h.DataFiles)

	// Nothing to do is fine too.
	rep, err = l.cat.Maintain(ctx, lifeTgt, storage.MaintainOptions{MinInputFiles: 1000})
	require.NoError(t, err)
	assert.Zero(t, rep.CompactedGroups)
	l.requireExactlyOnce()
}

// Maintain racing a consumer that commits all the while (with its own
// per-commit expiry): conflicts on both sides are retried, and no row is
// lost or written twice.
func TestMaintainRacingAConsumer(t *testing.T) {
	t.Parallel()
	l := newLife(t, storage.TargetProperties())
	l.expire = true
	l.plantOrphans()
	var reports []*storage.MaintainReport
	runs, _ := maintainWhile(t, func(ctx context.Context) error {
		for i := range 30 {
			to := l.ingest(3 + i%5)
			if err := l.consume(ctx, to, 0); err != nil {
				return err
			}
		}
		return nil
	}, func(ctx context.Context) (bool, error) {
		rep, err := l.cat.Maintain(ctx, lifeTgt, storage.MaintainOptions{
			MinInputFiles: 2, OrphanGrace: time.Hour, Backoff: 5 * time.Millisecond, Attempts: 20})
		if err != nil {
			return false, err
		}
		reports = append(reports, rep)
		return true, nil
	})
	conflicts, compacted := 0, 0
	for _, r := range reports {
		conflicts += r.Conflicts
		compacted += r.FilesReplaced
	}
	t.Logf("%d maintenance runs (%d of their commits lost and were retried, %d files compacted); the consumer lost %d commits, re-planned %d times",
		runs, conflicts, compacted, l.conflicts, l.replans)
	require.GreaterOrEqual(t, runs, 2)
	assert.Positive(t, compacted)
	l.requireExactlyOnce()
	// The consumer is done: a last maintenance leaves one data file.
	rep, err := l.cat.Maintain(t.Context(), lifeTgt, storage.MaintainOptions{MinInputFiles: 2})
	require.NoError(t, err)
	assert.Equal(t, int64(1), rep.After.DataFiles)
	l.requireExactlyOnce()
}

func TestMaintainLeavesATableWithoutGCAlone(t *testing.T) {
	t.Parallel()
	props := storage.TargetProperties()
	props[table.GCEnabledKey] = "false"
	l := newLife(t, props)
	for range 12 {
		l.event(2)
	}
	rep, err := l.cat.Maintain(t.Context(), lifeTgt, storage.MaintainOptions{SkipOrphans: true})
	require.NoError(t, err)
	assert.Zero(t, rep.SnapshotsExpired)
	assert.Equal(t, rep.Before.Snapshots+2, rep.After.Snapshots, "compaction and manifest rewrite, nothing expired")
	l.requireExactlyOnce()
}

func TestMaintainAFreshTableAndWhenItIsDue(t *testing.T) {
	t.Parallel()
	l := newLife(t, storage.TargetProperties())
	due, err := storage.MaintenanceDue(l.target(), time.Hour, 3, time.Now())
	require.NoError(t, err)
	assert.False(t, due, "no data")
	rep, err := l.cat.Maintain(t.Context(), lifeTgt, storage.MaintainOptions{})
	require.NoError(t, err, "nothing to maintain is no error")
	assert.Zero(t, rep.After.Snapshots)

	for range 3 {
		l.event(1)
	}
	due, err = storage.MaintenanceDue(l.target(), time.Hour, 3, time.Now())
	require.NoError(t, err)
	assert.False(t, due, "maintained just now")
	due, err = storage.MaintenanceDue(l.target(), time.Hour, 3, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	assert.True(t, due, "an hour later")
	due, err = storage.MaintenanceDue(l.target(), time.Hour, 4, time.Now().Add(2*time.Hour))
	require.NoError(t, err)
	assert.False(t, due, "too few files to bother")
}
