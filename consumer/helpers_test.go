package consumer_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The sqlite driver and iceberg-go keep these for the process.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		goleak.IgnoreAnyFunction("modernc.org/sqlite/lib.init.func1"),
		// Keep-alive connections of the SQS clients' shared pool.
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	)
}

// bundle is one test's warehouse: a sqlite catalog in a temp folder, the
// posts source table and the sentiment job.
type bundle struct {
	t      *testing.T
	dir    string
	cat    *storage.Catalog
	spec   *enrich.Spec
	src    *table.Table
	mem    *memory.CheckedAllocator
	nextID int64
}

func setup(t *testing.T) *bundle {
	t.Helper()
	dir := t.TempDir()
	cat, err := storage.OpenCatalog(t.Context(), storage.CatalogConfig{
		Type: storage.CatalogSQL, URI: filepath.Join(dir, "catalog.db"), Warehouse: filepath.Join(dir, "warehouse"),
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, cat.Close()) })
	spec, err := enrich.LoadSpec("../jobs/sentiment.yaml")
	require.NoError(t, err)
	src, err := cat.CreateIcebergTable(t.Context(), spec.Source.Table, storage.PostsSchema(), nil)
	require.NoError(t, err)
	b := &bundle{t: t, dir: dir, cat: cat, spec: spec, src: src, nextID: 1,
		mem: memory.NewCheckedAllocator(memory.NewGoAllocator())}
	t.Cleanup(func() { b.mem.AssertSize(t, 0) })
	return b
}

// appendPosts appends n posts as one snapshot and returns its id.
func (b *bundle) appendPosts(n int) int64 {
	return b.appendPostsBatched(n, 8192)
}

// appendPostsBatched appends n posts in Arrow batches of batchRows.
func (b *bundle) appendPostsBatched(n, batchRows int) int64 {
	b.t.Helper()
	var err error
	b.src, _, err = storage.AppendPostsBatched(b.t.Context(), b.src, storage.SamplePosts(int64(n), b.nextID, uint64(b.nextID)), batchRows)
	require.NoError(b.t, err)
	b.nextID += int64(n)
	return b.src.CurrentSnapshot().SnapshotID
}

// deletePosts commits a delete snapshot on the source (not an append).
func (b *bundle) deletePosts(belowID int64) int64 {
	b.t.Helper()
	txn := b.src.NewTransaction()
	require.NoError(b.t, txn.Delete(b.t.Context(), iceLess("post_id", belowID), nil))
	var err error
	b.src, err = txn.Commit(b.t.Context())
	require.NoError(b.t, err)
	s := b.src.CurrentSnapshot()
	require.NotEqual(b.t, table.OpAppend, s.Summary.Operation)
	return s.SnapshotID
}

// manyFiles makes every later append write one data file per Arrow batch.
func (b *bundle) manyFiles() {
	b.t.Helper()
	txn := b.src.NewTransaction()
	require.NoError(b.t, txn.SetProperties(map[string]string{"write.target-file-size-bytes": "1"}))
	var err error
	b.src, err = txn.Commit(b.t.Context())
	require.NoError(b.t, err)
}

type procOpt func(*consumer.Options)

func (b *bundle) processor(model enrich.Model, opts ...procOpt) *consumer.Processor {
	b.t.Helper()
	if model == nil {
		l, err := enrich.NewLexicon(b.spec)
		require.NoError(b.t, err)
		model = l
	}
	o := consumer.Options{Allocator: b.mem, Logger: quietLogger(), Workers: 2, BatchRows: 64}
	for _, f := range opts {
		f(&o)
	}
	p, err := consumer.NewProcessor(b.cat, []consumer.Job{{Spec: b.spec, Model: model}}, o)
	require.NoError(b.t, err)
	return p
}

func (b *bundle) event(snap int64) consumer.SnapshotEvent {
	return consumer.SnapshotEvent{Version: 1, Table: b.spec.Source.Table, SnapshotID: snap}
}

// targetRows reads the whole target table.
func (b *bundle) targetRows() []map[string]any {
	b.t.Helper()
	tgt, err := b.cat.LoadTable(b.t.Context(), b.spec.Target.Table)
	require.NoError(b.t, err)
	var rows []map[string]any
	for row, err := range storage.Rows(b.t.Context(), tgt, 0) {
		require.NoError(b.t, err)
		rows = append(rows, row)
	}
	return rows
}

func (b *bundle) watermark() storage.Watermark {
	b.t.Helper()
	tgt, err := b.cat.LoadTable(b.t.Context(), b.spec.Target.Table)
	require.NoError(b.t, err)
	wm, err := storage.ReadWatermark(tgt, b.spec.Name, b.spec.Source.Table)
	require.NoError(b.t, err)
	return wm
}

// requireExactlyOnce checks that the target holds ids 1..n once each, and
// that each row names the source snapshot that added it.
func (b *bundle) requireExactlyOnce(n int64, snapOf func(id int64) int64) {
	b.t.Helper()
	rows := b.targetRows()
	seen := map[int64]int{}
	for _, r := range rows {
		id := r["post_id"].(int64)
		seen[id]++
		if snapOf != nil {
			require.Equal(b.t, snapOf(id), r[enrich.ColSourceSnapshotID], "post %d lineage", id)
		}
	}
	for id := int64(1); id <= n; id++ {
		require.Equal(b.t, 1, seen[id], "post %d is in the target %d times", id, seen[id])
	}
	require.Len(b.t, rows, int(n), "target rows")
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// gate is a model that answers like the lexicon but, after `after`
// successful calls, blocks until its context is done: a slow model for
// landing a cancellation mid-run.
type gate struct {
	inner enrich.Model
	after int64
	calls atomic.Int64
	held  chan struct{} // closed when the first call blocks
	once  atomic.Bool
}

func newGate(t *testing.T, spec *enrich.Spec, after int64) *gate {
	l, err := enrich.NewLexicon(spec)
	require.NoError(t, err)
	return &gate{inner: l, after: after, held: make(chan struct{})}
}

func (g *gate) Name() string { return g.inner.Name() }

func (g *gate) Annotate(ctx context.Context, items []enrich.Item, out []enrich.Answer) error {
	if g.calls.Add(1) > g.after {
		if g.once.CompareAndSwap(false, true) {
			close(g.held)
		}
		<-ctx.Done()
		return ctx.Err()
	}
	return g.inner.Annotate(ctx, items, out)
}

func waitClosed(t *testing.T, c <-chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func iceLess(col string, v int64) iceberg.BooleanExpression {
	return iceberg.LessThan(iceberg.Reference(col), v)
}
