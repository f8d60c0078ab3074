package storage_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

// compactSource rewrites every data file of the source into one, as
// ingestion's maintenance would, and returns the replace snapshot.
func compactSource(t *testing.T, b *bundle) *table.Snapshot {
	t.Helper()
	tasks, err := b.src.Scan().PlanFiles(t.Context())
	require.NoError(t, err)
	rw, err := b.src.RewriteDataFiles(t.Context(), []table.CompactionTaskGroup{{Tasks: tasks}}, table.RewriteDataFilesOptions{})
	require.NoError(t, err)
	if b.src = rw.Table; b.src == nil {
		b.src, err = b.cat.LoadTable(t.Context(), "social.posts")
		require.NoError(t, err)
	}
	snap := b.src.CurrentSnapshot()
	require.Equal(t, table.OpReplace, snap.Summary.Operation)
	return snap
}

func TestCheckHistoryAfterSourceExpiry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	s1 := b.appendPosts(postdata.Post{ID: 1, Text: "a"}, postdata.Post{ID: 2, Text: "b"})
	s2 := b.appendPosts(postdata.Post{ID: 3, Text: "c"})
	s3 := b.appendPosts(postdata.Post{ID: 4, Text: "d"})
	for _, c := range []storage.Cursor{{}, {SnapshotID: s1}, {SnapshotID: s3}, {SnapshotID: s1, PartialSnapshotID: s2, PartialFiles: 0}} {
		assert.NoError(t, storage.CheckHistory(b.src, c), "before expiry the history reaches %s", c)
	}
	var he *storage.HistoryError
	err := storage.CheckHistory(b.src, storage.Cursor{SnapshotID: s1, PartialSnapshotID: s3})
	require.ErrorAs(t, err, &he, "a partial snapshot that does not follow the cursor")
	assert.True(t, he.Held)
	assert.False(t, he.Expired)
	assert.NotErrorIs(t, err, storage.ErrHistoryExpired)

	// A target holding the rows of s1: the job's watermark is s1.
	tgt, err := b.cat.CreateIcebergTable(ctx, "social.posts_sentiment", postdata.Schema(), nil)
	require.NoError(t, err)
	tgt = appendTo(t, tgt, 10, []postdata.Post{{ID: 1}, {ID: 2}})

	b.src = testbed.ExpireSource(t, b.src, 1)

	err = storage.CheckHistory(b.src, storage.Cursor{SnapshotID: s1})
	require.ErrorIs(t, err, storage.ErrHistoryExpired)
	require.ErrorIs(t, err, storage.ErrNotAncestor, "what PlanAppends callers already handle")
	require.ErrorAs(t, err, &he)
	assert.True(t, he.Expired)
	assert.False(t, he.Held)
	assert.Equal(t, s3, he.Snapshot)
	assert.Equal(t, s3, he.Oldest)
	assert.Equal(t, s2, he.Cut)
	assert.Equal(t, "social.posts", he.Table)
	assert.Contains(t, err.Error(), "no longer holds")

	_, err = storage.PlanAppends(ctx, b.src, storage.Cursor{SnapshotID: s1}, s3)
	require.ErrorIs(t, err, storage.ErrHistoryExpired, "the consumer's plan says so too")
	// From the start, a cut history would skip the expired snapshots' rows.
	require.ErrorIs(t, storage.CheckHistory(b.src, storage.Cursor{}), storage.ErrHistoryExpired)
	_, err = storage.PlanAppends(ctx, b.src, storage.Cursor{}, s3)
	require.ErrorIs(t, err, storage.ErrHistoryExpired)
	// The current snapshot itself is still reached.
	require.NoError(t, storage.CheckHistory(b.src, storage.Cursor{SnapshotID: s3}))

	// What resync reads instead: the source's current rows missing from
	// the target, those of s2 and s3.
	got, st := missingOf(t, b.src, tgt, storage.AntiJoinOptions{Key: "post_id", Columns: []string{"post_id", "text"}})
	assert.Equal(t, map[int64][]string{3: {"c"}, 4: {"d"}}, got)
	assert.Equal(t, s3, st.SourceSnapshotID, "the snapshot to move the watermark to")
}

func TestCheckHistoryOfAnotherTablesSnapshot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	s1 := b.appendPosts(postdata.Post{ID: 1, Text: "a"})
	s2 := b.appendPosts(postdata.Post{ID: 2, Text: "b"})
	other, err := b.cat.CreateIcebergTable(ctx, "social.other", postdata.Schema(), nil)
	require.NoError(t, err)
	other = appendTo(t, other, 10, []postdata.Post{{ID: 1, Text: "x"}})
	foreign := other.CurrentSnapshot().SnapshotID

	for _, err := range []error{
		storage.CheckHistory(b.src, storage.Cursor{SnapshotID: foreign}),
		func() error {
			_, err := storage.PlanAppends(ctx, b.src, storage.Cursor{SnapshotID: foreign}, s2)
			return err
		}(),
	} {
		require.ErrorIs(t, err, storage.ErrNotAncestor)
		require.NotErrorIs(t, err, storage.ErrHistoryExpired, "a whole history never held the snapshot: not expiry")
		var he *storage.HistoryError
		require.ErrorAs(t, err, &he)
		assert.False(t, he.Expired)
		assert.False(t, he.Held)
		assert.Equal(t, s1, he.Oldest, "walked back to the first snapshot")
		assert.Zero(t, he.Cut)
		assert.Contains(t, err.Error(), "another table's snapshot")
	}

	// A table without snapshots reaches only the start.
	empty, err := b.cat.CreateIcebergTable(ctx, "social.empty", postdata.Schema(), nil)
	require.NoError(t, err)
	require.NoError(t, storage.CheckHistory(empty, storage.Cursor{}))
	err = storage.CheckHistory(empty, storage.Cursor{SnapshotID: s1})
	require.ErrorIs(t, err, storage.ErrNotAncestor)
	require.NotErrorIs(t, err, storage.ErrHistoryExpired)
}

