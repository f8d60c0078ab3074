// Package testbed is the test set-up the packages share: a warehouse per
// test (a sqlite catalog in a temp folder with the posts source table and
// the sentiment job), helpers that append posts and check the target, and
// small models for landing a cancellation. Test code only.
package testbed

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/storage"
)

// repoRoot is the repository's root folder, found from this file.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// SentimentSpec is the path of the shipped sentiment job spec.
func SentimentSpec() string { return filepath.Join(repoRoot(), "jobs", "sentiment.yaml") }

// Bundle is one test's warehouse: a sqlite catalog in a temp folder, the
// posts source table and the sentiment job.
type Bundle struct {
	T      *testing.T
	Dir    string
	Cat    *storage.Catalog
	Spec   *enrich.Spec
	Src    *table.Table
	Mem    *memory.CheckedAllocator
	NextID int64
}

// Setup makes a fresh warehouse for t. At cleanup it checks that every
// Arrow allocation made through Mem was released.
func Setup(t *testing.T) *Bundle {
	t.Helper()
	dir := t.TempDir()
	cat := SQLCatalog(t, dir)
	spec, err := enrich.LoadSpec(SentimentSpec())
	require.NoError(t, err)
	src, err := cat.CreateIcebergTable(t.Context(), spec.Source.Table, postdata.Schema(), nil)
	require.NoError(t, err)
	b := &Bundle{T: t, Dir: dir, Cat: cat, Spec: spec, Src: src, NextID: 1,
		Mem: memory.NewCheckedAllocator(memory.NewGoAllocator())}
	t.Cleanup(func() { b.Mem.AssertSize(t, 0) })
	return b
}

// AppendPosts appends n posts as one snapshot and returns its id.
func (b *Bundle) AppendPosts(n int) int64 {
	return b.AppendPostsBatched(n, 8192)
}

// AppendPostsBatched appends n posts in Arrow batches of batchRows.
func (b *Bundle) AppendPostsBatched(n, batchRows int) int64 {
	b.T.Helper()
	var err error
	b.Src, _, err = postdata.AppendBatched(b.T.Context(), b.Src, postdata.Sample(int64(n), b.NextID, uint64(b.NextID)), batchRows)
	require.NoError(b.T, err)
	b.NextID += int64(n)
	return b.Src.CurrentSnapshot().SnapshotID
}

// DeletePosts commits a delete snapshot on the source (not an append).
func (b *Bundle) DeletePosts(belowID int64) int64 {
	b.T.Helper()
	txn := b.Src.NewTransaction()
	require.NoError(b.T, txn.Delete(b.T.Context(), IceLess("post_id", belowID), nil))
	var err error
	b.Src, err = txn.Commit(b.T.Context())
	require.NoError(b.T, err)
	s := b.Src.CurrentSnapshot()
	require.NotEqual(b.T, table.OpAppend, s.Summary.Operation)
	return s.SnapshotID
}

// ManyFiles makes every later append write one data file per Arrow batch.
func (b *Bundle) ManyFiles() {
	b.T.Helper()
	txn := b.Src.NewTransaction()
	require.NoError(b.T, txn.SetProperties(map[string]string{"write.target-file-size-bytes": "1"}))
	var err error
	b.Src, err = txn.Commit(b.T.Context())
	require.NoError(b.T, err)
}

// ProcOpt changes the options of Bundle.Processor.
type ProcOpt func(*pipeline.Options)

func (b *Bundle) Processor(model enrich.Model, opts ...ProcOpt) *pipeline.Processor {
	b.T.Helper()
	if model == nil {
		l, err := enrich.NewLexicon(b.Spec)
		require.NoError(b.T, err)
		model = l
	}
	o := pipeline.Options{Allocator: b.Mem, Logger: QuietLogger(), Workers: 2, BatchRows: 64}
	for _, f := range opts {
		f(&o)
	}
	p, err := pipeline.NewProcessor(b.Cat, []pipeline.Job{{Spec: b.Spec, Model: model}}, o)
	require.NoError(b.T, err)
	return p
}

func (b *Bundle) Event(snap int64) consumer.SnapshotEvent {
	return consumer.SnapshotEvent{Version: 1, Table: b.Spec.Source.Table, SnapshotID: snap}
}

// TargetRows reads the whole target table.
func (b *Bundle) TargetRows() []map[string]any {
	b.T.Helper()
	tgt, err := b.Cat.LoadTable(b.T.Context(), b.Spec.Target.Table)
	require.NoError(b.T, err)
	var rows []map[string]any
	for row, err := range storage.Rows(b.T.Context(), tgt, 0) {
		require.NoError(b.T, err)
		rows = append(rows, row)
	}
	return rows
}

