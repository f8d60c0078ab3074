package storage_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

type bundle struct {
	t   *testing.T
	cat *storage.Catalog
	src *table.Table
}

func setup(t *testing.T) *bundle {
	t.Helper()
	dir := t.TempDir()
	cat := testbed.SQLCatalog(t, dir)
	src, err := cat.CreateIcebergTable(t.Context(), "social.posts", postdata.Schema(), nil)
	require.NoError(t, err)
	return &bundle{t: t, cat: cat, src: src}
}

func (b *bundle) appendPosts(posts ...postdata.Post) int64 {
	b.t.Helper()
	var err error
	b.src, _, err = postdata.Append(b.t.Context(), b.src, postdata.Of(posts...))
	require.NoError(b.t, err)
	return b.src.CurrentSnapshot().SnapshotID
}

func TestIdent(t *testing.T) {
	t.Parallel()
	id, err := storage.Ident("social.posts")
	require.NoError(t, err)
	assert.Equal(t, table.Identifier{"social", "posts"}, id)
	id, err = storage.Ident("a.b.c")
	require.NoError(t, err)
	assert.Equal(t, table.Identifier{"a", "b", "c"}, id)
	for _, bad := range []string{"posts", ".posts", "social.", ""} {
		_, err := storage.Ident(bad)
		assert.Error(t, err, bad)
	}
}

func TestCatalogConfigValidate(t *testing.T) {
	t.Parallel()
	assert.ErrorContains(t, storage.CatalogConfig{}.Validate(), "catalog.type: is required")
	assert.ErrorContains(t, storage.CatalogConfig{Type: "hive"}.Validate(), `catalog.type: "hive" is not supported`)
	assert.ErrorContains(t, storage.CatalogConfig{Type: "sql", Warehouse: "w"}.Validate(), "catalog.uri: is required")
	assert.ErrorContains(t, storage.CatalogConfig{Type: "sql", URI: "c.db"}.Validate(), "catalog.warehouse: is required")
	assert.ErrorContains(t, storage.CatalogConfig{Type: "sql", URI: "c.db", Warehouse: "gs://b/w"}.Validate(), "scheme gs is not supported")
	assert.NoError(t, storage.CatalogConfig{Type: "sql", URI: "c.db", Warehouse: "s3://b/w"}.Validate())
	r := storage.CatalogConfig{Type: "sql", URI: "c.db", Warehouse: "s3://bucket/wh"}.Resolve("/etc/enricher")
	assert.Equal(t, "/etc/enricher/c.db", r.URI)
	assert.Equal(t, "s3://bucket/wh", r.Warehouse)
}

func TestLoadMissingTable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.cat.LoadTable(t.Context(), "social.nope")
	require.ErrorIs(t, err, storage.ErrTableNotFound)
	_, err = b.cat.LoadTable(t.Context(), "nons.nope")
	require.ErrorIs(t, err, storage.ErrTableNotFound)
}

func TestPlanAppends(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.appendPosts(postdata.Post{ID: 1, Text: "a"}, postdata.Post{ID: 2, Text: "b"})
	s2 := b.appendPosts(postdata.Post{ID: 3, Text: "c"})
	s3 := b.appendPosts(postdata.Post{ID: 4, Text: "d"}, postdata.Post{ID: 5, Text: "e"}, postdata.Post{ID: 6, Text: "f"})
	ctx := t.Context()

	plan, err := storage.PlanAppends(ctx, b.src, storage.Cursor{}, s3)
	require.NoError(t, err)
	assert.Equal(t, int64(6), plan.Rows())
	require.Len(t, plan.Units, 3)
	assert.Equal(t, []int64{s1, s2, s3}, []int64{plan.Units[0].SnapshotID, plan.Units[1].SnapshotID, plan.Units[2].SnapshotID})
	assert.Equal(t, storage.Cursor{SnapshotID: s1}, plan.Units[0].After)
	assert.Equal(t, storage.Cursor{SnapshotID: s3}, plan.Units[2].After)

	plan, err = storage.PlanAppends(ctx, b.src, storage.Cursor{SnapshotID: s1}, s2)
	require.NoError(t, err)
	assert.Equal(t, int64(1), plan.Rows())

	plan, err = storage.PlanAppends(ctx, b.src, storage.Cursor{SnapshotID: s3}, s3)
	require.NoError(t, err)
	assert.True(t, plan.UpToDate)
	assert.Empty(t, plan.Units)

	plan, err = storage.PlanAppends(ctx, b.src, storage.Cursor{SnapshotID: s3}, s1)
	require.NoError(t, err)
	assert.True(t, plan.Stale)

	_, err = storage.PlanAppends(ctx, b.src, storage.Cursor{}, 42)
	require.ErrorIs(t, err, storage.ErrSnapshotNotFound)

	// A cursor partway through a snapshot resumes after its done files.
	plan, err = storage.PlanAppends(ctx, b.src, storage.Cursor{SnapshotID: s2, PartialSnapshotID: s3, PartialFiles: 1}, s3)
	require.NoError(t, err)
	assert.Empty(t, plan.Units, "the snapshot's only file is done")
	_, err = storage.PlanAppends(ctx, b.src, storage.Cursor{SnapshotID: s1, PartialSnapshotID: s3, PartialFiles: 1}, s3)
	require.ErrorIs(t, err, storage.ErrNotAncestor, "partial snapshot must follow the cursor")
}

