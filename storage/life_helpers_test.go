package storage_test

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

// life is a source table of posts, a target table, and a consumer that
// moves rows from one to the other as the pipeline does: plan from the
// watermark, one commit per data file, a lost commit settled by
// committing its files again or re-planning.
type life struct {
	t        testing.TB
	cat      *storage.Catalog
	src, tgt string
	job      string
	columns  []string
	schema   *arrow.Schema
	expire   bool // ExpireSnapshots after every commit, as the pipeline will
	// beforeCommit, when set, runs between the consumer's loading the
	// target and its commit (where another writer's commit makes the
	// consumer's lose).
	beforeCommit func(context.Context) error
	mu           sync.Mutex
	nextID       int64
	sourceSnap   int64 // the newest source snapshot
	// conflicts counts the consumer's commits that lost to another
	// writer; replans the events it planned again because the table
	// moved under it (a lost commit of a chunk another consumer wrote, or
	// a manifest of its stale handle deleted by another's expiry).
	conflicts, replans int
}

const (
	lifeJob = "sentiment"
	lifeSrc = "social.posts"
	lifeTgt = "social.posts_enriched"
)

// newLife makes a catalog, a source table whose snapshots have several
// data files, and a target table with tgtProps.
func newLife(t testing.TB, tgtProps map[string]string) *life {
	t.Helper()
	dir := t.TempDir()
	cat := testbed.SQLCatalog(t, dir)
	src, err := cat.CreateIcebergTable(t.Context(), lifeSrc, postdata.Schema(),
		map[string]string{table.WriteTargetFileSizeBytesKey: "1"}) // a data file per batch
	require.NoError(t, err)
	cols := []string{"post_id", "text"}
	sc, err := storage.ProjectedSchema(src, cols)
	require.NoError(t, err)
	_, err = cat.CreateTable(t.Context(), lifeTgt, sc, tgtProps)
	require.NoError(t, err)
	return &life{t: t, cat: cat, src: lifeSrc, tgt: lifeTgt, job: lifeJob, columns: cols, schema: sc, nextID: 1}
}

// ingest appends n posts to the source in one snapshot of data files of
// 3 rows, and returns the snapshot.
func (l *life) ingest(n int) int64 {
	l.t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	src, err := l.cat.LoadTable(l.t.Context(), l.src)
	require.NoError(l.t, err)
	first := l.nextID
	posts := func(yield func(postdata.Post, error) bool) {
		for i := range int64(n) {
			if !yield(postdata.Post{ID: first + i, Text: fmt.Sprintf("post %d", first+i)}, nil) {
				return
			}
		}
	}
	src, _, err = postdata.AppendBatched(l.t.Context(), src, posts, 3)
	require.NoError(l.t, err)
	l.nextID += int64(n)
	l.sourceSnap = src.CurrentSnapshot().SnapshotID
	return l.sourceSnap
}

// errReplan says that the event must be planned again from the watermark.
var errReplan = errors.New("re-plan")

// consume brings the target up to source snapshot `to`. With maxChunks >
// 0 it stops after that many commits (a consumer killed partway).
func (l *life) consume(ctx context.Context, to int64, maxChunks int) error {
	const attempts = 200
	b := storage.ConflictBackoff(attempts, conflictBase)
	for {
		err := l.consumeOnce(ctx, to, maxChunks)
		if errors.Is(err, errReplan) || errors.Is(err, iofs.ErrNotExist) {
			// ErrNotExist: a stale handle read a manifest that another
			// writer's expiry deleted; the pipeline retries such an event.
			l.replans++
			wait, stop := b.Next()
			if stop {
				return fmt.Errorf("event %d: still re-planning after %d attempts: %w", to, attempts, err)
			}
			if err := sleep(ctx, wait); err != nil {
				return err
			}
			continue
		}
		return err
	}
}

// conflictBase is the base of the consumer's storage.ConflictBackoff: a
// local catalog commits in milliseconds.
const conflictBase = 5 * time.Millisecond

func (l *life) consumeOnce(ctx context.Context, to int64, maxChunks int) error {
	tgt, err := l.cat.LoadTable(ctx, l.tgt)
	if err != nil {
		return err
	}
	wm, err := storage.ReadWatermark(tgt, l.job, l.src)
	if err != nil {
		return err
	}
	src, err := l.cat.LoadTable(ctx, l.src)
	if err != nil {
		return err
	}
	plan, err := storage.PlanAppends(ctx, src, wm.Cursor, to)
	if err != nil {
		return err
	}
	if plan.Stale || plan.UpToDate {
		return nil
	}
	from := wm.Cursor
	for i, u := range plan.Units {
		if maxChunks > 0 && i == maxChunks {
			return nil
		}
		c := &storage.Commit{Job: l.job, SourceTable: l.src, SpecVersion: "1", After: u.After, Schema: l.schema,
			Batches: storage.ReadUnits(ctx, src, l.columns, []storage.Unit{u}, storage.ReadOptions{})}
		if l.beforeCommit != nil {
			if err := l.beforeCommit(ctx); err != nil {
				return err
			}
		}
		next, _, err := storage.AppendChunk(ctx, tgt, c)
		if ce := (*storage.ConflictError)(nil); errors.As(err, &ce) {
			next, err = l.settle(ctx, tgt, from, c, ce)
		}
		if err != nil {
			return err
		}
		tgt, from = next, u.After
		if l.expire {
			res, err := storage.ExpireSnapshots(ctx, tgt, storage.ExpireOptions{})
			if err != nil {
				return fmt.Errorf("expire after commit: %w", err)
			}
			tgt = res.Table
		}
	}
	return nil
}

