package storage_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/storage"
)

// appendTo appends posts to tbl in batches of batchRows (one data file
// each, with manyFiles), returning the table as committed.
func appendTo(t testing.TB, tbl *table.Table, batchRows int, posts []postdata.Post) *table.Table {
	t.Helper()
	out, _, err := postdata.AppendBatched(context.Background(), tbl, postdata.Of(posts...), batchRows)
	require.NoError(t, err)
	return out
}

// manyFiles makes every later append to tbl write a data file per batch.
func manyFiles(t testing.TB, tbl *table.Table) *table.Table {
	t.Helper()
	txn := tbl.NewTransaction()
	require.NoError(t, txn.SetProperties(map[string]string{"write.target-file-size-bytes": "1"}))
	out, err := txn.Commit(context.Background())
	require.NoError(t, err)
	return out
}

// missingOf runs the anti-join and reads every row it yields as post_id
// -> text (post_id and text must be among opts.Columns), checking that
// every Arrow buffer is released.
func missingOf(t *testing.T, src, tgt *table.Table, opts storage.AntiJoinOptions) (map[int64][]string, storage.AntiJoinStats) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)
	defer mem.AssertSize(t, 0)
	ctx := compute.WithAllocator(t.Context(), mem)
	m, err := storage.FindMissingRows(ctx, src, tgt, opts)
	require.NoError(t, err)
	got := map[int64][]string{}
	var n int64
	for rec, err := range m.Batches(ctx) {
		require.NoError(t, err)
		ids := columnOf[*array.Int64](t, rec, "post_id")
		texts := columnOf[*array.String](t, rec, "text")
		for i := range ids.Len() {
			got[ids.Value(i)] = append(got[ids.Value(i)], texts.Value(i))
		}
		n += rec.NumRows()
		rec.Release()
	}
	st := m.Stats()
	assert.Equal(t, st.MissingRows, n, "Batches yields the rows counted")
	return got, st
}

func columnOf[T arrow.Array](t *testing.T, rec arrow.RecordBatch, name string) T {
	t.Helper()
	idx := rec.Schema().FieldIndices(name)
	require.Len(t, idx, 1, name)
	col, ok := rec.Column(idx[0]).(T)
	require.True(t, ok, "column %s is %s", name, rec.Column(idx[0]).DataType())
	return col
}

func postText(id int64) string { return fmt.Sprintf("post %d", id) }

// assertEmptyDir checks that no spill file is left in dir.
func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "spill files left in %s", dir)
}

// keyTables builds a source of n posts (post_id 1..n, author "user-<id>",
// in snapshots of 500 rows, a data file every 128) and a target holding
// the posts of keep.
func keyTables(t *testing.T, n int64, keep func(int64) bool) (src, tgt *table.Table) {
	t.Helper()
	b := setup(t)
	src = manyFiles(t, b.src)
	tgt, err := b.cat.CreateIcebergTable(t.Context(), "social.posts_sentiment", postdata.Schema(), nil)
	require.NoError(t, err)
	var all, kept []postdata.Post
	for id := int64(1); id <= n; id++ {
		p := postdata.Post{ID: id, Text: postText(id), Author: fmt.Sprintf("user-%d", id)}
		all = append(all, p)
		if keep(id) {
			kept = append(kept, p)
		}
	}
	for chunk := range slices.Chunk(all, 500) {
		src = appendTo(t, src, 128, chunk)
	}
	tgt = appendTo(t, tgt, 4096, kept)
	return src, tgt
}

