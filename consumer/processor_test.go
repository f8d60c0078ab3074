package consumer_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

func TestProcessRoundsExactlyOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.appendPosts(150)
	s2 := b.appendPosts(250)
	p := b.processor(nil)

	res, err := p.Process(t.Context(), b.event(s1))
	require.NoError(t, err)
	require.Len(t, res, 1)
	assert.Equal(t, consumer.OutcomeEnriched, res[0].Outcome)
	assert.Equal(t, int64(150), res[0].RowsRead)
	assert.Equal(t, int64(150), res[0].RowsWritten)
	assert.Equal(t, int64(150), res[0].Counts.Total())
	assert.Equal(t, storage.Cursor{SnapshotID: s1}, res[0].To)
	assert.True(t, res[0].From.IsZero())

	res, err = p.Process(t.Context(), b.event(s2))
	require.NoError(t, err)
	assert.Equal(t, int64(250), res[0].RowsWritten)
	assert.Equal(t, storage.Cursor{SnapshotID: s1}, res[0].From)

	// Redelivered and stale events write nothing.
	res, err = p.Process(t.Context(), b.event(s2))
	require.NoError(t, err)
	assert.Equal(t, consumer.OutcomeUpToDate, res[0].Outcome)
	assert.Zero(t, res[0].RowsWritten)
	res, err = p.Process(t.Context(), b.event(s1))
	require.NoError(t, err)
	assert.Equal(t, consumer.OutcomeStale, res[0].Outcome)
	assert.Zero(t, res[0].RowsWritten)

	b.requireExactlyOnce(400, func(id int64) int64 {
		if id <= 150 {
			return s1
		}
		return s2
	})
	wm := b.watermark()
	assert.Equal(t, s2, wm.SnapshotID)
	assert.Equal(t, "1", wm.SpecVersion)
}

func TestEventCoversEarlierAppends(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.appendPosts(10)
	s2 := b.appendPosts(20)
	s3 := b.appendPosts(30)
	p := b.processor(nil)

	res, err := p.Process(t.Context(), b.event(s3))
	require.NoError(t, err)
	assert.Equal(t, int64(60), res[0].RowsWritten)
	for _, s := range []int64{s1, s2} {
		res, err = p.Process(t.Context(), b.event(s))
		require.NoError(t, err)
		assert.Equal(t, consumer.OutcomeStale, res[0].Outcome)
	}
	b.requireExactlyOnce(60, func(id int64) int64 {
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
	s1 := b.appendPosts(40)
	p := b.processor(nil)
	_, err := p.Process(t.Context(), b.event(s1))
	require.NoError(t, err)

	// A range holding only a delete: nothing to read, the watermark moves.
	d1 := b.deletePosts(5)
	res, err := p.Process(t.Context(), b.event(d1))
	require.NoError(t, err)
	assert.Equal(t, consumer.OutcomeEnriched, res[0].Outcome)
	assert.Zero(t, res[0].RowsWritten)
	require.Len(t, res[0].Skipped, 1)
	assert.Equal(t, d1, res[0].Skipped[0].ID)
	assert.Equal(t, d1, b.watermark().SnapshotID)

	// A delete between two appends: only the appended rows are read.
	d2 := b.deletePosts(10)
	s3 := b.appendPosts(25)
	res, err = p.Process(t.Context(), b.event(s3))
	require.NoError(t, err)
	assert.Equal(t, int64(25), res[0].RowsWritten)
	require.Len(t, res[0].Skipped, 1)
	assert.Equal(t, d2, res[0].Skipped[0].ID)
	assert.Equal(t, s3, b.watermark().SnapshotID)

	// The deletes do not remove enriched rows: the target has every row
	// ever appended, once.
	b.requireExactlyOnce(65, nil)
}

func TestBigSnapshotIsCommittedInChunks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Several data files per snapshot, so that chunks can end mid-snapshot.
	b.manyFiles()
	s1 := b.appendPostsBatched(3000, 500)
	files := len(mustPlan(t, b, storage.Cursor{}, s1).Units)
	require.Greater(t, files, 2, "want several data files in the snapshot")

	p := b.processor(nil, func(o *consumer.Options) { o.ChunkRows = 500 })
	res, err := p.Process(t.Context(), b.event(s1))
	require.NoError(t, err)
	assert.Equal(t, files, res[0].Commits, "one commit per 500-row file with chunk_rows 500")
	assert.Equal(t, int64(3000), res[0].RowsWritten)
	b.requireExactlyOnce(3000, func(int64) int64 { return s1 })

	// Every commit but the last recorded a partial watermark.
	tgt, err := b.cat.LoadTable(t.Context(), b.spec.Target.Table)
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
	plan, err := storage.PlanAppends(t.Context(), b.src, from, to)
	require.NoError(t, err)
	return plan
}

func TestCancelledRunResumesAfterLastCommittedChunk(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.manyFiles()
	s1 := b.appendPostsBatched(2000, 250)
	s2 := b.appendPostsBatched(2000, 250)

	// Cancel (as a shutdown would) right after the second commit.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	p := b.processor(nil, func(o *consumer.Options) {
		o.ChunkRows = 300
		o.BatchRows = 50
		o.OnChunk = func(c consumer.ChunkCommitted) {
			if c.Chunk == 2 {
				cancel()
			}
		}
	})
	res, err := p.Process(ctx, b.event(s2))
	require.ErrorIs(t, err, context.Canceled)
	_, permanent := consumer.IsPermanent(err)
	assert.False(t, permanent, "a cancellation is not a permanent failure")
	committed := res[0].RowsWritten
	require.Equal(t, 2, res[0].Commits)
	require.Greater(t, committed, int64(0), "some chunks were committed before the cancellation")
	require.Less(t, committed, int64(4000))
	wm := b.watermark()
	assert.NotEqual(t, s2, wm.SnapshotID, "the watermark must not claim the whole range")

	// The redelivery resumes after the last committed chunk.
	p2 := b.processor(nil, func(o *consumer.Options) { o.ChunkRows = 300 })
	res, err = p2.Process(t.Context(), b.event(s2))
	require.NoError(t, err)
	assert.Equal(t, wm.Cursor, res[0].From)
	assert.Equal(t, 4000-committed, res[0].RowsWritten)
	b.requireExactlyOnce(4000, func(id int64) int64 {
		if id <= 2000 {
			return s1
		}
		return s2
	})
}

func TestPermanentFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.appendPosts(5)
	p := b.processor(nil)
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
	s1 := b.appendPosts(5)
	spec := *b.spec
	spec.Source.Carry = []string{"author", "country"}
	l, err := enrich.NewLexicon(&spec)
	require.NoError(t, err)
	p, err := consumer.NewProcessor(b.cat, []consumer.Job{{Spec: &spec, Model: l}}, consumer.Options{Logger: quietLogger(), Allocator: b.mem})
	require.NoError(t, err)
	_, err = p.Process(t.Context(), b.event(s1))
	reason, ok := consumer.IsPermanent(err)
	require.True(t, ok, "want a permanent error, got %v", err)
	assert.Equal(t, consumer.ReasonSchemaMismatch, reason)
	assert.Contains(t, err.Error(), "country")
}

func TestTargetWithAnotherSchemaIsNotWritten(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.appendPosts(5)
	// A target that exists with other columns.
	_, err := b.cat.CreateIcebergTable(t.Context(), b.spec.Target.Table, storage.PostsSchema(), nil)
	require.NoError(t, err)
	_, err = b.processor(nil).Process(t.Context(), b.event(s1))
	reason, ok := consumer.IsPermanent(err)
	require.True(t, ok, "want a permanent error, got %v", err)
	assert.Equal(t, consumer.ReasonSchemaMismatch, reason)
	assert.Contains(t, err.Error(), "column sentiment is missing")
	assert.Contains(t, err.Error(), "table has (post_id int64")
	assert.Contains(t, err.Error(), "job writes (post_id int64, author utf8")
	tgt, err := b.cat.LoadTable(t.Context(), b.spec.Target.Table)
	require.NoError(t, err)
	assert.Nil(t, tgt.CurrentSnapshot(), "nothing written into it")
}

func TestSkippedRowsAreWrittenNotDropped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.appendPosts(500) // the sample posts include empty ones
	res, err := b.processor(nil).Process(t.Context(), b.event(s1))
	require.NoError(t, err)
	require.Positive(t, res[0].Counts[enrich.StatusSkipped])
	skipped := 0
	for _, r := range b.targetRows() {
		if r[enrich.ColStatus] == string(enrich.StatusSkipped) {
			skipped++
			assert.Nil(t, r["sentiment"])
		}
	}
	assert.Equal(t, res[0].Counts[enrich.StatusSkipped], int64(skipped))
}
