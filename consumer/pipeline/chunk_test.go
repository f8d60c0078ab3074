package pipeline_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

// reference enriches the same posts as b in one commit in a warehouse of
// its own and returns the target rows by post_id: what any chunking must
// reproduce row for row (apart from the enrichment time).
func reference(t *testing.T, appends ...int) map[int64]map[string]any {
	t.Helper()
	r := setup(t)
	var s int64
	for _, n := range appends {
		s = r.AppendPosts(n)
	}
	_, err := r.Processor(nil).Process(t.Context(), r.Event(s))
	require.NoError(t, err)
	out := map[int64]map[string]any{}
	for _, row := range r.TargetRows() {
		out[row["post_id"].(int64)] = row
	}
	return out
}

// requireSameEnrichment checks that b's target rows equal want's, column
// by column, but for the enrichment time and the lineage snapshot.
func requireSameEnrichment(b *bundle, want map[int64]map[string]any) {
	b.T.Helper()
	rows := b.TargetRows()
	require.Len(b.T, rows, len(want))
	for _, r := range rows {
		id := r["post_id"].(int64)
		w, ok := want[id]
		require.True(b.T, ok, "post %d", id)
		for col, v := range w {
			if col == enrich.ColEnrichedAt || col == enrich.ColSourceSnapshotID {
				continue
			}
			require.Equal(b.T, v, r[col], "post %d, column %s", id, col)
		}
	}
}

// targetCursors lists the watermarks the target's snapshots recorded,
// oldest first.
func targetCursors(b *bundle) []storage.Cursor {
	b.T.Helper()
	tgt, err := b.Cat.LoadTable(b.T.Context(), b.Spec.Target.Table)
	require.NoError(b.T, err)
	num := func(p map[string]string, k string) int64 {
		if p[k] == "" {
			return 0
		}
		n, err := strconv.ParseInt(p[k], 10, 64)
		require.NoError(b.T, err)
		return n
	}
	var out []storage.Cursor
	for _, s := range tgt.Metadata().Snapshots() {
		p := s.Summary.Properties
		out = append(out, storage.Cursor{SnapshotID: num(p, storage.PropSourceSnapshotID),
			PartialSnapshotID: num(p, storage.PropPartialSnapshotID), PartialFiles: int(num(p, storage.PropPartialFiles)),
			PartialRows: num(p, storage.PropPartialRows)})
	}
	return out
}

func TestOneBigDataFileIsCommittedInRowRanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(3000) // one data file
	plan := mustPlan(t, b, storage.Cursor{}, s1)
	require.Len(t, plan.Units, 1, "want the whole snapshot in one data file")

	p := b.Processor(nil, func(o *pipeline.Options) { o.ChunkRows = 700 })
	res, err := p.Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	assert.Equal(t, 5, res[0].Commits, "700+700+700+700+200 rows")
	assert.Equal(t, int64(3000), res[0].RowsWritten)
	b.RequireExactlyOnce(3000, func(int64) int64 { return s1 })
	requireSameEnrichment(b, reference(t, 3000))

	var rows []int64
	for _, c := range targetCursors(b) {
		if c.PartialSnapshotID != 0 {
			require.Equal(t, s1, c.PartialSnapshotID)
			require.Zero(t, c.PartialFiles)
			rows = append(rows, c.PartialRows)
		}
	}
	assert.Equal(t, []int64{700, 1400, 2100, 2800}, rows, "each chunk records the rows done inside the file")
	assert.Equal(t, storage.Cursor{SnapshotID: s1}, b.Watermark().Cursor)
}

func TestCancelledRunResumesInsideADataFile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(100)
	s2 := b.AppendPosts(2500) // one data file, cut into chunks of 600 rows

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	p := b.Processor(nil, func(o *pipeline.Options) {
		o.ChunkRows = 600
		o.BatchRows = 256 // chunk ends fall inside batches
		o.OnChunk = func(c pipeline.ChunkCommitted) {
			if c.Chunk == 3 {
				cancel()
			}
		}
	})
	res, err := p.Process(ctx, b.Event(s2))
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, 3, res[0].Commits)
	require.Equal(t, int64(1800), res[0].RowsWritten)
	wm := b.Watermark()
	// 100 rows of s1, then 1700 rows into s2's only file.
	assert.Equal(t, storage.Cursor{SnapshotID: s1, PartialSnapshotID: s2, PartialFiles: 0, PartialRows: 1700}, wm.Cursor)

	// The next delivery reads on from row 1700 of the file.
	plan := mustPlan(t, b, wm.Cursor, s2)
	require.Len(t, plan.Units, 1)
	assert.Equal(t, int64(1700), plan.Units[0].Skip)
	assert.Equal(t, int64(800), plan.Rows())
	res, err = b.Processor(nil, func(o *pipeline.Options) { o.ChunkRows = 600 }).Process(t.Context(), b.Event(s2))
	require.NoError(t, err)
	assert.Equal(t, wm.Cursor, res[0].From)
	assert.Equal(t, int64(800), res[0].RowsWritten)
	assert.Equal(t, 2, res[0].Commits)
	b.RequireExactlyOnce(2600, func(id int64) int64 {
		if id <= 100 {
			return s1
		}
		return s2
	})
	requireSameEnrichment(b, reference(t, 100, 2500))
}

func TestChunksAreAlsoSizedByBytes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(2000)
	plan := mustPlan(t, b, storage.Cursor{}, s1)
	require.Len(t, plan.Units, 1)
	size := plan.Units[0].Task.File.FileSizeBytes()

	// A quarter of the file's bytes per chunk: four commits of 500 rows.
	p := b.Processor(nil, func(o *pipeline.Options) { o.ChunkBytes = size/4 + 1 })
	res, err := p.Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	assert.Equal(t, 4, res[0].Commits)
	b.RequireExactlyOnce(2000, func(int64) int64 { return s1 })
}
