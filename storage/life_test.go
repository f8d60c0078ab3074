package storage_test

import (
	"context"
	"errors"
	iofs "io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/apache/iceberg-go/table"
	"github.com/apache/iceberg-go/table/compaction"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/socialdata/enricher/storage"
)

// Maintenance that another process runs on a target, with iceberg-go's
// own operations (not the enricher's). Each returns whether it committed
// anything.
var otherMaintenance = []struct {
	name string
	run  func(ctx context.Context, tbl *table.Table) (bool, error)
}{
	{"compaction", compactOther},
	{"manifest rewrite", rewriteManifestsOther},
	{"expiry to one snapshot", expireToOneOther},
	{"compaction, then expiry to one snapshot", func(ctx context.Context, tbl *table.Table) (bool, error) {
		// What an optimizer does: the head is its replace snapshot, and
		// every snapshot of the job is gone.
		ok, err := compactOther(ctx, tbl)
		if !ok || err != nil {
			return ok, err
		}
		if err := tbl.Refresh(ctx); err != nil {
			return ok, err
		}
		return expireToOneOther(ctx, tbl)
	}},
	{"orphan deletion", orphansOther},
}

func compactOther(ctx context.Context, tbl *table.Table) (bool, error) {
	cfg := compaction.DefaultConfig()
	cfg.MinInputFiles = 2
	plan, err := compaction.Analyze(ctx, tbl, cfg)
	if err != nil || len(plan.Groups) == 0 {
		return false, err
	}
	groups := make([]table.CompactionTaskGroup, len(plan.Groups))
	for i, g := range plan.Groups {
		groups[i] = table.CompactionTaskGroup{PartitionKey: g.PartitionKey, Tasks: g.Tasks, TotalSizeBytes: g.TotalSizeBytes}
	}
	_, err = tbl.RewriteDataFiles(ctx, groups, table.RewriteDataFilesOptions{})
	return err == nil, err
}

func rewriteManifestsOther(ctx context.Context, tbl *table.Table) (bool, error) {
	txn := tbl.NewTransaction()
	res, err := txn.RewriteManifests(ctx)
	if err != nil || res.IsNoOp() {
		return false, err
	}
	_, err = txn.Commit(ctx)
	return err == nil, err
}

func expireToOneOther(ctx context.Context, tbl *table.Table) (bool, error) {
	if len(tbl.Metadata().Snapshots()) < 2 {
		return false, nil
	}
	txn := tbl.NewTransaction()
	if err := txn.ExpireSnapshots(table.WithRetainLast(1), table.WithOlderThan(0)); err != nil {
		return false, err
	}
	out, err := txn.Commit(ctx)
	if out != nil && err != nil && errors.Is(err, iofs.ErrNotExist) {
		// Committed; deleting files that an earlier expiry deleted
		// already failed (iceberg-go v0.7.0 on a local FileIO).
		err = nil
	}
	return err == nil, err
}

func orphansOther(ctx context.Context, tbl *table.Table) (bool, error) {
	// A grace longer than any commit of the test takes: a file of a
	// commit in flight is never an orphan.
	res, err := tbl.DeleteOrphanFiles(ctx, table.WithFilesOlderThan(time.Minute))
	return len(res.DeletedFiles) > 0, err
}

// otherMaintenanceLost reports whether err is a maintenance commit that
// lost to the consumer, as the enricher's own commits tell a conflict
// (storage.IsConflict), or read a file the consumer's own expiry
// deleted: the other process tries again later.
func otherMaintenanceLost(err error) bool {
	return storage.IsConflict(err) || errors.Is(err, iofs.ErrNotExist)
}

