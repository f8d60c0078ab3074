package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

// TestResyncCatchesUpAfterTheSourceHistoryExpired: events cannot read past
// an expired history (they are dead-lettered); resync writes exactly the
// rows the target lacks, in several commits, moves the watermark to the
// source's current snapshot, and events go on from there.
func TestResyncCatchesUpAfterTheSourceHistoryExpired(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, p := enrichFirst(b, 30, func(o *pipeline.Options) { o.ChunkRows = 25; o.BatchRows = 10 })
	s2 := b.AppendPosts(40)
	s3 := b.AppendPosts(30)
	b.Src = testbed.ExpireSource(t, b.Src, 1)
	_, err := p.Process(t.Context(), b.Event(s3))
	reason, _ := consumer.IsPermanent(err)
	require.Equal(t, consumer.ReasonHistoryExpired, reason)
	// The event of the expired snapshot between says the same, not
	// snapshot_not_found: it is the same cut history.
	_, err = p.Process(t.Context(), b.Event(s2))
	reason, _ = consumer.IsPermanent(err)
	require.Equal(t, consumer.ReasonHistoryExpired, reason, "%v", err)

	dry, err := p.Resync(t.Context(), pipeline.ResyncRequest{Job: b.Spec.Name, DryRun: true})
	require.NoError(t, err)
	assert.Equal(t, int64(70), dry.Stats.MissingRows)
	assert.Zero(t, dry.Commits, "a dry run writes nothing")

	res, err := p.Resync(t.Context(), pipeline.ResyncRequest{Job: b.Spec.Name})
	require.NoError(t, err)
	assert.Equal(t, int64(70), res.Stats.MissingRows)
	assert.Equal(t, int64(70), res.RowsWritten)
	assert.Equal(t, s3, res.SourceSnapshotID)
	assert.GreaterOrEqual(t, res.Commits, 3, "chunks of about 25 rows")
	assert.Equal(t, s3, b.Watermark().SnapshotID)
	b.RequireExactlyOnce(100, nil)
	tgt, err := b.Cat.LoadTable(t.Context(), b.Spec.Target.Table)
	require.NoError(t, err)
	_, resyncing, err := storage.ResyncInProgress(tgt, b.Spec.Name)
	require.NoError(t, err)
	assert.False(t, resyncing, "the last commit removed the marker")

	// The dead-lettered events, redriven, are done: s3 is the watermark,
	// and s2 is expired and before it.
	for _, snap := range []int64{s2, s3} {
		res, err := p.Process(t.Context(), b.Event(snap))
		require.NoError(t, err, "snapshot %d", snap)
		assert.Zero(t, res[0].RowsWritten)
	}

	// Again: nothing is missing, nothing is written.
	again, err := p.Resync(t.Context(), pipeline.ResyncRequest{Job: b.Spec.Name})
	require.NoError(t, err)
	assert.Zero(t, again.RowsWritten)
	assert.Zero(t, again.Commits)

	s4 := b.AppendPosts(5)
	res2, err := p.Process(t.Context(), b.Event(s4))
	require.NoError(t, err)
	assert.Equal(t, int64(5), res2[0].RowsWritten)
	b.RequireExactlyOnce(105, nil)
}

