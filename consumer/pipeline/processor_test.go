package pipeline_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
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

func TestProcessRoundsExactlyOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(150)
	s2 := b.AppendPosts(250)
	p := b.Processor(nil)

	res, err := p.Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	require.Len(t, res, 1)
	assert.Equal(t, pipeline.OutcomeEnriched, res[0].Outcome)
	assert.Equal(t, int64(150), res[0].RowsRead)
	assert.Equal(t, int64(150), res[0].RowsWritten)
	assert.Equal(t, int64(150), res[0].Counts.Total())
	assert.Equal(t, storage.Cursor{SnapshotID: s1}, res[0].To)
	assert.True(t, res[0].From.IsZero())

	res, err = p.Process(t.Context(), b.Event(s2))
	require.NoError(t, err)
	assert.Equal(t, int64(250), res[0].RowsWritten)
	assert.Equal(t, storage.Cursor{SnapshotID: s1}, res[0].From)

	// Redelivered and stale events write nothing.
	res, err = p.Process(t.Context(), b.Event(s2))
	require.NoError(t, err)
	assert.Equal(t, pipeline.OutcomeUpToDate, res[0].Outcome)
	assert.Zero(t, res[0].RowsWritten)
	res, err = p.Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	assert.Equal(t, pipeline.OutcomeStale, res[0].Outcome)
	assert.Zero(t, res[0].RowsWritten)

	b.RequireExactlyOnce(400, splitAt(150, s1, s2))
	wm := b.Watermark()
	assert.Equal(t, s2, wm.SnapshotID)
	assert.Equal(t, "1", wm.SpecVersion)
}

func TestEventCoversEarlierAppends(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(10)
	s2 := b.AppendPosts(20)
	s3 := b.AppendPosts(30)
	p := b.Processor(nil)

	res, err := p.Process(t.Context(), b.Event(s3))
	require.NoError(t, err)
	assert.Equal(t, int64(60), res[0].RowsWritten)
	for _, s := range []int64{s1, s2} {
		res, err = p.Process(t.Context(), b.Event(s))
		require.NoError(t, err)
		assert.Equal(t, pipeline.OutcomeStale, res[0].Outcome)
	}
	b.RequireExactlyOnce(60, func(id int64) int64 {
		switch {
		case id <= 10:
			return s1
		case id <= 30:
			return s2
		}
		return s3
	})
}

func TestNonAppendSnapshotsArePassedOver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, p := enrichFirst(b, 40)

	// A range holding only a delete: nothing to read, the watermark moves.
	d1 := b.DeletePosts(5)
	res, err := p.Process(t.Context(), b.Event(d1))
	require.NoError(t, err)
	assert.Equal(t, pipeline.OutcomeEnriched, res[0].Outcome)
	assert.Zero(t, res[0].RowsWritten)
	require.Len(t, res[0].Skipped, 1)
	assert.Equal(t, d1, res[0].Skipped[0].ID)
	assert.Equal(t, d1, b.Watermark().SnapshotID)

	// A delete between two appends: only the appended rows are read.
	d2 := b.DeletePosts(10)
	s3 := b.AppendPosts(25)
	res, err = p.Process(t.Context(), b.Event(s3))
	require.NoError(t, err)
	assert.Equal(t, int64(25), res[0].RowsWritten)
	require.Len(t, res[0].Skipped, 1)
	assert.Equal(t, d2, res[0].Skipped[0].ID)
	assert.Equal(t, s3, b.Watermark().SnapshotID)

	// The deletes do not remove enriched rows: the target has every row
	// ever appended, once.
	b.RequireExactlyOnce(65, nil)
}

func TestBigSnapshotIsCommittedInChunks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Several data files per snapshot, so that chunks can end mid-snapshot.
	b.ManyFiles()
	s1 := b.AppendPostsBatched(3000, 500)
	files := len(mustPlan(t, b, storage.Cursor{}, s1).Units)
	require.Greater(t, files, 2, "want several data files in the snapshot")

	p := b.Processor(nil, func(o *pipeline.Options) { o.ChunkRows = 500 })
	res, err := p.Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	assert.Equal(t, files, res[0].Commits, "one commit per 500-row file with chunk_rows 500")
	assert.Equal(t, int64(3000), res[0].RowsWritten)
	b.RequireExactlyOnce(3000, func(int64) int64 { return s1 })

	// Every commit but the last recorded a partial watermark.
	tgt, err := b.Cat.LoadTable(t.Context(), b.Spec.Target.Table)
	require.NoError(t, err)
	partial := 0
	for s := tgt.CurrentSnapshot(); s != nil; {
		if s.Summary.Properties[storage.PropPartialSnapshotID] == itoa(s1) {
			partial++
		}
		if s.ParentSnapshotID == nil {
			break
		}
		s = tgt.Metadata().SnapshotByID(*s.ParentSnapshotID)
	}
	assert.Equal(t, files-1, partial)
}

