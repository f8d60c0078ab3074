package storage

import (
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/postdata"
)

// unmix64 is the inverse of mix64: it makes the long key whose image is h.
func unmix64(h uint64) uint64 {
	h ^= h>>31 ^ h>>62
	h *= 0x319642b2d24d8ec3
	h ^= h>>27 ^ h>>54
	h *= 0x96de1b173f119089
	h ^= h>>30 ^ h>>60
	return h
}

func TestMix64IsABijection(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		x := rng.Uint64()
		require.Equal(t, x, unmix64(mix64(x)))
		require.Equal(t, x, mix64(unmix64(x)))
	}
}

func TestKeySetIsExact(t *testing.T) {
	t.Parallel()
	seed := maphash.MakeSeed()
	for _, n := range []int{0, 1, 2, 3, 100, 5000} {
		ints := newKeySet(kindInt, seed, 0, 0)
		strs := newKeySet(kindStr, seed, 0, 0)
		for i := range n {
			require.True(t, ints.room(0, 1<<30))
			ints.addHash(mix64(uint64(2 * i)))
			k := fmt.Sprint(2 * i)
			require.True(t, strs.room(len(k), 1<<30))
			require.NoError(t, strs.addString(k))
		}
		ints.seal()
		strs.seal()
		for i := range 2*n + 2 {
			k := fmt.Sprint(i)
			assert.Equal(t, i%2 == 0 && i < 2*n, ints.hasHash(mix64(uint64(i))), "n=%d long %d", n, i)
			assert.Equal(t, i%2 == 0 && i < 2*n, strs.hasString(maphash.String(seed, k), k), "n=%d string %d", n, i)
		}
		// Two strings with one hash are told apart by their bytes.
		if n > 0 {
			assert.False(t, strs.hasString(maphash.String(seed, "0"), "zero"))
		}
	}
	// room refuses to grow past the budget.
	s := newKeySet(kindInt, seed, 0, 0)
	added := 0
	for s.room(0, 4096) {
		s.addHash(uint64(added))
		added++
	}
	assert.LessOrEqual(t, s.bytes(), int64(4096))
	assert.Positive(t, added)
}

func TestRowSet(t *testing.T) {
	t.Parallel()
	var r rowSet
	rows := []int64{0, 63, 64, 65535, 65536, 200000, 1 << 20}
	for _, row := range rows {
		r.add(row)
		r.add(row) // twice: counted once
	}
	assert.Equal(t, int64(len(rows)), r.n)
	for _, row := range rows {
		assert.True(t, r.has(row))
		assert.True(t, r.anyIn(row, row+1))
		assert.False(t, r.has(row+1) && row+1 != 64 && row+1 != 65536, "row %d", row+1)
	}
	assert.False(t, r.anyIn(1, 63))
	assert.True(t, r.anyIn(1, 64))
	assert.False(t, r.anyIn(65537, 200000))
	assert.True(t, r.anyIn(65537, 200001))
	assert.False(t, r.anyIn(1<<20+1, 1<<30))
	assert.False(t, r.anyIn(5, 5))
	// Untouched pages take nothing but their slot.
	assert.Less(t, r.bytes(), int64(5*8192+17*24))
}