func TestFindMissingRowsByLongAndStringKeys(t *testing.T) {
	t.Parallel()
	const n = 3000
	rng := rand.New(rand.NewPCG(12, 5))
	present := map[int64]bool{}
	for id := int64(1); id <= n; id++ {
		present[id] = rng.IntN(10) < 7 // the target misses about 30%
	}
	src, tgt := keyTables(t, n, func(id int64) bool { return present[id] })
	want := map[int64][]string{}
	for id := int64(1); id <= n; id++ {
		if !present[id] {
			want[id] = []string{postText(id)}
		}
	}
	for _, key := range []string{"post_id", "author"} {
		for _, budget := range []int64{0, 4 << 10} {
			t.Run(fmt.Sprintf("%s/budget=%d", key, budget), func(t *testing.T) {
				tmp := t.TempDir()
				var phases []storage.AntiJoinPhase
				got, st := missingOf(t, src, tgt, storage.AntiJoinOptions{
					Key: key, Columns: []string{"post_id", "text"}, MemoryBytes: budget, TempDir: tmp,
					Progress: func(p storage.AntiJoinPhase, _ storage.AntiJoinStats) {
						if len(phases) == 0 || phases[len(phases)-1] != p {
							phases = append(phases, p)
						}
					},
				})
				assert.Equal(t, want, got)
				assert.Equal(t, int64(n), st.SourceRows)
				assert.Equal(t, int64(n-len(want)), st.TargetKeys)
				assert.Equal(t, int64(len(want)), st.MissingRows)
				assert.Equal(t, src.CurrentSnapshot().SnapshotID, st.SourceSnapshotID)
				assert.Positive(t, st.FilesToRead)
				assertEmptyDir(t, tmp)
				if budget == 0 {
					assert.Equal(t, 1, st.Partitions, "the keys fit in the default budget")
					assert.Zero(t, st.SpillBytes)
					assert.Equal(t, []storage.AntiJoinPhase{storage.PhaseTargetKeys, storage.PhaseSourceKeys}, phases)
					return
				}
				// 2,100 target keys take at least 8 bytes each (longs) or
				// 16 plus 9 or so (strings): with 2 KiB for keys, at least
				// 2100*8/2048 = 8 (or 25) partitions.
				least := 8
				if key == "author" {
					least = 25
				}
				assert.GreaterOrEqual(t, st.Partitions, least)
				assert.Positive(t, st.SpillBytes)
				assert.LessOrEqual(t, st.PeakKeyBytes, int64(2<<10), "no partition's keys pass the budget")
				assert.Equal(t, []storage.AntiJoinPhase{storage.PhaseTargetKeys, storage.PhaseSourceKeys, storage.PhaseJoin}, phases)
			})
		}
	}
}

func TestFindMissingRowsReadsOnlyFilesWithMissingRows(t *testing.T) {
	t.Parallel()
	// The target misses only the last 100 posts: one snapshot's files.
	src, tgt := keyTables(t, 2000, func(id int64) bool { return id <= 1900 })
	got, st := missingOf(t, src, tgt, storage.AntiJoinOptions{Key: "post_id", Columns: []string{"post_id", "text"}})
	assert.Len(t, got, 100)
	assert.Equal(t, 16, st.Files, "4 snapshots of 500 rows, a file per 128")
	assert.Equal(t, 1, st.FilesToRead, "posts 1901-2000 are in the last file")

	// No target table at all: every row is missing.
	got, st = missingOf(t, src, nil, storage.AntiJoinOptions{Key: "post_id", Columns: []string{"post_id", "text"}})
	assert.Len(t, got, 2000)
	assert.Zero(t, st.TargetKeys)
	assert.Equal(t, st.Files, st.FilesToRead)
}

func TestFindMissingRowsDuplicateAndNullKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	tgt, err := b.cat.CreateIcebergTable(ctx, "social.posts_sentiment", postdata.Schema(), nil)
	require.NoError(t, err)
	// Keys on author: "a" twice in the source and missing, "b" twice and
	// present, "c" once and missing, two null authors; the target has
	// "b", "d" and a null author (which matches nothing).
	src := appendTo(t, b.src, 2, []postdata.Post{
		{ID: 1, Text: postText(1), Author: "a"}, {ID: 2, Text: postText(2), Author: "b"},
		{ID: 3, Text: postText(3)}, {ID: 4, Text: postText(4), Author: "a"},
	})
	src = appendTo(t, src, 2, []postdata.Post{
		{ID: 5, Text: postText(5), Author: "b"}, {ID: 6, Text: postText(6), Author: "c"}, {ID: 7, Text: postText(7)},
	})
	tgt = appendTo(t, tgt, 10, []postdata.Post{{ID: 20, Author: "b"}, {ID: 21, Author: "d"}, {ID: 22}})

	_, err = storage.FindMissingRows(ctx, src, tgt, storage.AntiJoinOptions{Key: "author", Columns: []string{"post_id", "text"}})
	require.ErrorIs(t, err, storage.ErrNullKey, "null keys are refused by default")
	assert.ErrorContains(t, err, "author is null")

	for _, budget := range []int64{0, 4 << 10} {
		got, st := missingOf(t, src, tgt, storage.AntiJoinOptions{
			Key: "author", Columns: []string{"post_id", "text"}, NullKeys: storage.NullKeysSkip, MemoryBytes: budget,
		})
		assert.Equal(t, map[int64][]string{1: {postText(1)}, 4: {postText(4)}, 6: {postText(6)}}, got,
			"each row of a missing key once, duplicates included; null keys skipped")
		assert.Equal(t, int64(2), st.NullKeys)
		assert.Equal(t, int64(7), st.SourceRows)
		assert.Equal(t, int64(2), st.TargetKeys)
		assert.Equal(t, int64(1), st.TargetNullKeys)
	}

	// Duplicate long keys: post 8 twice, missing; post 1 again, present.
	src = appendTo(t, src, 10, []postdata.Post{{ID: 8, Text: "x"}, {ID: 8, Text: "y"}, {ID: 1, Text: "z"}})
	tgt = appendTo(t, tgt, 10, []postdata.Post{{ID: 1}, {ID: 2}, {ID: 3}, {ID: 4}, {ID: 5}, {ID: 6}, {ID: 7}})
	got, st := missingOf(t, src, tgt, storage.AntiJoinOptions{Key: "post_id", Columns: []string{"post_id", "text"}})
	assert.Equal(t, map[int64][]string{8: {"x", "y"}}, got)
	assert.Equal(t, int64(10), st.SourceRows)
}

func TestFindMissingRowsAfterMergeOnReadDeletes(t *testing.T) {
	t.Parallel()
	// Delete files leave fewer rows than the data files hold: positions
	// are counted as rows come, and every file is read.
	src, tgt := keyTables(t, 1000, func(id int64) bool { return id%10 != 0 })
	txn := src.NewTransaction()
	require.NoError(t, txn.SetProperties(map[string]string{table.WriteDeleteModeKey: table.WriteModeMergeOnRead}))
	src, err := txn.Commit(t.Context())
	require.NoError(t, err)
	txn = src.NewTransaction()
	require.NoError(t, txn.Delete(t.Context(), iceberg.LessThan(iceberg.Reference("post_id"), int64(105)), nil))
	src, err = txn.Commit(t.Context())
	require.NoError(t, err)
	tasks, err := src.Scan().PlanFiles(t.Context())
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(tasks, func(ft table.FileScanTask) bool { return len(ft.DeleteFiles)+len(ft.DeletionVectorFiles) > 0 }),
		"the delete wrote delete files")

	got, st := missingOf(t, src, tgt, storage.AntiJoinOptions{Key: "post_id", Columns: []string{"post_id", "text"}, MemoryBytes: 4 << 10})
	want := map[int64][]string{}
	for id := int64(110); id <= 1000; id += 10 {
		want[id] = []string{postText(id)}
	}
	assert.Equal(t, want, got)
	assert.Equal(t, int64(1000-104), st.SourceRows)
	assert.Equal(t, st.Files, st.FilesToRead)
}

func TestFindMissingRowsRefusesBadOptions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	src := appendTo(t, b.src, 10, []postdata.Post{{ID: 1, Text: "a"}})
	for _, c := range []struct {
		opts storage.AntiJoinOptions
		want string
	}{
		{storage.AntiJoinOptions{Columns: []string{"text"}}, "no key column"},
		{storage.AntiJoinOptions{Key: "post_id"}, "no columns"},
		{storage.AntiJoinOptions{Key: "post_id", Columns: []string{"text"}, MemoryBytes: 100}, "memory budget"},
		{storage.AntiJoinOptions{Key: "nope", Columns: []string{"text"}}, "nope"},
		{storage.AntiJoinOptions{Key: "created_at", Columns: []string{"text"}}, "want long, int or string"},
	} {
		_, err := storage.FindMissingRows(t.Context(), src, nil, c.opts)
		assert.ErrorContains(t, err, c.want)
	}
	// Keys of another kind in the target.
	_, err := storage.FindMissingRows(t.Context(), src, src, storage.AntiJoinOptions{Key: "post_id", TargetKey: "author", Columns: []string{"text"}})
	assert.ErrorContains(t, err, "target key author string keys")
}

