package storage_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/storage"
)

// A plan cut by Head reads exactly its first n rows, also when the cut
// falls inside a data file, and the rest is what PlanAppends from its End
// plans: together every row once.
func TestPlanHeadCutsAtARow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var snaps []int64
	next := int64(1)
	for range 3 { // three snapshots of one 10-row file each
		var posts []postdata.Post
		for range 10 {
			posts = append(posts, postdata.Post{ID: next, Text: "p"})
			next++
		}
		snaps = append(snaps, b.appendPosts(posts...))
	}
	ctx := t.Context()
	read := func(p *storage.Plan) []int64 {
		var ids []int64
		for _, run := range [][]storage.Unit{p.Units} {
			// Units of several snapshots are read one snapshot at a time.
			for i := 0; i < len(run); {
				j := i + 1
				for j < len(run) && run[j].SnapshotID == run[i].SnapshotID {
					j++
				}
				for rec, err := range storage.ReadUnits(ctx, b.src, []string{"post_id"}, run[i:j], storage.ReadOptions{BatchRows: 4}) {
					require.NoError(t, err)
					col := rec.Column(0).(*array.Int64)
					for k := range col.Len() {
						ids = append(ids, col.Value(k))
					}
					rec.Release()
				}
				i = j
			}
		}
		return ids
	}
	for _, n := range []int64{1, 7, 10, 13, 20, 29} {
		plan, err := storage.PlanAppends(ctx, b.src, storage.Cursor{}, snaps[2])
		require.NoError(t, err)
		var got []int64
		from := storage.Cursor{}
		for guard := 0; ; guard++ {
			require.Less(t, guard, 40)
			head := plan.Head(n)
			part := read(head)
			if head != plan {
				assert.Len(t, part, int(n), "n=%d: the head holds n rows", n)
				assert.Equal(t, n, head.Rows())
			}
			got = append(got, part...)
			if head == plan {
				assert.Equal(t, storage.Cursor{SnapshotID: snaps[2]}, head.End())
				break
			}
			assert.NotEqual(t, from, head.End(), "the head moves the cursor")
			from = head.End()
			plan, err = storage.PlanAppends(ctx, b.src, from, snaps[2])
			require.NoError(t, err, "n=%d: plan from %s", n, from)
		}
		want := make([]int64, 30)
		for i := range want {
			want[i] = int64(i + 1)
		}
		assert.Equal(t, want, got, "n=%d: every row once, in order", n)
	}
}
