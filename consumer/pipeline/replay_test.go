package pipeline_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
)

// TestReplayFindsTheKeyWhereverTheSourceHasIt: a job keyed on a column
// that is not the source's first replays by key without losing a row.
func TestReplayFindsTheKeyWhereverTheSourceHasIt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	spec := *b.Spec
	spec.Source.Key, spec.Source.Carry = "author", []string{"post_id"}
	spec.Target.Table = "social.posts_by_author"
	spec.Model.Provider, spec.Model.Name = enrich.ProviderNoop, "fixed"
	b.Spec = &spec
	noop, err := enrich.NewNoop(&spec)
	require.NoError(t, err)
	snap := b.AppendPosts(300)
	p := b.Processor(noop)
	_, err = p.Process(t.Context(), b.Event(snap))
	require.NoError(t, err)
	require.Len(t, b.TargetRows(), 300)

	res, err := p.Replay(t.Context(), pipeline.ReplayRequest{Job: spec.Name, From: snap, To: snap, OnlyStatus: []enrich.Status{enrich.StatusOK}})
	require.NoError(t, err)
	assert.Equal(t, 1, res.Commits)
	rows := b.TargetRows()
	require.Len(t, rows, 300, "every row deleted by the replay is written again")
	seen := map[any]bool{}
	for _, r := range rows {
		require.False(t, seen[r["post_id"]], "post %v twice", r["post_id"])
		seen[r["post_id"]] = true
	}
	assert.Equal(t, int64(300), res.RowsRead)
	assert.Equal(t, int64(300), res.RowsDeleted)
}
