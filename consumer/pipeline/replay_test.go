package pipeline_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/postdata"
)

// keyOn gives b's job a copy of its spec keyed on the source column key
// (carrying post_id) and writing a target table of its own, and returns
// that spec.
func keyOn(b *bundle, key, target string) *enrich.Spec {
	spec := *b.Spec
	spec.Source.Key, spec.Source.Carry = key, []string{"post_id"}
	spec.Target.Table = target
	b.Spec = &spec
	return b.Spec
}

// TestReplayFindsTheKeyWhereverTheSourceHasIt: a job keyed on a column
// that is not the source's first replays by key without losing a row.
func TestReplayFindsTheKeyWhereverTheSourceHasIt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	spec := keyOn(b, "author", "social.posts_by_author")
	spec.Model.Provider, spec.Model.Name = enrich.ProviderNoop, "fixed"
	noop, err := enrich.NewNoop(spec)
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

// TestReplayKeepsRowsWhoseKeyIsNull: with a nullable key that holds nulls
// (key: lang), a replay deletes and writes again the same rows: null
// matches null on both sides, so no row is lost (issue 13.1: 304 rows
// became 300).
func TestReplayKeepsRowsWhoseKeyIsNull(t *testing.T) {
	t.Parallel()
	b := setup(t)
	spec := keyOn(b, "lang", "social.posts_by_lang")
	// Sample posts, every seventh without a language (a null key).
	posts := postdata.Edited(postdata.Sample(300, 1, 3), func(p *postdata.Post) {
		if p.ID%7 == 0 {
			p.Lang = ""
		}
	})
	var err error
	b.Src, _, err = postdata.Append(t.Context(), b.Src, posts)
	require.NoError(t, err)
	snap := b.Src.CurrentSnapshot().SnapshotID
	p := b.Processor(nil)
	_, err = p.Process(t.Context(), b.Event(snap))
	require.NoError(t, err)
	before := b.TargetRows()
	nulls, skipped := 0, 0
	for _, r := range before {
		if r["lang"] == nil {
			nulls++
		}
		if r[enrich.ColStatus] == string(enrich.StatusSkipped) {
			skipped++
		}
	}
	require.Positive(t, nulls, "the sample has posts without a language")
	require.Positive(t, skipped, "and posts without text")

	for _, statuses := range [][]enrich.Status{{enrich.StatusSkipped}, {enrich.StatusOK}} {
		_, err := p.Replay(t.Context(), pipeline.ReplayRequest{Job: spec.Name, From: snap, To: snap, OnlyStatus: statuses})
		require.NoError(t, err)
		rows := b.TargetRows()
		require.Len(t, rows, len(before), "replay of %v: no row lost", statuses)
		seen := map[any]int{}
		for _, r := range rows {
			seen[r["post_id"]]++
		}
		for id, n := range seen {
			require.Equal(t, 1, n, "post %v", id)
		}
	}
}