// TestResyncBringsInRowsAnOverwriteAdded: a MERGE upstream commits an
// overwrite snapshot that adds rows; events pass over it (counting them)
// and resync brings exactly those rows in.
func TestResyncBringsInRowsAnOverwriteAdded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, p := enrichFirst(b, 20)

	// An overwrite that deletes nothing and adds posts 21..30.
	sc, err := table.SchemaToArrowSchema(b.Src.Schema(), nil, false, false)
	require.NoError(t, err)
	var n int64
	rdr := postdata.Reader(sc, postdata.Sample(10, 21, 21), 64, &n)
	defer rdr.Release()
	txn := b.Src.NewTransaction()
	require.NoError(t, txn.Overwrite(t.Context(), rdr, nil, table.WithOverwriteFilter(iceLess("post_id", 0))))
	b.Src, err = txn.Commit(t.Context())
	require.NoError(t, err)
	b.NextID = 31
	s3 := b.AppendPosts(5) // posts 31 to 35
	res, err := p.Process(t.Context(), b.Event(s3))
	require.NoError(t, err)
	assert.Equal(t, int64(10), res[0].SkippedRows, "the overwrite's rows are counted as not enriched")

	rs, err := p.Resync(t.Context(), pipeline.ResyncRequest{Job: b.Spec.Name})
	require.NoError(t, err)
	assert.Equal(t, int64(10), rs.RowsWritten)
	rows := b.TargetRows()
	seen := map[int64]int{}
	for _, r := range rows {
		seen[r["post_id"].(int64)]++
	}
	assert.Len(t, rows, 35, "20 + 5 appended + 10 from the overwrite")
	for id, n := range seen {
		assert.Equal(t, 1, n, "post %d", id)
	}

	// The resync tagged its rows with the snapshot it read (s3): a replay
	// of s3 replaces only the rows s3 appended, not the resync's.
	for _, only := range [][]enrich.Status{nil, {enrich.StatusOK}} {
		rp, err := p.Replay(t.Context(), pipeline.ReplayRequest{Job: b.Spec.Name, From: s3, To: s3, OnlyStatus: only})
		require.NoError(t, err)
		assert.Equal(t, rp.RowsRead, rp.RowsDeleted, "replay of %v deletes what it writes again", only)
		require.Len(t, b.TargetRows(), 35, "replay of %v after a resync loses no row", only)
	}
}

// TestInterruptedResyncHoldsEventsBackAndResumes: a resync cut short
// leaves its marker: events of the job wait (retry after a while, never a
// dead letter, never a row twice), and running resync again finishes it.
func TestInterruptedResyncHoldsEventsBackAndResumes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, p := enrichFirst(b, 10)
	b.AppendPosts(200)
	b.Src = testbed.ExpireSource(t, b.Src, 1)

	// The model stalls on its third batch: two commits of the resync are
	// made, then it is cancelled.
	g := newGate(t, b.Spec, 2)
	slow := b.Processor(g, func(o *pipeline.Options) { o.ChunkRows = 64; o.BatchRows = 64 })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := slow.Resync(ctx, pipeline.ResyncRequest{Job: b.Spec.Name})
		done <- err
	}()
	waitClosed(t, g.Held)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	rows := len(b.TargetRows())
	require.Greater(t, rows, 10, "some chunks were committed")
	require.Less(t, rows, 210)

	s3 := b.AppendPosts(5)
	_, err := p.Process(t.Context(), b.Event(s3))
	class, wait := consumer.Classify(err)
	assert.Equal(t, consumer.ClassRetryAfter, class, "an event waits while a resync is in progress: %v", err)
	assert.Positive(t, wait)
	assert.Contains(t, err.Error(), "resync")
	st, err := p.Status(t.Context())
	require.NoError(t, err)
	assert.Nil(t, st[0].LastFailure, "waiting for a resync is no failure of the job")
	assert.NotEmpty(t, st[0].Resync)

	res, err := p.Resync(t.Context(), pipeline.ResyncRequest{Job: b.Spec.Name})
	require.NoError(t, err)
	assert.Equal(t, int64(215-rows), res.RowsWritten)
	b.RequireExactlyOnce(215, nil)
	_, err = p.Process(t.Context(), b.Event(s3))
	require.NoError(t, err, "the event is a no-op once the resync is done")
	b.RequireExactlyOnce(215, nil)
}

// TestAConsumerCommitLosingToAResyncChunkIsDropped: a consumer that was
// working on the same rows when a resync committed its first chunk loses
// its commit, sees the resync's marker, and drops its chunk rather than
// commit it again (which would write those rows twice); its event, which
// the resync covers, is acknowledged as a no-op.
func TestAConsumerCommitLosingToAResyncChunkIsDropped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(200)
	m := newMeddler(t, b.Spec, func(ctx context.Context) error {
		// A resync that commits one chunk and is then cut short.
		g := newGate(t, b.Spec, 1)
		r := b.Processor(g, func(o *pipeline.Options) { o.ChunkRows = 50; o.BatchRows = 50 })
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := r.Resync(rctx, pipeline.ResyncRequest{Job: b.Spec.Name})
			done <- err
		}()
		<-g.Held
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			return fmt.Errorf("resync: want cancelled, got %v", err)
		}
		return nil
	})
	res1, err := b.Processor(m).Process(t.Context(), b.Event(s1))
	require.NoError(t, m.err)
	require.NoError(t, err, "the resync in progress covers the event: acknowledged")
	assert.Equal(t, pipeline.OutcomeStale, res1[0].Outcome)
	assert.Zero(t, res1[0].RowsWritten)
	rows := b.TargetRows()
	assert.Len(t, rows, 50, "only the resync's chunk: the consumer's was dropped")
	requireNoOrphans(b)

	res, err := b.Processor(nil).Resync(t.Context(), pipeline.ResyncRequest{Job: b.Spec.Name})
	require.NoError(t, err)
	assert.Equal(t, int64(150), res.RowsWritten)
	b.RequireExactlyOnce(200, nil)
}