func (b *Bundle) Watermark() storage.Watermark {
	b.T.Helper()
	tgt, err := b.Cat.LoadTable(b.T.Context(), b.Spec.Target.Table)
	require.NoError(b.T, err)
	wm, err := storage.ReadWatermark(tgt, b.Spec.Name, b.Spec.Source.Table)
	require.NoError(b.T, err)
	return wm
}

// RequireExactlyOnce checks that the target holds ids 1..n once each, and
// that each row names the source snapshot that added it.
func (b *Bundle) RequireExactlyOnce(n int64, snapOf func(id int64) int64) {
	b.T.Helper()
	rows := b.TargetRows()
	seen := map[int64]int{}
	for _, r := range rows {
		id := r["post_id"].(int64)
		seen[id]++
		if snapOf != nil {
			require.Equal(b.T, snapOf(id), r[enrich.ColSourceSnapshotID], "post %d lineage", id)
		}
	}
	for id := int64(1); id <= n; id++ {
		require.Equal(b.T, 1, seen[id], "post %d is in the target %d times", id, seen[id])
	}
	require.Len(b.T, rows, int(n), "target rows")
}

// QuietLogger discards everything.
func QuietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Gate is a model that answers like the lexicon but, after `after`
// successful calls, blocks until its context is done: a slow model for
// landing a cancellation mid-run.
type Gate struct {
	inner enrich.Model
	after int64
	calls atomic.Int64
	Held  chan struct{} // closed when the first call blocks
	once  atomic.Bool
}

func NewGate(t *testing.T, spec *enrich.Spec, after int64) *Gate {
	l, err := enrich.NewLexicon(spec)
	require.NoError(t, err)
	return &Gate{inner: l, after: after, Held: make(chan struct{})}
}

func (g *Gate) Name() string { return g.inner.Name() }

func (g *Gate) Annotate(ctx context.Context, items []enrich.Item, out []enrich.Answer) error {
	if g.calls.Add(1) > g.after {
		if g.once.CompareAndSwap(false, true) {
			close(g.Held)
		}
		<-ctx.Done()
		return ctx.Err()
	}
	return g.inner.Annotate(ctx, items, out)
}

// WaitClosed waits (30s at most) for c to be closed.
func WaitClosed(t *testing.T, c <-chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting")
	}
}

// Itoa formats n.
func Itoa(n int64) string { return strconv.FormatInt(n, 10) }

// IceLess is the Iceberg filter col < v.
func IceLess(col string, v int64) iceberg.BooleanExpression {
	return iceberg.LessThan(iceberg.Reference(col), v)
}

// SQLCatalog opens a sqlite catalog in dir (catalog.db, its warehouse in
// dir/warehouse), closed when tb ends.
func SQLCatalog(tb testing.TB, dir string) *storage.Catalog {
	tb.Helper()
	cat, err := storage.OpenCatalog(tb.Context(), storage.CatalogConfig{
		Type: storage.CatalogSQL, URI: filepath.Join(dir, "catalog.db"), Warehouse: filepath.Join(dir, "warehouse"),
	})
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, cat.Close()) })
	return cat
}

// ExpireSource is an ingestion job's upkeep of a source table, with
// iceberg-go's own ExpireSnapshots (not the enricher's): every snapshot
// but the newest keep expires, whatever its age (checked), and the files
// that only they referenced are deleted. It returns the table as
// committed.
func ExpireSource(tb testing.TB, src *table.Table, keep int) *table.Table {
	tb.Helper()
	// Snapshots are expired when older than now by more than 0 ms: wait
	// for the clock to pass the newest one's millisecond, or a snapshot
	// of that millisecond would stay.
	for cur := src.CurrentSnapshot(); cur != nil && time.Now().UnixMilli() <= cur.TimestampMs; {
		time.Sleep(time.Millisecond)
	}
	txn := src.NewTransaction()
	require.NoError(tb, txn.ExpireSnapshots(table.WithRetainLast(keep), table.WithOlderThan(0), table.WithPostCommit(true)),
		"expire the snapshots of %s", src.Identifier())
	out, err := txn.Commit(tb.Context())
	require.NoError(tb, err, "commit the expiry of %s", src.Identifier())
	require.LessOrEqual(tb, len(out.Metadata().Snapshots()), keep, "snapshots of %s after its expiry", src.Identifier())
	return out
}