func mustPlan(t *testing.T, b *bundle, from storage.Cursor, to int64) *storage.Plan {
	t.Helper()
	plan, err := storage.PlanAppends(t.Context(), b.Src, from, to)
	require.NoError(t, err)
	return plan
}

func TestCancelledRunResumesAfterLastCommittedChunk(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.ManyFiles()
	s1 := b.AppendPostsBatched(2000, 250)
	s2 := b.AppendPostsBatched(2000, 250)

	// Cancel (as a shutdown would) right after the second commit.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	p := b.Processor(nil, func(o *pipeline.Options) {
		o.ChunkRows = 300
		o.BatchRows = 50
		o.OnChunk = cancelAtChunk(2, cancel)
	})
	res, err := p.Process(ctx, b.Event(s2))
	require.ErrorIs(t, err, context.Canceled)
	_, permanent := consumer.IsPermanent(err)
	assert.False(t, permanent, "a cancellation is not a permanent failure")
	committed := res[0].RowsWritten
	require.Equal(t, 2, res[0].Commits)
	require.Greater(t, committed, int64(0), "some chunks were committed before the cancellation")
	require.Less(t, committed, int64(4000))
	wm := b.Watermark()
	assert.NotEqual(t, s2, wm.SnapshotID, "the watermark must not claim the whole range")

	// The redelivery resumes after the last committed chunk.
	p2 := b.Processor(nil, func(o *pipeline.Options) { o.ChunkRows = 300 })
	res, err = p2.Process(t.Context(), b.Event(s2))
	require.NoError(t, err)
	assert.Equal(t, wm.Cursor, res[0].From)
	assert.Equal(t, 4000-committed, res[0].RowsWritten)
	b.RequireExactlyOnce(4000, splitAt(2000, s1, s2))
}

func TestPermanentFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(5)
	p := b.Processor(nil)
	tests := []struct {
		name   string
		give   consumer.SnapshotEvent
		reason string
		want   string
	}{
		{"unknown table", consumer.SnapshotEvent{Table: "social.other", SnapshotID: s1}, consumer.ReasonUnknownTable, "no job reads table social.other (known jobs: sentiment (reads social.posts))"},
		{"unknown job", consumer.SnapshotEvent{Table: "social.posts", SnapshotID: s1, Job: "topics"}, consumer.ReasonUnknownJob, `no job is named "topics"`},
		{"unknown snapshot", consumer.SnapshotEvent{Table: "social.posts", SnapshotID: 12345}, consumer.ReasonSnapshotNotFound, "snapshot 12345"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := p.Process(t.Context(), tt.give)
			requirePermanent(t, err, tt.reason)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestSourceWithoutJobColumnsIsPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(5)
	spec := *b.Spec
	spec.Source.Carry = []string{"author", "country"}
	l, err := enrich.NewLexicon(&spec)
	require.NoError(t, err)
	p, err := pipeline.NewProcessor(b.Cat, []pipeline.Job{{Spec: &spec, Model: l}}, pipeline.Options{Logger: quietLogger(), Allocator: b.Mem})
	require.NoError(t, err)
	_, err = p.Process(t.Context(), b.Event(s1))
	requirePermanent(t, err, consumer.ReasonSchemaMismatch)
	assert.Contains(t, err.Error(), "country")
}

func TestTargetWithAnotherSchemaIsNotWritten(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(5)
	// A target that exists with other columns.
	_, err := b.Cat.CreateIcebergTable(t.Context(), b.Spec.Target.Table, postdata.Schema(), nil)
	require.NoError(t, err)
	_, err = b.Processor(nil).Process(t.Context(), b.Event(s1))
	requirePermanent(t, err, consumer.ReasonSchemaMismatch)
	assert.Contains(t, err.Error(), "column sentiment is missing")
	assert.Contains(t, err.Error(), "table has (post_id int64")
	assert.Contains(t, err.Error(), "job writes (post_id int64, author utf8")
	tgt, err := b.Cat.LoadTable(t.Context(), b.Spec.Target.Table)
	require.NoError(t, err)
	assert.Nil(t, tgt.CurrentSnapshot(), "nothing written into it")
}

func TestSkippedRowsAreWrittenNotDropped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(500) // the sample posts include empty ones
	res, err := b.Processor(nil).Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	require.Positive(t, res[0].Counts[enrich.StatusSkipped])
	skipped := 0
	for _, r := range b.TargetRows() {
		if r[enrich.ColStatus] == string(enrich.StatusSkipped) {
			skipped++
			assert.Nil(t, r["sentiment"])
		}
	}
	assert.Equal(t, res[0].Counts[enrich.StatusSkipped], int64(skipped))
}