// The watermark property is what survives maintenance: between events,
// and with the watermark partway through a source snapshot, each kind of
// maintenance by another process leaves ReadWatermark right, and the
// rows end exactly once.
func TestWatermarkSurvivesMaintenanceBetweenCommits(t *testing.T) {
	t.Parallel()
	for _, m := range otherMaintenance {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			l := newLife(t, storage.TargetProperties())
			ctx := t.Context()
			orphans := l.plantOrphans()
			committed := 0
			for i := range 6 {
				l.event(4 + i) // 2 to 4 data files each
				ok, err := m.run(ctx, l.target())
				require.NoError(t, err)
				if ok {
					committed++
				}
				l.requireWatermark(storage.Cursor{SnapshotID: l.sourceSnap}, "after %s %d", m.name, i)
			}
			// A consumer killed after the first data file of a snapshot.
			to := l.ingest(9) // 3 data files
			require.NoError(t, l.consume(ctx, to, 1))
			partial, err := storage.ReadWatermark(l.target(), lifeJob, lifeSrc)
			require.NoError(t, err)
			require.Equal(t, to, partial.PartialSnapshotID, "partway through the snapshot")
			ok, err := m.run(ctx, l.target())
			require.NoError(t, err)
			if ok {
				committed++
			}
			tgt := l.target()
			switch m.name {
			case "compaction", "manifest rewrite":
				require.True(t, ok)
				assert.Equal(t, table.OpReplace, tgt.CurrentSnapshot().Summary.Operation, "a replace at the head")
			case "compaction, then expiry to one snapshot":
				require.True(t, ok)
				assert.Len(t, tgt.Metadata().Snapshots(), 1)
				assert.Nil(t, tgt.Metadata().SnapshotByID(partial.TargetSnapshotID), "the watermark's snapshot is expired")
			case "orphan deletion":
				for _, p := range orphans {
					_, err := os.Stat(p)
					assert.ErrorIs(t, err, iofs.ErrNotExist, p)
				}
			}
			l.requireWatermark(partial.Cursor, "partial watermark after %s", m.name)
			require.NoError(t, l.consume(ctx, to, 0))
			l.requireExactlyOnce()
			assert.Positive(t, committed, "the maintenance did something")

		})
	}
}

// The same maintenance, run in a loop by another process while the
// consumer commits: the consumer's commits lose to it and are settled,
// and still every row lands exactly once.
func TestWatermarkSurvivesMaintenanceDuringCommits(t *testing.T) {
	t.Parallel()
	for _, m := range otherMaintenance {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			l := newLife(t, storage.TargetProperties())
			l.plantOrphans()
			// Every third chunk, the other process commits right between
			// the consumer's loading the target and its commit; besides,
			// it runs in a loop of its own.
			chunks, inside := 0, 0
			l.beforeCommit = func(ctx context.Context) error {
				if chunks++; chunks%3 != 0 {
					return nil
				}
				tbl, err := l.cat.LoadTable(ctx, lifeTgt)
				if err != nil {
					return err
				}
				head := tbl.CurrentSnapshot().SnapshotID
				ok, err := m.run(ctx, tbl)
				if err != nil && !otherMaintenanceLost(err) {
					return err
				}
				if ok && head != l.target().CurrentSnapshot().SnapshotID {
					inside++ // it moved the head: the consumer's commit loses
				}
				return nil
			}
			runs, lost := maintainWhile(t, func(ctx context.Context) error {
				for i := range 12 {
					to := l.ingest(4 + i%4)
					if err := l.consume(ctx, to, 0); err != nil {
						return err
					}
				}
				return nil
			}, func(ctx context.Context) (bool, error) {
				tbl, err := l.cat.LoadTable(ctx, lifeTgt)
				if err != nil {
					return false, err
				}
				return m.run(ctx, tbl)
			})
			t.Logf("%s: %d commits by the other process in its loop, %d lost to the consumer; %d moved the head under a commit; the consumer lost %d commits and re-planned %d times",
				m.name, runs, lost, inside, l.conflicts, l.replans)
			assert.GreaterOrEqual(t, l.conflicts+l.replans, inside, "a commit the head moved under did not go through")
			if strings.HasPrefix(m.name, "compaction") || m.name == "manifest rewrite" {
				assert.Positive(t, inside, "the other process moved the head under a commit")
			}
			l.requireExactlyOnce()
		})
	}
}

// maintainWhile runs consumer and, until it returns, maintenance in a
// loop (at least once after it, so that the last commits see some too).
// It returns how many maintenance runs committed and how many lost.
func maintainWhile(t *testing.T, consumer func(context.Context) error, maintenance func(context.Context) (bool, error)) (runs, lost int) {
	t.Helper()
	g, ctx := errgroup.WithContext(t.Context())
	done := make(chan struct{})
	g.Go(func() error {
		defer close(done)
		return consumer(ctx)
	})
	g.Go(func() error {
		for finished := false; ; {
			select {
			case <-done:
				finished = true
			default:
			}
			ok, err := maintenance(ctx)
			switch {
			case err != nil && ctx.Err() != nil:
				return nil // the consumer failed: its error is the one
			case err != nil && otherMaintenanceLost(err):
				lost++
			case err != nil:
				return err
			case ok:
				runs++
			}
			if finished {
				return nil
			}
			if err := sleep(ctx, 5*time.Millisecond); err != nil {
				return nil
			}
		}
	})
	require.NoError(t, g.Wait())
	return runs, lost
}