func TestPostsFileReadsEveryLineWhole(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", postdata.MaxLineBytes-1) // past bufio.Scanner's 64 KiB limit, within postdata's
	content := "first\n\n  \r\n" + long + "\nlast without newline"
	path := filepath.Join(t.TempDir(), "posts.txt")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))

	var got []postdata.Post
	for p, err := range postdata.File(path, 1, 0, -1) {
		require.NoError(t, err)
		got = append(got, p)
	}
	require.Len(t, got, 5)
	want := []string{"first", "", "  ", long, "last without newline"}
	for i, p := range got {
		assert.Equal(t, int64(i+1), p.ID)
		assert.Equal(t, want[i], p.Text, "line %d", i+1)
	}
	n, err := postdata.CountLines(path)
	require.NoError(t, err)
	assert.Equal(t, int64(5), n)

	var window []int64
	for p, err := range postdata.File(path, 100, 1, 3) {
		require.NoError(t, err)
		window = append(window, p.ID)
	}
	assert.Equal(t, []int64{101, 102}, window)
}

func TestExportFormats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	at := time.Date(2026, 11, 25, 8, 30, 0, 123456000, time.UTC)
	big := int64(9007199254740993) // 2^53 + 1: not representable as a float64
	b.appendPosts(postdata.Post{ID: big, Text: `say "hi", ok`, Author: "ana", CreatedAt: at, Lang: "en"},
		postdata.Post{ID: 2, Text: "", CreatedAt: at})

	var out bytes.Buffer
	n, err := storage.Export(t.Context(), b.src, &out, storage.FormatJSONL, 0)
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 2)
	assert.Equal(t, `{"post_id":9007199254740993,"text":"say \"hi\", ok","author":"ana","created_at":"2026-11-25T08:30:00.123456Z","lang":"en"}`, lines[0])
	dec := json.NewDecoder(strings.NewReader(lines[1]))
	dec.UseNumber()
	var row map[string]any
	require.NoError(t, dec.Decode(&row))
	assert.Nil(t, row["author"])
	assert.Equal(t, json.Number("2"), row["post_id"])

	out.Reset()
	n, err = storage.Export(t.Context(), b.src, &out, storage.FormatCSV, 1)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	recs, err := csv.NewReader(&out).ReadAll()
	require.NoError(t, err)
	assert.Equal(t, [][]string{
		{"post_id", "text", "author", "created_at", "lang"},
		{"9007199254740993", `say "hi", ok`, "ana", "2026-11-25T08:30:00.123456Z", "en"},
	}, recs)

	_, err = storage.Export(t.Context(), b.src, &out, "xml", 0)
	require.ErrorContains(t, err, `export format "xml"`)
}

func TestReadWatermarkOfAFreshTarget(t *testing.T) {
	t.Parallel()
	b := setup(t)
	wm, err := storage.ReadWatermark(b.src, "sentiment", "social.posts")
	require.NoError(t, err)
	assert.True(t, wm.IsZero())
	assert.Zero(t, wm.TargetSnapshotID)
}