// TestOverwriteAndCompactionArePassedOver: snapshots that replace files
// (a compaction) or overwrite rows add no rows to enrich; the watermark
// moves past them with a log line, and only appends are read.
func TestOverwriteAndCompactionArePassedOver(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.ManyFiles()
	s1 := b.AppendPostsBatched(300, 100) // three data files
	p := b.Processor(nil)
	_, err := p.Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	ctx := t.Context()

	// A compaction: the three files rewritten into one.
	tasks, err := b.Src.Scan().PlanFiles(ctx)
	require.NoError(t, err)
	require.Len(t, tasks, 3)
	rw, err := b.Src.RewriteDataFiles(ctx, []table.CompactionTaskGroup{{Tasks: tasks}}, table.RewriteDataFilesOptions{})
	require.NoError(t, err)
	if rw.Table != nil {
		b.Src = rw.Table
	} else {
		b.Src, err = b.Cat.LoadTable(ctx, b.Spec.Source.Table)
		require.NoError(t, err)
	}
	replace := b.Src.CurrentSnapshot()
	require.Equal(t, table.OpReplace, replace.Summary.Operation)

	// A delete of the rows below 50, then an overwrite of those below 100
	// (rewriting the file that held them, adding no new rows).
	del := b.DeletePosts(50)
	sc, err := table.SchemaToArrowSchema(b.Src.Schema(), nil, false, false)
	require.NoError(t, err)
	empty, err := array.NewRecordReader(sc, nil)
	require.NoError(t, err)
	defer empty.Release()
	txn := b.Src.NewTransaction()
	require.NoError(t, txn.Overwrite(ctx, empty, nil, table.WithOverwriteFilter(iceLess("post_id", 100))))
	b.Src, err = txn.Commit(ctx)
	require.NoError(t, err)
	overwrite := b.Src.CurrentSnapshot()
	require.Equal(t, table.OpOverwrite, overwrite.Summary.Operation)

	s4 := b.AppendPosts(120)
	res, err := p.Process(ctx, b.Event(s4))
	require.NoError(t, err)
	var skipped []int64
	for _, s := range res[0].Skipped {
		skipped = append(skipped, s.ID)
	}
	assert.Equal(t, []int64{replace.SnapshotID, del, overwrite.SnapshotID}, skipped)
	// The rows the delete and the overwrite added (rewriting files,
	// copy-on-write) are counted as not enriched; the compaction's are not.
	added := func(id int64) int64 {
		n, _ := strconv.ParseInt(b.Src.Metadata().SnapshotByID(id).Summary.Properties["added-records"], 10, 64)
		return n
	}
	assert.Positive(t, added(overwrite.SnapshotID))
	assert.Equal(t, added(del)+added(overwrite.SnapshotID), res[0].SkippedRows)
	assert.Equal(t, int64(120), res[0].RowsWritten, "only the append is read")
	assert.Equal(t, s4, b.Watermark().SnapshotID)
	b.RequireExactlyOnce(420, splitAt(300, s1, s4))
}

