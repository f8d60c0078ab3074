package storage_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/storage"
)

func TestPlanResumesInsideADataFile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var posts []postdata.Post
	for i := range 10 {
		posts = append(posts, postdata.Post{ID: int64(i + 1), Text: "p"})
	}
	s1 := b.appendPosts(posts...) // one data file of 10 rows
	ctx := t.Context()

	plan, err := storage.PlanAppends(ctx, b.src, storage.Cursor{}, s1)
	require.NoError(t, err)
	require.Len(t, plan.Units, 1)
	u := plan.Units[0]
	assert.Equal(t, storage.Cursor{PartialSnapshotID: s1, PartialRows: 4}, u.Within(4), "4 rows into the first file")
	assert.Equal(t, u.After, u.Within(10))
	assert.Equal(t, storage.Cursor{}, u.Within(0))

	from := storage.Cursor{PartialSnapshotID: s1, PartialRows: 4}
	plan, err = storage.PlanAppends(ctx, b.src, from, s1)
	require.NoError(t, err)
	require.Len(t, plan.Units, 1)
	assert.Equal(t, int64(4), plan.Units[0].Skip)
	assert.Equal(t, int64(6), plan.Rows())
	assert.Equal(t, storage.Cursor{PartialSnapshotID: s1, PartialRows: 7}, plan.Units[0].Within(3), "rows count from the file's start")

	// ReadUnits drops the rows done and yields exactly the rest.
	var ids []int64
	for rec, err := range storage.ReadUnits(ctx, b.src, []string{"post_id"}, plan.Units, storage.ReadOptions{BatchRows: 3}) {
		require.NoError(t, err)
		col := rec.Column(0).(*array.Int64)
		for i := range col.Len() {
			ids = append(ids, col.Value(i))
		}
		rec.Release()
	}
	assert.Equal(t, []int64{5, 6, 7, 8, 9, 10}, ids)

	_, err = storage.PlanAppends(ctx, b.src, storage.Cursor{PartialSnapshotID: s1, PartialRows: 10}, s1)
	require.ErrorIs(t, err, storage.ErrNotAncestor, "a cursor past the file's rows is refused")
}

func TestWatermarkWithRowsRoundTrips(t *testing.T) {
	t.Parallel()
	c := storage.Commit{Job: "j", SourceTable: "s.t", After: storage.Cursor{SnapshotID: 1, PartialSnapshotID: 2, PartialFiles: 3, PartialRows: 40}}
	p := c.Props()
	assert.Equal(t, "40", p[storage.PropPartialRows])
	assert.Equal(t, "3", p[storage.PropPartialFiles])
	assert.Equal(t, "1+3 files 40 rows of 2", c.After.String())
	c.After.PartialRows = 0
	assert.NotContains(t, c.Props(), storage.PropPartialRows)
}

func TestOrphansListsOnlyUnreferencedOldFiles(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	none, err := storage.Orphans(ctx, b.src, storage.OrphanOptions{})
	require.NoError(t, err, "a table without data files has no orphans")
	assert.Empty(t, none)

	b.appendPosts(postdata.Post{ID: 1, Text: "a"})
	dataDir := strings.TrimPrefix(storage.DataLocation(b.src), "file://")
	entries, err := os.ReadDir(dataDir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "one committed data file")

	// Files no snapshot references: one old, one just written.
	old := filepath.Join(dataDir, "00000-0-old-orphan.parquet")
	young := filepath.Join(dataDir, "00000-0-young-orphan.parquet")
	require.NoError(t, os.WriteFile(old, []byte("PAR1"), 0o644))
	require.NoError(t, os.WriteFile(young, []byte("PAR1"), 0o644))
	past := time.Now().Add(-2 * time.Hour)
	require.NoError(t, os.Chtimes(old, past, past))

	got, err := storage.Orphans(ctx, b.src, storage.OrphanOptions{OlderThan: time.Hour})
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, old, strings.TrimPrefix(got[0].Path, "file://"))
	assert.Equal(t, int64(4), got[0].Size)

	got, err = storage.Orphans(ctx, b.src, storage.OrphanOptions{})
	require.NoError(t, err)
	assert.Len(t, got, 2, "without a grace period the young one too")

	// Deleting files younger than MinOrphanGrace is refused while a writer
	// may run: the young file could be a commit's in flight.
	for _, grace := range []time.Duration{0, time.Minute, storage.MinOrphanGrace - 1} {
		_, err = storage.Orphans(ctx, b.src, storage.OrphanOptions{OlderThan: grace, Delete: true})
		require.ErrorIs(t, err, storage.ErrGraceTooShort, "grace %s", grace)
	}
	_, err = os.Stat(young)
	require.NoError(t, err, "nothing deleted by a refused cleanup")

	_, err = storage.Orphans(ctx, b.src, storage.OrphanOptions{OlderThan: time.Hour, Delete: true})
	require.NoError(t, err)
	_, err = os.Stat(old)
	assert.ErrorIs(t, err, os.ErrNotExist, "deleted")
	_, err = os.Stat(young)
	assert.NoError(t, err, "a file younger than the grace period stays")
	_, err = os.Stat(filepath.Join(dataDir, entries[0].Name()))
	assert.NoError(t, err, "a committed data file stays")
	assert.Equal(t, 1, countRows(t, b))

	// With no writer running, any age may go.
	_, err = storage.Orphans(ctx, b.src, storage.OrphanOptions{Delete: true, NoWriters: true})
	require.NoError(t, err)
	_, err = os.Stat(young)
	assert.ErrorIs(t, err, os.ErrNotExist, "deleted once no writer runs")
	assert.Equal(t, 1, countRows(t, b))
}

func countRows(t *testing.T, b *bundle) int {
	t.Helper()
	n := 0
	for _, err := range storage.Rows(t.Context(), b.src, 0) {
		require.NoError(t, err)
		n++
	}
	return n
}
