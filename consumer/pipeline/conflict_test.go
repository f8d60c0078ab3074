package pipeline_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

// meddler answers like the lexicon, but runs first (once, before its
// first answer) — while the chunk it answers for is being written, after
// that chunk's commit was pinned to the target's current snapshot.
type meddler struct {
	inner enrich.Model
	first func(ctx context.Context) error
	once  sync.Once
	err   error
	items atomic.Int64 // rows sent to the model
}

func newMeddler(t *testing.T, spec *enrich.Spec, first func(ctx context.Context) error) *meddler {
	l, err := enrich.NewLexicon(spec)
	require.NoError(t, err)
	return &meddler{inner: l, first: first}
}

func (m *meddler) Name() string { return m.inner.Name() }

func (m *meddler) Annotate(ctx context.Context, items []enrich.Item, out []enrich.Answer) error {
	m.once.Do(func() { m.err = m.first(ctx) })
	m.items.Add(int64(len(items)))
	return m.inner.Annotate(ctx, items, out)
}

func requireNoOrphans(b *bundle) {
	b.T.Helper()
	tgt, err := b.Cat.LoadTable(b.T.Context(), b.Spec.Target.Table)
	require.NoError(b.T, err)
	orphans, err := storage.Orphans(b.T.Context(), tgt, 0, false)
	require.NoError(b.T, err)
	require.Empty(b.T, orphans, "data files of failed commits are removed")
}

// A commit that loses to a writer other than the job (here another job's
// commit on the same target) keeps its chunk: its data files are committed
// again, and no row is enriched twice.
func TestConflictWithAnotherWriterKeepsTheChunk(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(500)
	m := newMeddler(t, b.Spec, func(ctx context.Context) error {
		tgt, err := b.Cat.LoadTable(ctx, b.Spec.Target.Table)
		if err != nil {
			return err
		}
		sc, err := table.SchemaToArrowSchema(tgt.Schema(), nil, false, false)
		if err != nil {
			return err
		}
		_, _, err = storage.AppendChunk(ctx, tgt, &storage.Commit{Job: "other", SourceTable: "social.elsewhere",
			After: storage.Cursor{SnapshotID: 7}, Schema: sc, Batches: func(func(arrow.RecordBatch, error) bool) {}})
		return err
	})
	res, err := b.Processor(m).Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	require.NoError(t, m.err)
	assert.Equal(t, 1, res[0].Conflicts)
	assert.Equal(t, 1, res[0].Commits)
	assert.Equal(t, int64(500), res[0].RowsWritten)
	b.RequireExactlyOnce(500, func(int64) int64 { return s1 })
	assert.Equal(t, s1, b.Watermark().SnapshotID)
	sent := int64(0)
	for _, r := range b.TargetRows() {
		if r[enrich.ColStatus] != string(enrich.StatusSkipped) {
			sent++
		}
	}
	assert.Equal(t, sent, m.items.Load(), "every row was sent to the model once")
	requireNoOrphans(b)
}

// A commit that loses to another consumer of the same job, which committed
// the same rows first, drops its chunk and deletes its data files; the
// re-plan finds nothing left to do.
func TestConflictWithARacingConsumerDropsTheChunk(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.ManyFiles()
	s1 := b.AppendPostsBatched(600, 200)
	other := b.Processor(nil)
	var otherRes []pipeline.Result
	m := newMeddler(t, b.Spec, func(ctx context.Context) error {
		var err error
		otherRes, err = other.Process(ctx, b.Event(s1))
		return err
	})
	res, err := b.Processor(m, func(o *pipeline.Options) { o.ChunkRows = 200 }).Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	require.NoError(t, m.err)
	require.Len(t, otherRes, 1)
	assert.Equal(t, int64(600), otherRes[0].RowsWritten, "the racing consumer wrote the range")
	assert.Equal(t, 1, res[0].Conflicts)
	assert.Zero(t, res[0].RowsWritten, "the loser wrote nothing")
	b.RequireExactlyOnce(600, func(int64) int64 { return s1 })
	requireNoOrphans(b)
}
