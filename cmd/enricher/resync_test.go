package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

// expireSourceHistory expires every snapshot of a table but its current
// one, as an ingestion's maintenance would.
func expireSourceHistory(t *testing.T, work, name string) {
	t.Helper()
	cat, err := storage.OpenCatalog(t.Context(), storage.CatalogConfig{Name: "demo", Type: storage.CatalogSQL,
		URI: filepath.Join(work, "catalog.db"), Warehouse: filepath.Join(work, "warehouse")})
	require.NoError(t, err)
	defer func() { require.NoError(t, cat.Close()) }()
	tbl, err := cat.LoadTable(t.Context(), name)
	require.NoError(t, err)
	testbed.ExpireSource(t, tbl, 1)
}

// TestResyncAfterTheSourceHistoryExpired: a source whose history was
// expired past the job's watermark is caught up by `resync`, exactly once:
// a dry run counts, the run writes exactly the missing rows, a second run
// writes nothing.
func TestResyncAfterTheSourceHistoryExpired(t *testing.T) {
	t.Parallel()
	work, cfg := newDemo(t, "--generate", "50", "--rounds", "1")
	posts := filepath.Join(t.TempDir(), "posts.txt")
	require.NoError(t, os.WriteFile(posts, []byte(strings.Repeat("what a lovely day\nthis is awful\n", 10)), 0o644))
	mustRun(t, "ingest", "--config", cfg, "--posts", posts, "--first-id", "51")
	mustRun(t, "ingest", "--config", cfg, "--posts", posts, "--first-id", "71")
	expireSourceHistory(t, work, "social.posts")

	out := mustRun(t, "resync", "--config", cfg, "--job", "sentiment", "--dry-run")
	assert.Regexp(t, `missing rows\s+40\s`, out)
	assert.Contains(t, out, "nothing written")
	assert.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 50)

	out = mustRun(t, "resync", "--config", cfg, "--job", "sentiment", "--memory", "4096")
	assert.Regexp(t, `rows written\s+40\s`, out)
	rows := exportRows(t, cfg, "social.posts_sentiment")
	require.Len(t, rows, 90)
	seen := map[string]int{}
	for _, r := range rows {
		seen[string(r["post_id"].(interface{ String() string }).String())]++
	}
	assert.Len(t, seen, 90, "one row per post")

	out = mustRun(t, "resync", "--config", cfg, "--job", "sentiment")
	assert.Regexp(t, `missing rows\s+0\s`, out)
	assert.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 90)

	_, _, err := runBoth(t, "resync", "--config", cfg, "--job", "nope")
	require.ErrorContains(t, err, "nope")

	// A missing --temp-dir or a budget too small is refused before any
	// work.
	_, _, err = runBoth(t, "resync", "--config", cfg, "--job", "sentiment", "--temp-dir", filepath.Join(work, "nowhere"))
	require.ErrorIs(t, err, errUsage)
	assert.ErrorContains(t, err, "--temp-dir")
	_, _, err = runBoth(t, "resync", "--config", cfg, "--job", "sentiment", "--memory", "1")
	require.ErrorIs(t, err, errUsage)
	assert.ErrorContains(t, err, "--memory 1: want at least 4096 bytes")
}

func TestByteSizeFlag(t *testing.T) {
	t.Parallel()
	for give, want := range map[string]int64{"4096": 4096, "64KiB": 64 << 10, "256MiB": 256 << 20, "1GiB": 1 << 30, "2GB": 2e9, "10 MB": 10e6, "5B": 5} {
		var b byteSize
		require.NoError(t, b.Set(give), give)
		assert.Equal(t, want, int64(b), give)
	}
	for _, bad := range []string{"", "-1", "1.5GiB", "lots", "9999999999GiB"} {
		var b byteSize
		assert.Error(t, b.Set(bad), bad)
	}
}
