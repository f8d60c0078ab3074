package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/sqstest"
)

// s3Bucket creates a fresh bucket on the S3 API of the emulator that
// serves SQS too (same port, path-style addressing) and returns the
// endpoint and the bucket.
func s3Bucket(t *testing.T) (endpoint, bucket string) {
	t.Helper()
	sqstest.RequireCLIEndpoint(t) // skips loudly without the emulator (fails in CI)
	endpoint = sqstest.Endpoint(t)
	bucket = "wh-" + sqstest.Name(t)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, endpoint+"/"+bucket, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Less(t, resp.StatusCode, 300, "create bucket %s: %s", bucket, resp.Status)
	return endpoint, bucket
}

// TestWarehouseOnS3 runs the whole flow with table data and metadata on
// S3 (iceberg-go's S3 FileIO against the emulator's S3 API): ingest in two
// snapshots, publish, consume in chunks that end inside data files,
// export, and list orphans.
func TestWarehouseOnS3(t *testing.T) {
	t.Parallel()
	endpoint, bucket := s3Bucket(t)
	_, url, _ := runQueue(t)
	dir := t.TempDir()
	copySentimentJob(t, dir)
	cfg := filepath.Join(dir, "enricher.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`catalog:
  type: sql
  uri: catalog.db
  warehouse: s3://%s/warehouse
  properties:
    s3.endpoint: %s
    s3.region: us-east-1
    s3.access-key-id: test
    s3.secret-access-key: test
jobs: [sentiment.yaml]
pipeline:
  chunk_rows: 150
`, bucket, endpoint)), 0o644))

	var lines []string
	for i := range 400 {
		lines = append(lines, "post number "+strconv.Itoa(i)+" is great")
	}
	posts := filepath.Join(dir, "posts.txt")
	require.NoError(t, os.WriteFile(posts, []byte(strings.Join(lines[:250], "\n")), 0o644))
	s1 := strings.TrimSpace(mustRun(t, "ingest", "--config", cfg, "--table", "social.posts", "--posts", posts))
	require.NoError(t, os.WriteFile(posts, []byte(strings.Join(lines[250:], "\n")), 0o644))
	s2 := strings.TrimSpace(mustRun(t, "ingest", "--config", cfg, "--table", "social.posts", "--posts", posts, "--first-id", "251"))
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")

	var out, errOut strings.Builder
	cmd := newRootCmd(&out, &errOut)
	cmd.SetArgs([]string{"run", "--config", cfg, "--queue-url", url, "--drain", "--wait", "1s"})
	require.NoError(t, cmd.ExecuteContext(t.Context()), errOut.String())
	assert.Equal(t, 3, strings.Count(errOut.String(), "chunk committed"), "400 rows in chunks of 150")

	rows := exportRows(t, cfg, "social.posts_sentiment")
	require.Len(t, rows, 400)
	seen := map[string]bool{}
	for _, r := range rows {
		id := r["post_id"].(interface{ String() string }).String()
		require.False(t, seen[id], "post %s written twice", id)
		seen[id] = true
		n, err := strconv.Atoi(id)
		require.NoError(t, err)
		want := s1
		if n > 250 {
			want = s2
		}
		assert.Equal(t, want, r["_source_snapshot_id"].(interface{ String() string }).String(), "post %d lineage", n)
	}

	// The files are in the bucket, and none is an orphan.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet,
		endpoint+"/"+bucket+"?list-type=2&prefix=warehouse/social.db/posts_sentiment/data/", nil)
	require.NoError(t, err)
	list, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(list.Body)
	require.NoError(t, err)
	require.NoError(t, list.Body.Close())
	assert.Contains(t, string(body), ".parquet", "data files are on S3")
	_, err = os.Stat(filepath.Join(dir, "warehouse"))
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing in a local warehouse folder")
	assert.Contains(t, mustRun(t, "orphans", "--config", cfg, "--older-than", "0s"), "0 orphaned files")
}