func TestPlanCountsRowsOfSkippedSnapshots(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	s1 := b.appendPosts(postdata.Post{ID: 1, Text: "a"}, postdata.Post{ID: 2, Text: "b"},
		postdata.Post{ID: 3, Text: "c"}, postdata.Post{ID: 4, Text: "d"})

	// A MERGE upstream: post 2 updated, posts 5 and 6 inserted, as a
	// copy-on-write overwrite that rewrites the one data file.
	txn := b.src.NewTransaction()
	rdr := postsReader(t, b.src, []postdata.Post{{ID: 2, Text: "b2"}, {ID: 5, Text: "e"}, {ID: 6, Text: "f"}})
	defer rdr.Release()
	require.NoError(t, txn.Overwrite(ctx, rdr, nil, table.WithOverwriteFilter(
		iceberg.EqualTo(iceberg.Reference("post_id"), int64(2)))))
	var err error
	b.src, err = txn.Commit(ctx)
	require.NoError(t, err)
	ow := b.src.CurrentSnapshot()
	require.Equal(t, table.OpOverwrite, ow.Summary.Operation)

	// A compaction: a replace snapshot adds no new rows.
	replace := compactSource(t, b)
	s4 := b.appendPosts(postdata.Post{ID: 7, Text: "g"})

	plan, err := storage.PlanAppends(ctx, b.src, storage.Cursor{SnapshotID: s1}, s4)
	require.NoError(t, err)
	skipped := plan.Skipped()
	require.Len(t, skipped, 2)
	assert.Equal(t, ow.SnapshotID, skipped[0].ID)
	// The rewritten file holds the 3 rows kept and the 3 written; the 4
	// of the old file are deleted.
	assert.Equal(t, int64(6), skipped[0].AddedRecords)
	assert.Equal(t, int64(4), skipped[0].DeletedRecords)
	assert.Equal(t, replace.SnapshotID, skipped[1].ID)
	assert.Equal(t, int64(6), skipped[1].AddedRecords, "what the compaction rewrote")
	assert.Equal(t, int64(6), plan.SkippedRows(), "at most 6 rows not enriched; the compaction's count none")
	assert.Equal(t, int64(1), plan.Snapshots[2].AddedRecords)
	assert.Equal(t, int64(1), plan.Rows(), "only post 7 is read")

	// Of those 6 rows, resync finds the two whose key the target lacks.
	tgt, err := b.cat.CreateIcebergTable(ctx, "social.posts_sentiment", postdata.Schema(), nil)
	require.NoError(t, err)
	tgt = appendTo(t, tgt, 10, []postdata.Post{{ID: 1}, {ID: 2}, {ID: 3}, {ID: 4}, {ID: 7}})
	got, _ := missingOf(t, b.src, tgt, storage.AntiJoinOptions{Key: "post_id", Columns: []string{"post_id", "text"}})
	assert.Equal(t, map[int64][]string{5: {"e"}, 6: {"f"}}, got)
}

// postsReader is an Arrow reader of posts in tbl's schema.
func postsReader(t *testing.T, tbl *table.Table, posts []postdata.Post) array.RecordReader {
	t.Helper()
	sc, err := table.SchemaToArrowSchema(tbl.Schema(), nil, false, false)
	require.NoError(t, err)
	var n int64
	return postdata.Reader(sc, postdata.Of(posts...), len(posts), &n)
}

// TestHistoryReachesAnExpiredWatermarkWhoseChildIsHeld: ingestion's
// maintenance expired the watermark's own snapshot, but every snapshot
// after it is held (the oldest held one's parent is the watermark): the
// history reaches it, and the plan reads exactly the rows after it. It
// is not a cut history (that stopped a caught-up job until a resync).
func TestHistoryReachesAnExpiredWatermarkWhoseChildIsHeld(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		// next makes the snapshots after the watermark that expiry keeps
		// the oldest of; it returns the posts they appended.
		next func(b *bundle) int
	}{
		{name: "an append after the watermark", next: func(b *bundle) int {
			b.appendPosts(postdata.Post{ID: 3, Text: "c"}, postdata.Post{ID: 4, Text: "d"})
			return 2
		}},
		{name: "a compaction after the watermark", next: func(b *bundle) int {
			compactSource(t, b)
			return 0
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.appendPosts(postdata.Post{ID: 1, Text: "a"})
			w := b.appendPosts(postdata.Post{ID: 2, Text: "b"}) // the job's watermark
			kept := tc.next(b)
			b.src = testbed.ExpireSource(t, b.src, 1)
			require.Nil(t, b.src.Metadata().SnapshotByID(w), "the watermark's snapshot is expired")

			next := b.appendPosts(postdata.Post{ID: 10, Text: "new"})
			c := storage.Cursor{SnapshotID: w}
			require.NoError(t, storage.CheckHistory(b.src, c))
			plan, err := storage.PlanAppends(ctx, b.src, c, next)
			require.NoError(t, err)
			assert.Equal(t, int64(kept+1), plan.Rows(), "the rows after the watermark, once")
			assert.Equal(t, next, plan.End().SnapshotID)
			// From the start the history is still cut.
			require.ErrorIs(t, storage.CheckHistory(b.src, storage.Cursor{}), storage.ErrHistoryExpired)
		})
	}
}