// TestFindMissingRowsSplitsSkewedPartitions crafts long keys whose images
// share their low bits, so that the partitions of the first levels hold
// every key and must be split again, deterministically.
func TestFindMissingRowsSplitsSkewedPartitions(t *testing.T) {
	t.Parallel()
	cat := sqlCatalog(t)

	for _, c := range []struct {
		name       string
		shift      int // the image's low bits shared by every key
		partitions int
		overBudget bool
	}{
		// 3,000 keys of 8 bytes (and a directory): 32 partitions a level
		// for 2 KiB of keys; all keys land in one of them until the bits
		// of a level differ: 31 empty partitions a level, then 32.
		{"split once", 8, 31 + 32, false},
		{"split twice", 16, 31 + 31 + 32, false},
		// Images that differ only past the 40 bits partitioning uses: the
		// last level holds them all, past the budget but exact.
		{"cannot split", 40, 31*5 + 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			src, err := cat.CreateIcebergTable(t.Context(), "skew.src_"+fmt.Sprint(c.shift), postdata.Schema(), nil)
			require.NoError(t, err)
			tgt, err := cat.CreateIcebergTable(t.Context(), "skew.tgt_"+fmt.Sprint(c.shift), postdata.Schema(), nil)
			require.NoError(t, err)
			var all, kept []postdata.Post
			want := map[int64]bool{}
			for i := uint64(1); i <= 3300; i++ {
				id := int64(unmix64(i<<c.shift | 0x5a5a5a5a5a&(1<<c.shift-1)))
				p := postdata.Post{ID: id, Text: "t"}
				all = append(all, p)
				if i%11 == 0 {
					want[id] = true
				} else {
					kept = append(kept, p)
				}
			}
			src = appendAllPosts(t, src, all)
			tgt = appendAllPosts(t, tgt, kept)
			tmp := t.TempDir()
			m, err := FindMissingRows(t.Context(), src, tgt, AntiJoinOptions{
				Key: "post_id", Columns: []string{"post_id"}, MemoryBytes: 4 << 10, TempDir: tmp,
			})
			require.NoError(t, err)
			st := m.Stats()
			assert.Equal(t, int64(3000), st.TargetKeys)
			assert.Equal(t, c.partitions, st.Partitions)
			if c.overBudget {
				assert.Greater(t, st.PeakKeyBytes, int64(2<<10))
			} else {
				assert.LessOrEqual(t, st.PeakKeyBytes, int64(2<<10))
			}
			got := map[int64]bool{}
			for rec, err := range m.Batches(t.Context()) {
				require.NoError(t, err)
				ids := rec.Column(0).(*array.Int64)
				for i := range ids.Len() {
					got[ids.Value(i)] = true
				}
				rec.Release()
			}
			assert.Equal(t, want, got)
		})
	}
}

func appendAllPosts(t *testing.T, tbl *table.Table, posts []postdata.Post) *table.Table {
	t.Helper()
	out, _, err := postdata.Append(t.Context(), tbl, postdata.Of(posts...))
	require.NoError(t, err)
	return out
}

func TestSpillFilesRoundTrip(t *testing.T) {
	t.Parallel()
	seed := maphash.MakeSeed()
	sp := &spiller{parent: t.TempDir(), bufSize: 512}
	defer func() { require.NoError(t, sp.cleanup()) }()
	keys := []string{"", "a", "ä€", string(make([]byte, 300)), ""}
	strs, err := sp.create(true)
	require.NoError(t, err)
	ints, err := sp.create(true)
	require.NoError(t, err)
	for i, k := range keys {
		require.NoError(t, sp.writeString(strs, []byte(k), int64(i*1000)))
		require.NoError(t, sp.writeHash(ints, mix64(uint64(i)), int64(i*70000)))
	}
	require.NoError(t, sp.finish(strs))
	require.NoError(t, sp.finish(ints))
	assert.Equal(t, int64(len(keys)), strs.n)
	j := &joiner{kind: kindStr, seed: seed, writeBudget: 1024}
	var got []string
	var rows []int64
	require.NoError(t, j.each(t.Context(), strs, func(h uint64, key []byte, row int64) error {
		assert.Equal(t, maphash.Bytes(seed, key), h)
		got = append(got, string(key))
		rows = append(rows, row)
		return nil
	}))
	assert.Equal(t, keys, got)
	assert.Equal(t, []int64{0, 1000, 2000, 3000, 4000}, rows)
	j.kind = kindInt
	var hs []uint64
	rows = rows[:0]
	require.NoError(t, j.each(t.Context(), ints, func(h uint64, _ []byte, row int64) error {
		hs = append(hs, h)
		rows = append(rows, row)
		return nil
	}))
	assert.Equal(t, []uint64{mix64(0), mix64(1), mix64(2), mix64(3), mix64(4)}, hs)
	assert.Equal(t, []int64{0, 70000, 140000, 210000, 280000}, rows)
	// An empty string key is found in a set, and told from a missing one.
	set := newKeySet(kindStr, seed, 1, 0)
	require.NoError(t, set.addBytes(nil))
	set.seal()
	assert.True(t, set.hasString(maphash.String(seed, ""), ""))
	assert.False(t, set.hasString(maphash.String(seed, "a"), "a"))
	// A file cut inside a record is an error, not the end.
	require.NoError(t, os.Truncate(strs.path, 3))
	j.kind = kindStr
	err = j.each(t.Context(), strs, func(uint64, []byte, int64) error { return nil })
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}