// TestLateEventOfAnExpiredSnapshotBeforeTheWatermarkIsDone: a job that
// has caught up gets, late, the event of a snapshot ingestion has since
// expired: it is before the watermark, so nothing is to do (not a dead
// letter), and the next event reads on as usual. A replay from that
// snapshot names the expiry.
func TestLateEventOfAnExpiredSnapshotBeforeTheWatermarkIsDone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.Processor(nil)
	s1 := b.AppendPosts(10)
	s2 := b.AppendPosts(10)
	_, err := p.Process(t.Context(), b.Event(s2))
	require.NoError(t, err)
	s3 := b.AppendPosts(10)
	b.Src = testbed.ExpireSource(t, b.Src, 1) // s1 and s2 expired; s3's parent is the watermark
	res, err := p.Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	assert.Equal(t, pipeline.OutcomeStale, res[0].Outcome)
	// A replay of a range that starts there says the snapshot expired.
	_, err = p.Replay(t.Context(), pipeline.ReplayRequest{Job: b.Spec.Name, From: s1, To: s2})
	require.ErrorIs(t, err, storage.ErrSnapshotNotFound)
	assert.ErrorContains(t, err, "snapshot expiry has removed its oldest snapshots")
	res, err = p.Process(t.Context(), b.Event(s3))
	require.NoError(t, err)
	assert.Equal(t, int64(10), res[0].RowsWritten)
	b.RequireExactlyOnce(30, nil)

	// A snapshot id the table never had is still snapshot_not_found
	// when the history is whole.
	c := setup(t)
	c.AppendPosts(5)
	_, err = c.Processor(nil).Process(t.Context(), c.Event(12345))
	reason, _ := consumer.IsPermanent(err)
	assert.Equal(t, consumer.ReasonSnapshotNotFound, reason)
}

// TestResyncThatLosesAConflictCountsEveryPass: maintenance by another
// process compacts the target between two resync commits; the resync
// starts over from the anti-join, and its result counts the rows and
// commits of both passes (the report said only the last pass's), with
// every row once.
func TestResyncThatLosesAConflictCountsEveryPass(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, p := enrichFirst(b, 30, func(o *pipeline.Options) { o.ChunkRows = 20; o.BatchRows = 10; o.NoMaintenance = true })
	b.AppendPosts(40)
	b.AppendPosts(30)
	b.Src = testbed.ExpireSource(t, b.Src, 1)

	var commits []int
	compacted := false
	res, err := p.Resync(t.Context(), pipeline.ResyncRequest{Job: b.Spec.Name, Progress: func(pr pipeline.ResyncProgress) {
		if pr.Phase != "commit" {
			return
		}
		commits = append(commits, pr.Commits)
		if !compacted {
			compacted = true
			_, err := b.Cat.Maintain(t.Context(), b.Spec.Target.Table, storage.MaintainOptions{MinInputFiles: 2, SkipOrphans: true})
			require.NoError(t, err)
		}
	}})
	require.NoError(t, err)
	assert.Positive(t, res.Conflicts, "the compaction made a resync commit lose")
	assert.Equal(t, int64(70), res.RowsWritten, "both passes' rows")
	assert.Equal(t, len(commits), res.Commits)
	assert.Less(t, res.Stats.MissingRows, int64(70), "the last pass found only what was still missing")
	assert.IsIncreasing(t, commits, "progress numbers the commits across passes")
	b.RequireExactlyOnce(100, nil)
}
