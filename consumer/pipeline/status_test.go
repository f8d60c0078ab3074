package pipeline_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

// TestStatusShowsTargetHealthAndSourceHistory: Status reports the
// target's health once it exists, and whether the source's history still
// reaches the watermark, without failing the job's line when it does not.
func TestStatusShowsTargetHealthAndSourceHistory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	p := b.Processor(nil)
	status := func() pipeline.JobStatus {
		st, err := p.Status(t.Context())
		require.NoError(t, err)
		require.Len(t, st, 1)
		return st[0]
	}

	s1 := b.AppendPosts(10)
	s := status()
	assert.Empty(t, s.Problem)
	assert.Nil(t, s.Health, "no target yet")
	require.NotNil(t, s.HistoryReaches)
	assert.True(t, *s.HistoryReaches)
	assert.Equal(t, 1, s.Behind)

	for range 3 {
		_, err := p.Process(t.Context(), b.Event(b.AppendPosts(10)))
		require.NoError(t, err)
	}
	s = status()
	require.NotNil(t, s.Health)
	h := *s.Health
	assert.Equal(t, int64(3), h.DataFiles)
	assert.Equal(t, int64(40), h.Rows)
	assert.Equal(t, h.DataBytes/3, h.MeanDataFileBytes)
	assert.Positive(t, h.Snapshots)
	assert.Positive(t, h.MetadataFiles)
	assert.Positive(t, h.MetadataBytes)
	assert.Positive(t, h.Manifests)
	assert.Nil(t, h.LastMaintenance, "never maintained")
	assert.Equal(t, storage.DefaultMinSnapshotsToKeep, h.RetainSnapshots)
	assert.True(t, *s.HistoryReaches)
	assert.Equal(t, 0, s.Behind)

	_, err := b.Cat.Maintain(t.Context(), b.Spec.Target.Table, storage.MaintainOptions{MinInputFiles: 2})
	require.NoError(t, err)
	s = status()
	require.NotNil(t, s.Health.LastMaintenance)
	assert.Equal(t, int64(1), s.Health.DataFiles)

	// Appends after the watermark, then an expiry of the source down to
	// its newest snapshot: the watermark's snapshot is gone.
	b.AppendPosts(5)
	b.AppendPosts(5)
	b.Src = testbed.ExpireSource(t, b.Src, 1)
	require.Nil(t, b.Src.SnapshotByID(s1))

	s = status()
	assert.Empty(t, s.Problem, "the line is still there")
	require.NotNil(t, s.HistoryReaches)
	assert.False(t, *s.HistoryReaches)
	assert.True(t, s.HistoryExpired)
	assert.Contains(t, s.HistoryProblem, storage.ErrHistoryExpired.Error())
	assert.Equal(t, 0, s.Behind, "not planned")
	require.NotNil(t, s.Health)
	assert.Equal(t, int64(40), s.Health.Rows)
}