// TestFindMissingRowsCancelled stops the join in each of its phases and
// while its rows stream: the error is the context's, and neither a
// goroutine nor a spill file is left. (Not parallel: goleak looks at every
// goroutine of the process.)
func TestFindMissingRowsCancelled(t *testing.T) {
	src, tgt := keyTables(t, 3000, func(id int64) bool { return id%3 != 0 })
	ignore := goleak.IgnoreCurrent()
	mem := memory.NewCheckedAllocator(memory.DefaultAllocator)

	for _, phase := range []storage.AntiJoinPhase{storage.PhaseTargetKeys, storage.PhaseSourceKeys, storage.PhaseJoin} {
		tmp := t.TempDir()
		ctx, cancel := context.WithCancel(compute.WithAllocator(t.Context(), mem))
		calls := 0
		_, err := storage.FindMissingRows(ctx, src, tgt, storage.AntiJoinOptions{
			Key: "author", Columns: []string{"post_id", "text"}, MemoryBytes: 4 << 10, TempDir: tmp,
			Read: storage.ReadOptions{BatchRows: 256, Concurrency: 2},
			Progress: func(p storage.AntiJoinPhase, st storage.AntiJoinStats) {
				if p == phase {
					if calls++; calls == 2 { // partway through the phase
						assert.Positive(t, st.SpillBytes, "spill files exist by now")
						cancel()
					}
				}
			},
		})
		require.ErrorIs(t, err, context.Canceled, phase)
		assert.Equal(t, 2, calls, phase)
		cancel()
		assertEmptyDir(t, tmp)
	}

	// Cancelled while the rows stream, and a loop that stops early.
	tmp := t.TempDir()
	ctx, cancel := context.WithCancel(compute.WithAllocator(t.Context(), mem))
	defer cancel()
	m, err := storage.FindMissingRows(ctx, src, tgt, storage.AntiJoinOptions{
		Key: "post_id", Columns: []string{"post_id", "text"}, MemoryBytes: 4 << 10, TempDir: tmp,
		Read: storage.ReadOptions{BatchRows: 100, Concurrency: 2},
	})
	require.NoError(t, err)
	assertEmptyDir(t, tmp)
	batches := 0
	for rec, err := range m.Batches(ctx) {
		rec.Release()
		require.NoError(t, err)
		batches++
		break
	}
	assert.Equal(t, 1, batches)
	var last error
	for rec, err := range m.Batches(ctx) {
		if err != nil {
			last = err
			break
		}
		rec.Release()
		cancel()
	}
	require.ErrorIs(t, last, context.Canceled)
	mem.AssertSize(t, 0)
	goleak.VerifyNone(t, ignore)
}

func TestFindMissingRowsBatchesAgain(t *testing.T) {
	t.Parallel()
	src, tgt := keyTables(t, 600, func(id int64) bool { return id%2 == 0 })
	m, err := storage.FindMissingRows(t.Context(), src, tgt, storage.AntiJoinOptions{
		Key: "post_id", Columns: []string{"text", "post_id"}, Read: storage.ReadOptions{BatchRows: 64},
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"post_id", "text"}, fieldNames(m.Schema()), "the table's column order")
	for range 2 {
		var rows int64
		for rec, err := range m.Batches(t.Context()) {
			require.NoError(t, err)
			assert.True(t, m.Schema().Equal(rec.Schema()))
			assert.Less(t, rec.NumRows(), int64(2*64), "gathered to about BatchRows")
			rows += rec.NumRows()
			rec.Release()
		}
		assert.Equal(t, int64(300), rows, "each call reads the rows again")
	}
}

func fieldNames(sc *arrow.Schema) []string {
	var out []string
	for _, f := range sc.Fields() {
		out = append(out, f.Name)
	}
	return out
}
