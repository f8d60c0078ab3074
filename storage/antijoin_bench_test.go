package storage_test

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

// BenchmarkFindMissingRows runs the anti-join and reads the missing rows
// (post_id, text, lang) of a source of 100k and 1M sample posts, in 10
// snapshots, against a target holding 90% of their keys, by long key
// (post_id) and by string key (author, "user-<id>"), with the default
// memory budget (keys held in memory) and with 1 MiB (keys spilled).
//
//	go test -run '^$' -bench FindMissingRows -benchtime 3x ./storage/
//
// rows/s counts source rows; peak-heap-B is the most heap (live objects
// and garbage not yet collected) sampled every millisecond above the
// level before the run.
func BenchmarkFindMissingRows(b *testing.B) {
	for _, size := range []int64{100_000, 1_000_000} {
		src, tgt := benchTables(b, size)
		for _, key := range []string{"post_id", "author"} {
			for _, budget := range []int64{0, 1 << 20} {
				name := fmt.Sprintf("rows=%d/key=%s/memory=%s", size, key, map[bool]string{true: "default", false: "1MiB"}[budget == 0])
				b.Run(name, func(b *testing.B) {
					opts := storage.AntiJoinOptions{Key: key, Columns: []string{"post_id", "text", "lang"},
						MemoryBytes: budget, TempDir: b.TempDir()}
					var st storage.AntiJoinStats
					var peak uint64
					b.ResetTimer()
					for range b.N {
						peak = max(peak, peakHeap(b, func() { st = antiJoin(b, src, tgt, opts) }))
					}
					b.ReportMetric(float64(st.SourceRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
					b.ReportMetric(float64(peak), "peak-heap-B")
					b.ReportMetric(float64(st.PeakKeyBytes+st.MissingSetBytes), "join-B")
					b.ReportMetric(float64(st.SpillBytes), "spill-B")
					b.ReportMetric(float64(st.Partitions), "partitions")
				})
			}
		}
	}
}

func antiJoin(b *testing.B, src, tgt *table.Table, opts storage.AntiJoinOptions) storage.AntiJoinStats {
	ctx := context.Background()
	m, err := storage.FindMissingRows(ctx, src, tgt, opts)
	require.NoError(b, err)
	var n int64
	for rec, err := range m.Batches(ctx) {
		require.NoError(b, err)
		n += rec.NumRows()
		rec.Release()
	}
	st := m.Stats()
	require.Equal(b, st.MissingRows, n)
	require.Equal(b, st.SourceRows/10, n)
	return st
}

// benchTables makes the source and target of a benchmark size, in the
// benchmark's temporary folder.
func benchTables(b *testing.B, n int64) (src, tgt *table.Table) {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()
	cat := testbed.SQLCatalog(b, dir)
	src, err := cat.CreateIcebergTable(ctx, "bench.posts", postdata.Schema(), nil)
	require.NoError(b, err)
	tgt, err = cat.CreateIcebergTable(ctx, "bench.posts_sentiment", postdata.Schema(), nil)
	require.NoError(b, err)
	const snapshots = 10
	for s := range int64(snapshots) {
		first := 1 + s*n/snapshots
		posts := postdata.Edited(postdata.Sample(n/snapshots, first, uint64(s)), func(p *postdata.Post) {
			p.Author = fmt.Sprintf("user-%d", p.ID)
		})
		src, _, err = postdata.Append(ctx, src, posts)
		require.NoError(b, err)
	}
	kept := func(yield func(postdata.Post, error) bool) {
		for id := int64(1); id <= n; id++ {
			if id%10 != 0 && !yield(postdata.Post{ID: id, Author: fmt.Sprintf("user-%d", id)}, nil) {
				return
			}
		}
	}
	tgt, _, err = postdata.Append(ctx, tgt, kept)
	require.NoError(b, err)
	return src, tgt
}

// peakHeap runs f and returns the most heap it was seen to hold above
// the level before it (the timer stopped while it collects garbage).
func peakHeap(b *testing.B, f func()) uint64 {
	b.StopTimer()
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	base := read()
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		peak := base
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- max(peak, read())
				return
			case <-tick.C:
				peak = max(peak, read())
			}
		}
	}()
	b.StartTimer()
	f()
	b.StopTimer()
	close(stop)
	peak := <-done
	b.StartTimer()
	return peak - base
}