// TestSourceThatGainedAColumnStillWorks: a new column in the source (and
// in its new data files) is not read and changes nothing.
func TestSourceThatGainedAColumnStillWorks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1, p := enrichFirst(b, 100)
	ctx := t.Context()
	var err error

	txn := b.Src.NewTransaction()
	require.NoError(t, txn.UpdateSchema(true, false).AddColumn([]string{"likes"}, iceberg.PrimitiveTypes.Int64, "", false, nil).Commit())
	b.Src, err = txn.Commit(ctx)
	require.NoError(t, err)
	require.Len(t, b.Src.Schema().Fields(), 6)

	// Append rows that carry the new column too.
	sc, err := table.SchemaToArrowSchema(b.Src.Schema(), nil, false, false)
	require.NoError(t, err)
	rb := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer rb.Release()
	for i := range int64(50) {
		rb.Field(0).(*array.Int64Builder).Append(101 + i)
		rb.Field(1).(*array.StringBuilder).Append("what a lovely day")
		rb.Field(2).(*array.StringBuilder).Append("ana")
		rb.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(1_700_000_000_000_000))
		rb.Field(4).(*array.StringBuilder).Append("en")
		rb.Field(5).(*array.Int64Builder).Append(i)
	}
	rec := rb.NewRecordBatch()
	defer rec.Release()
	rdr, err := array.NewRecordReader(sc, []arrow.RecordBatch{rec})
	require.NoError(t, err)
	defer rdr.Release()
	txn = b.Src.NewTransaction()
	require.NoError(t, txn.Append(ctx, rdr, nil))
	b.Src, err = txn.Commit(ctx)
	require.NoError(t, err)
	s2 := b.Src.CurrentSnapshot().SnapshotID

	res, err := p.Process(ctx, b.Event(s2))
	require.NoError(t, err)
	assert.Equal(t, int64(50), res[0].RowsWritten)
	b.RequireExactlyOnce(150, splitAt(100, s1, s2))
}

// TestSourceThatLostAJobColumnIsPermanent: dropping a column the job
// carries makes every event a permanent failure that names the column,
// and nothing is written.
func TestSourceThatLostAJobColumnIsPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1, p := enrichFirst(b, 20)
	s2 := b.AppendPosts(20)
	var err error

	txn := b.Src.NewTransaction()
	require.NoError(t, txn.UpdateSchema(true, false).DeleteColumn([]string{"author"}).Commit())
	b.Src, err = txn.Commit(t.Context())
	require.NoError(t, err)

	_, err = p.Process(t.Context(), b.Event(s2))
	requirePermanent(t, err, consumer.ReasonSchemaMismatch)
	assert.Contains(t, err.Error(), "author")
	assert.Contains(t, err.Error(), "job sentiment cannot read table social.posts")
	t.Logf("error: %v", err)
	assert.Equal(t, s1, b.Watermark().SnapshotID, "nothing written")
	b.RequireExactlyOnce(20, nil)
}

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
		o.OnChunk = cancelAtChunk(3, cancel)
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
	b.RequireExactlyOnce(2600, splitAt(100, s1, s2))
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

// TestExpiredSourceHistoryIsDeadLetteredWithItsReason: when ingestion
// expired the snapshots after the watermark (S3 Tables does after 5 days),
// reading on would skip their rows: the event is permanent with reason
// source_history_expired and a hint to resync, and nothing is written.
func TestExpiredSourceHistoryIsDeadLetteredWithItsReason(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1, p := enrichFirst(b, 10)
	b.AppendPosts(10)
	s3 := b.AppendPosts(10)
	b.Src = testbed.ExpireSource(t, b.Src, 1)

	_, err := p.Process(t.Context(), b.Event(s3))
	requirePermanent(t, err, consumer.ReasonHistoryExpired)
	assert.Contains(t, err.Error(), "enricher resync --job sentiment")
	assert.Equal(t, s1, b.Watermark().SnapshotID, "nothing written")
	b.RequireExactlyOnce(10, nil)
}