// settle is the pipeline's answer to a lost commit: if the watermark is
// still where the chunk starts, commit the chunk's files again (another
// writer, such as maintenance, won); else another consumer wrote these
// rows: drop the files and re-plan.
func (l *life) settle(ctx context.Context, stale *table.Table, from storage.Cursor, c *storage.Commit, ce *storage.ConflictError) (*table.Table, error) {
	l.mu.Lock()
	l.conflicts++
	l.mu.Unlock()
	if len(ce.Files) == 0 {
		return nil, errReplan
	}
	const attempts = 100
	b := storage.ConflictBackoff(attempts, conflictBase)
	for {
		tgt, err := l.cat.LoadTable(ctx, l.tgt)
		if err != nil {
			return nil, err
		}
		wm, err := storage.ReadWatermark(tgt, l.job, l.src)
		if err != nil {
			return nil, err
		}
		if wm.Cursor != from {
			return nil, errors.Join(errReplan, storage.RemoveFiles(ctx, stale, ce.Files))
		}
		out, err := storage.CommitFiles(ctx, tgt, c, ce.Files, ce.Rows)
		if !errors.Is(err, storage.ErrConflict) {
			return out, err
		}
		wait, stop := b.Next()
		if stop {
			return nil, fmt.Errorf("chunk to %s: lost %d commits in a row: %w", c.After, attempts, err)
		}
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// event ingests n posts and consumes them.
func (l *life) event(n int) {
	l.t.Helper()
	to := l.ingest(n)
	require.NoError(l.t, l.consume(l.t.Context(), to, 0))
}

// target loads the target table.
func (l *life) target() *table.Table {
	l.t.Helper()
	tgt, err := l.cat.LoadTable(l.t.Context(), l.tgt)
	require.NoError(l.t, err)
	return tgt
}

// requireWatermark checks that the job's watermark is want.
func (l *life) requireWatermark(want storage.Cursor, msgAndArgs ...any) {
	l.t.Helper()
	wm, err := storage.ReadWatermark(l.target(), l.job, l.src)
	require.NoError(l.t, err, msgAndArgs...)
	require.Equal(l.t, want, wm.Cursor, msgAndArgs...)
	require.NotZero(l.t, wm.TargetSnapshotID, msgAndArgs...)
}

// requireExactlyOnce checks that the target holds every post ingested
// exactly once and that the watermark is the newest source snapshot.
func (l *life) requireExactlyOnce() {
	l.t.Helper()
	seen := map[int64]int{}
	for col, err := range storage.ScanColumn(l.t.Context(), l.target(), "post_id", iceberg.AlwaysTrue{}) {
		require.NoError(l.t, err)
		ids := col.(*array.Int64)
		for i := range ids.Len() {
			seen[ids.Value(i)]++
		}
		col.Release()
	}
	var missing, doubled []int64
	for id := int64(1); id < l.nextID; id++ {
		switch seen[id] {
		case 0:
			missing = append(missing, id)
		case 1:
		default:
			doubled = append(doubled, id)
		}
	}
	require.Empty(l.t, missing, "posts missing from the target")
	require.Empty(l.t, doubled, "posts written more than once")
	require.Len(l.t, seen, int(l.nextID-1), "rows that are no post")
	l.requireWatermark(storage.Cursor{SnapshotID: l.sourceSnap})
}

// plantOrphans writes files under the target's data and metadata folders
// that no snapshot references, dated two hours ago, and returns them.
func (l *life) plantOrphans() []string {
	l.t.Helper()
	tgt := l.target()
	root := strings.TrimPrefix(tgt.Location(), "file://")
	var out []string
	for _, p := range []string{"data/00000-0-planted-orphan.parquet", "metadata/planted-orphan.avro"} {
		path := filepath.Join(root, p)
		require.NoError(l.t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(l.t, os.WriteFile(path, []byte("PAR1"), 0o644))
		past := time.Now().Add(-2 * time.Hour)
		require.NoError(l.t, os.Chtimes(path, past, past))
		out = append(out, path)
	}
	return out
}
