package pipeline_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
)

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
	assert.Equal(t, int64(120), res[0].RowsWritten, "only the append is read")
	assert.Equal(t, s4, b.Watermark().SnapshotID)
	b.RequireExactlyOnce(420, func(id int64) int64 {
		if id <= 300 {
			return s1
		}
		return s4
	})
}

// TestSourceThatGainedAColumnStillWorks: a new column in the source (and
// in its new data files) is not read and changes nothing.
func TestSourceThatGainedAColumnStillWorks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(100)
	p := b.Processor(nil)
	_, err := p.Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	ctx := t.Context()

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
	b.RequireExactlyOnce(150, func(id int64) int64 {
		if id <= 100 {
			return s1
		}
		return s2
	})
}

// TestSourceThatLostAJobColumnIsPermanent: dropping a column the job
// carries makes every event a permanent failure that names the column,
// and nothing is written.
func TestSourceThatLostAJobColumnIsPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(20)
	p := b.Processor(nil)
	_, err := p.Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	s2 := b.AppendPosts(20)

	txn := b.Src.NewTransaction()
	require.NoError(t, txn.UpdateSchema(true, false).DeleteColumn([]string{"author"}).Commit())
	b.Src, err = txn.Commit(t.Context())
	require.NoError(t, err)

	_, err = p.Process(t.Context(), b.Event(s2))
	reason, ok := consumer.IsPermanent(err)
	require.True(t, ok, "want a permanent error, got %v", err)
	assert.Equal(t, consumer.ReasonSchemaMismatch, reason)
	assert.Contains(t, err.Error(), "author")
	assert.Contains(t, err.Error(), "job sentiment cannot read table social.posts")
	t.Logf("error: %v", err)
	assert.Equal(t, s1, b.Watermark().SnapshotID, "nothing written")
	b.RequireExactlyOnce(20, nil)
}