// TestTargetsStayBoundedOverManyEvents: an event a minute for a year must
// not grow the target's metadata or its file count without end. Over a
// few hundred small events the processor expires snapshots after its
// commits and compacts the target once it is due, and every row is there
// once; with maintenance off the same events leave a snapshot and a file
// per event.
func TestTargetsStayBoundedOverManyEvents(t *testing.T) {
	t.Parallel()
	const events, rows = 150, 4
	run := func(t *testing.T, off bool) storage.TableHealth {
		b := setup(t)
		p := b.Processor(nil, func(o *pipeline.Options) {
			o.NoMaintenance = off
			o.MaintainEvery = time.Nanosecond // due whenever it holds enough files
			o.MaintainMinFiles = 40
		})
		for range events {
			_, err := p.Process(t.Context(), b.Event(b.AppendPosts(rows)))
			require.NoError(t, err)
		}
		b.RequireExactlyOnce(events*rows, nil)
		tgt, err := b.Cat.LoadTable(t.Context(), b.Spec.Target.Table)
		require.NoError(t, err)
		h, err := storage.Health(t.Context(), tgt)
		require.NoError(t, err)
		return h
	}
	var on, off storage.TableHealth
	t.Run("defaults", func(t *testing.T) { on = run(t, false) })
	t.Run("maintenance off", func(t *testing.T) { off = run(t, true) })
	assert.LessOrEqual(t, on.Snapshots, 2*storage.DefaultMinSnapshotsToKeep, "snapshots held with the defaults")
	assert.Less(t, on.DataFiles, int64(40+10), "compaction keeps the file count under its trigger")
	assert.LessOrEqual(t, on.MetadataFiles, 11, "metadata.json files kept")
	assert.False(t, on.LastMaintenance.IsZero(), "maintained on its own")
	assert.GreaterOrEqual(t, off.Snapshots, events, "contrast: a snapshot per event without maintenance")
	assert.Greater(t, off.DataFiles, int64(events-1))
	assert.Greater(t, off.MetadataBytes, 4*on.MetadataBytes)
}

// TestMaintenanceByAnotherProcessWhileConsuming: while a consumer takes
// event after event, another process maintains the target the way S3
// Tables, Glue optimizers or a Spark job would: compaction, manifest
// rewrite, expiry down to one snapshot, orphan cleanup. The consumer's
// commits that lose re-plan, the watermark survives, and every row is in
// the target exactly once.
func TestMaintenanceByAnotherProcessWhileConsuming(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.Processor(nil, func(o *pipeline.Options) { o.ConflictRetries = 20 })
	s1 := b.AppendPosts(20)
	_, err := p.Process(t.Context(), b.Event(s1))
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var rounds atomic.Int64
	wg.Go(func() { // the other process
		for ctx.Err() == nil {
			// Orphan cleanup keeps its grace above a chunk's time from files to
			// commit (with a grace of 1ns it deletes the files of a chunk in
			// flight, and the commit then names files that are gone).
			if _, err := b.Cat.Maintain(ctx, b.Spec.Target.Table, storage.MaintainOptions{OrphanGrace: time.Hour, MinInputFiles: 2}); err != nil && ctx.Err() == nil {
				t.Errorf("maintain: %v", err)
				return
			}
			tgt, err := b.Cat.LoadTable(ctx, b.Spec.Target.Table)
			if err != nil {
				continue
			}
			txn := tgt.NewTransaction()
			if txn.ExpireSnapshots(table.WithRetainLast(1), table.WithOlderThan(0)) == nil {
				_, _ = txn.Commit(ctx) // a lost race with the consumer is fine
			}
			rounds.Add(1)
		}
	})
	const events = 40
	var conflicts int
	for range events {
		res, err := p.Process(t.Context(), b.Event(b.AppendPosts(5)))
		require.NoError(t, err)
		conflicts += res[0].Conflicts
	}
	cancel()
	wg.Wait()
	t.Logf("maintenance rounds: %d, consumer conflicts re-planned: %d", rounds.Load(), conflicts)
	require.Positive(t, rounds.Load(), "the other process ran")
	b.RequireExactlyOnce(20+events*5, nil)
	assert.Equal(t, b.Src.CurrentSnapshot().SnapshotID, b.Watermark().SnapshotID)
}

// TestABackfillIsCompactedBeforeTheHour: at a backfill's pace an hour
// brings thousands of small files; four times the file trigger makes the
// target due however recently it was maintained.
func TestABackfillIsCompactedBeforeTheHour(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.Processor(nil, func(o *pipeline.Options) {
		o.MaintainEvery = time.Hour
		o.MaintainMinFiles = 8
	})
	for range 70 {
		_, err := p.Process(t.Context(), b.Event(b.AppendPosts(2)))
		require.NoError(t, err)
	}
	b.RequireExactlyOnce(140, nil)
	tgt, err := b.Cat.LoadTable(t.Context(), b.Spec.Target.Table)
	require.NoError(t, err)
	h, err := storage.Health(t.Context(), tgt)
	require.NoError(t, err)
	assert.LessOrEqual(t, h.DataFiles, int64(4*8), "compacted at 32 files, not left at 70 until the hour")
}
