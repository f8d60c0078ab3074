package pipeline_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/postdata"
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

	b.RequireExactlyOnce(400, func(id int64) int64 {
		if id <= 150 {
			return s1
		}
		return s2
	})
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
	s1 := b.AppendPosts(40)
	p := b.Processor(nil)
	_, err := p.Process(t.Context(), b.Event(s1))
	require.NoError(t, err)

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
		o.OnChunk = func(c pipeline.ChunkCommitted) {
			if c.Chunk == 2 {
				cancel()
			}
		}
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
	b.RequireExactlyOnce(4000, func(id int64) int64 {
		if id <= 2000 {
			return s1
		}
		return s2
	})
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
			reason, ok := consumer.IsPermanent(err)
			require.True(t, ok, "want a permanent error, got %v", err)
			assert.Equal(t, tt.reason, reason)
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
	reason, ok := consumer.IsPermanent(err)
	require.True(t, ok, "want a permanent error, got %v", err)
	assert.Equal(t, consumer.ReasonSchemaMismatch, reason)
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
	reason, ok := consumer.IsPermanent(err)
	require.True(t, ok, "want a permanent error, got %v", err)
	assert.Equal(t, consumer.ReasonSchemaMismatch, reason)
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
