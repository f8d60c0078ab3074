package pipeline

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCutter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		sizes     []int64 // rows of each chunk
		batches   []int64 // rows of each batch read, in order
		wantEnds  int     // chunk ends before the first row
		want      [][]piece
		wantErr   bool
		wantFinal bool
	}{
		{name: "one chunk, one batch", sizes: []int64{5}, batches: []int64{5},
			want: [][]piece{{{0, 5, 1}}}, wantFinal: true},
		{name: "a chunk ends inside a batch", sizes: []int64{3, 4}, batches: []int64{7},
			want: [][]piece{{{0, 3, 1}, {3, 4, 1}}}, wantFinal: true},
		{name: "a chunk spans batches", sizes: []int64{6}, batches: []int64{2, 2, 2},
			want: [][]piece{{{0, 2, 0}}, {{0, 2, 0}}, {{0, 2, 1}}}, wantFinal: true},
		{name: "chunks of one row", sizes: []int64{1, 1, 1}, batches: []int64{3},
			want: [][]piece{{{0, 1, 1}, {1, 1, 1}, {2, 1, 1}}}, wantFinal: true},
		{name: "a plan without rows has one empty chunk", sizes: []int64{0}, wantEnds: 1, wantFinal: true},
		{name: "an empty chunk after a full one ends with it", sizes: []int64{2, 0}, batches: []int64{2},
			want: [][]piece{{{0, 2, 2}}}, wantFinal: true},
		{name: "fewer rows than planned", sizes: []int64{4}, batches: []int64{3},
			want: [][]piece{{{0, 3, 0}}}, wantFinal: false},
		{name: "more rows than planned", sizes: []int64{2}, batches: []int64{3}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ends := newCutter(tt.sizes)
			assert.Equal(t, tt.wantEnds, ends)
			var got [][]piece
			for _, n := range tt.batches {
				ps, err := c.cut(n)
				if tt.wantErr {
					if err != nil {
						require.ErrorIs(t, err, errTooManyRows)
						return
					}
					got = append(got, ps)
					continue
				}
				require.NoError(t, err)
				got = append(got, ps)
			}
			require.False(t, tt.wantErr, "no error for more rows than planned")
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.wantFinal, c.finished())
			// Every row lands in exactly one piece, in order.
			var rows, total int64
			for _, ps := range got {
				next := int64(0)
				for _, p := range ps {
					assert.Equal(t, next, p.offset, "pieces of a batch are contiguous")
					next += p.rows
					rows += p.rows
				}
			}
			for _, n := range tt.batches {
				total += n
			}
			assert.Equal(t, total, rows)
		})
	}
}
