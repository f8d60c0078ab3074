package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/testbed"
)

func TestMain(m *testing.M) { testbed.VerifyTestMain(m) }

// run runs the enricher with args in-process and returns its stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd(&out, &errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	if err != nil {
		t.Logf("enricher %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, args...)
	require.NoError(t, err)
	return out
}

// exportRows exports a table as JSON lines and decodes them, keeping
// numbers exact.
func exportRows(t *testing.T, cfg, tbl string) []map[string]any {
	t.Helper()
	return decodeAll(t, mustRun(t, "export", "--config", cfg, "--table", tbl))
}

func TestDemoWithPostsFileEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	posts := []string{
		"I love this so much, what a wonderful day",
		"",
		"This is the worst service ever, I hate it",
		"   ",
		strings.Repeat("a very long post about nothing in particular ", 5000),
		"The meeting is at ten",
	}
	for i := range 40 {
		posts = append(posts, "post number "+strconv.Itoa(i)+" is great")
	}
	postsFile := filepath.Join(dir, "posts.txt")
	require.NoError(t, os.WriteFile(postsFile, []byte(strings.Join(posts, "\n")+"\n"), 0o644))
	work := filepath.Join(dir, "demo")

	out := mustRun(t, "demo", "--workdir", work, "--posts", postsFile, "--rounds", "3")
	for _, want := range []string{"round 1:", "round 3:", "redelivered event", "rows read", "rows written   46",
		"skipped 2", "rows/s", "sample rows", "next", "export --config"} {
		assert.Contains(t, out, want)
	}

	cfg := filepath.Join(work, "enricher.yaml")
	rows := exportRows(t, cfg, "social.posts_sentiment")
	require.Len(t, rows, len(posts))
	seen := map[int64]map[string]any{}
	for _, r := range rows {
		num, ok := r["post_id"].(json.Number)
		require.True(t, ok, "post_id is a JSON number: %v", r["post_id"])
		id, err := num.Int64()
		require.NoError(t, err)
		require.NotContains(t, seen, id, "post %d written twice", id)
		seen[id] = r
		_, err = time.Parse(time.RFC3339Nano, r["_enriched_at"].(string))
		require.NoError(t, err, "timestamps are RFC 3339")
		_, ok = r["_source_snapshot_id"].(json.Number)
		require.True(t, ok)
	}
	for id := int64(1); id <= int64(len(posts)); id++ {
		require.Contains(t, seen, id, "post_id is the line number")
	}
	assert.Equal(t, "positive", seen[1]["sentiment"])
	assert.Equal(t, "skipped", seen[2]["_status"])
	assert.Nil(t, seen[2]["sentiment"])
	assert.Equal(t, "negative", seen[3]["sentiment"])
	assert.Equal(t, "skipped", seen[4]["_status"])
	assert.Equal(t, "ok", seen[5]["_status"], "an over-long post is truncated, not dropped")
	assert.Equal(t, "lexicon/vader", seen[6]["_model"])

	// A second run resets the folder it made, and starts over.
	mustRun(t, "demo", "--workdir", work, "--generate", "50", "--rounds", "1", "--samples", "0")
	assert.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 50)
}

func TestDemoRefusesAForeignFolder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "precious.txt"), []byte("keep"), 0o644))
	_, err := run(t, "demo", "--workdir", dir)
	require.ErrorContains(t, err, "not empty and was not made by demo")
	_, err = os.Stat(filepath.Join(dir, "precious.txt"))
	require.NoError(t, err)
}

func TestIngestThenExportCSV(t *testing.T) {
	t.Parallel()
	work, cfg := newDemo(t, "--generate", "20")
	dir := filepath.Dir(work)
	more := filepath.Join(dir, "more.txt")
	require.NoError(t, os.WriteFile(more, []byte("one\ntwo\nthree"), 0o644))

	out := mustRun(t, "ingest", "--config", cfg, "--table", "social.posts", "--posts", more, "--first-id", "21")
	snap, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	require.NoError(t, err, "ingest prints the snapshot id alone: %q", out)
	assert.Positive(t, snap)

	out = mustRun(t, "export", "--config", cfg, "--table", "social.posts", "--format", "csv")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	assert.Equal(t, "post_id,text,author,created_at,lang", lines[0])
	assert.Len(t, lines, 1+23)
	assert.Contains(t, out, "\n23,three,,")

	out = mustRun(t, "export", "--config", cfg, "--table", "social.posts", "--limit", "2")
	assert.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 2)
}

func TestConfigFromEnvironment(t *testing.T) {
	// Not parallel: it sets an environment variable.
	work, _ := newDemo(t, "--generate", "10")
	t.Setenv(envConfig, filepath.Join(work, "enricher.yaml"))
	assert.Len(t, exportRows(t, "", "social.posts_sentiment"), 10)

	t.Setenv(envConfig, "")
	_, err := run(t, "export", "--table", "social.posts")
	require.ErrorContains(t, err, "no config: pass --config FILE or set ENRICHER_CONFIG")
}

func TestInvalidConfigAndSpecNameFileFieldAndReason(t *testing.T) {
	t.Parallel()
	work, cfg := newDemo(t, "--generate", "5")
	out := mustRun(t, "validate", "--config", cfg)
	assert.Contains(t, out, "job sentiment v1")
	assert.Contains(t, out, "social.posts.text -> social.posts_sentiment via lexicon/vader")

	spec := filepath.Join(work, "jobs", "sentiment.yaml")
	data, err := os.ReadFile(spec)
	require.NoError(t, err)
	broken := strings.Replace(string(data), "max: 1\n", "max: -2\n", 1)
	require.NoError(t, os.WriteFile(spec, []byte(broken), 0o644))
	_, err = run(t, "validate", "--config", cfg)
	require.ErrorContains(t, err, spec+": outputs[1].max: must be at least min (-1), got -2")

	bad := filepath.Join(work, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("catalog:\n  type: sql\n  uri: c.db\n  warehouse: w\njobs: [jobs/sentiment.yaml]\npipeline:\n  workers: -1\n  shutdown_grace: soon\n"), 0o644))
	_, err = run(t, "validate", "--config", bad)
	require.ErrorContains(t, err, bad+": pipeline.workers: must be from 0 to 1024, got -1")
	require.ErrorContains(t, err, bad+`: pipeline.shutdown_grace: "soon" is not a duration`)

	// Two jobs writing one target table.
	other := filepath.Join(work, "jobs", "other.yaml")
	require.NoError(t, os.WriteFile(other, []byte(strings.Replace(string(data), "name: sentiment", "name: other", 1)), 0o644))
	require.NoError(t, os.WriteFile(spec, data, 0o644))
	require.NoError(t, os.WriteFile(bad, []byte("catalog:\n  type: sql\n  uri: c.db\n  warehouse: w\njobs: [jobs/sentiment.yaml, jobs/other.yaml]\n"), 0o644))
	_, err = run(t, "validate", "--config", bad)
	require.ErrorContains(t, err, other+`: target.table: "social.posts_sentiment" is also the target of `+spec)

	require.NoError(t, os.WriteFile(bad, []byte("catalog:\n  tpye: sql\n"), 0o644))
	_, err = run(t, "export", "--config", bad, "--table", "a.b")
	require.ErrorContains(t, err, bad+": line 2: unknown field tpye")
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	_, err := run(t, "demo", "--rounds", "0", "--workdir", t.TempDir())
	require.ErrorContains(t, err, "--rounds must be at least 1")
	_, err = run(t, "export", "--config", "x.yaml", "--table", "a.b", "--format", "xml")
	require.ErrorContains(t, err, `invalid argument "xml" for "--format" flag: want jsonl or csv`)
	require.ErrorIs(t, err, errUsage)
	// Every subcommand builds its logger before anything else, also those
	// that log little: a wrong --log-level or --log-format is refused.
	for _, sub := range []string{"status", "export", "validate", "orphans"} {
		_, err = run(t, sub, "--config", "x.yaml", "--log-level", "loud")
		require.ErrorIs(t, err, errUsage, sub)
		require.ErrorContains(t, err, `--log-level "loud": want debug, info, warn or error`, sub)
		_, err = run(t, sub, "--config", "x.yaml", "--log-format", "xml")
		require.ErrorContains(t, err, `--log-format "xml": want text or json`, sub)
	}
	_, err = run(t, "ingest", "--config", "x.yaml")
	require.ErrorContains(t, err, "--posts FILE is required")
	// Negative numbers are refused, not read as a default, and numbers
	// that would overflow.
	for args, want := range map[string]string{
		"export --limit -5":                                   "--limit -5 must not be negative",
		"run --concurrency -5":                                "--concurrency -5: want 1 to 1024",
		"run --concurrency 0":                                 "--concurrency 0: want 1 to 1024",
		"run --retry-backoff -1s":                             "--retry-backoff -1s: want 0 to 15m0s",
		"run --shutdown-grace -1s":                            "--shutdown-grace -1s must not be negative",
		"ingest --posts p.txt --first-id 9223372036854775805": "--first-id 9223372036854775805: want 0 to",
		"demo --generate 9223372036854775807":                 "--generate must be from 1 to 1000000000",
	} {
		a := append(strings.Fields(args), "--config", "x.yaml", "--table", "a.b")
		switch a[0] {
		case "run":
			a = append(a[:len(a)-2], "--queue-url", "http://localhost/q")
		case "demo":
			a = append(a[:len(a)-4], "--workdir", t.TempDir())
		}
		_, err = run(t, a...)
		require.ErrorIs(t, err, errUsage, args)
		assert.ErrorContains(t, err, want, args)
	}
}

// sharedData finds ../shared/data (beside the repository) or
// $ENRICHER_SHARED_DATA. Outside CI a missing folder skips loudly; in CI it
// fails.
func sharedData(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("ENRICHER_SHARED_DATA")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "data")
	}
	if _, err := os.Stat(filepath.Join(dir, "tweeteval-sentiment", "val_text.txt")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("shared data not found at %s (set ENRICHER_SHARED_DATA): %v", dir, err)
		}
		t.Skipf("SKIPPED: shared data not found at %s; set ENRICHER_SHARED_DATA to run this test", dir)
	}
	return dir
}

// TestDemoOnRealTweetsKeepsEveryLabelOnItsRow runs the demo on the TweetEval
// validation tweets and scores the written labels against the gold labels
// by post_id. The lexicon's macro-averaged recall there is about 0.60;
// chance is 0.33, which is also what any row misattribution would give.
func TestDemoOnRealTweetsKeepsEveryLabelOnItsRow(t *testing.T) {
	t.Parallel()
	data := filepath.Join(sharedData(t), "tweeteval-sentiment")
	work, _ := newDemo(t, "--posts", filepath.Join(data, "val_text.txt"), "--rounds", "4")
	raw, err := os.ReadFile(filepath.Join(data, "val_labels.txt"))
	require.NoError(t, err)
	gold := strings.Fields(string(raw))
	names := map[string]string{"0": "negative", "1": "neutral", "2": "positive"}

	rows := exportRows(t, filepath.Join(work, "enricher.yaml"), "social.posts_sentiment")
	require.Len(t, rows, len(gold))
	hits, totals := map[string]int{}, map[string]int{}
	for _, r := range rows {
		id, err := r["post_id"].(json.Number).Int64()
		require.NoError(t, err)
		want := names[gold[id-1]]
		totals[want]++
		if r["sentiment"] == want {
			hits[want]++
		}
	}
	var macro float64
	for _, c := range []string{"negative", "neutral", "positive"} {
		macro += float64(hits[c]) / float64(totals[c]) / 3
	}
	t.Logf("lexicon macro-averaged recall on val: %.3f", macro)
	assert.Greater(t, macro, 0.55)
}

func TestStatusShowsHowFarBehind(t *testing.T) {
	t.Parallel()
	work, cfg := newDemo(t, "--generate", "30")
	dir := filepath.Dir(work)

	s := jobStatus(t, cfg)
	assert.Equal(t, "sentiment", s["job"])
	assert.Equal(t, json.Number("0"), s["snapshots_behind"])
	assert.Equal(t, json.Number("0"), s["rows_behind"])
	assert.Equal(t, "30", s["target_rows"])
	assert.Equal(t, s["source_snapshot_id"].(json.Number).String(), s["watermark"])
	assert.NotEmpty(t, s["last_commit_at"])

	more := filepath.Join(dir, "more.txt")
	require.NoError(t, os.WriteFile(more, []byte("a\nb\nc\n"), 0o644))
	mustRun(t, "ingest", "--config", cfg, "--posts", more, "--first-id", "31")
	mustRun(t, "ingest", "--config", cfg, "--posts", more, "--first-id", "34")
	s = jobStatus(t, cfg)
	assert.Equal(t, json.Number("2"), s["snapshots_behind"])
	assert.Equal(t, json.Number("6"), s["rows_behind"])

	out := mustRun(t, "status", "--config", cfg)
	assert.Contains(t, out, "SNAPSHOTS BEHIND")
	assert.Contains(t, out, "social.posts")
}

// copySentimentJob writes the shipped sentiment job spec into dir as
// sentiment.yaml, for a config that lists it.
func copySentimentJob(t *testing.T, dir string) {
	t.Helper()
	job, err := os.ReadFile(filepath.Join("..", "..", "jobs", "sentiment.yaml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sentiment.yaml"), job, 0o644))
}

// newDemo runs demo with args (and no samples) in a new folder and returns
// the folder and its config file.
func newDemo(t *testing.T, args ...string) (work, cfg string) {
	t.Helper()
	work = filepath.Join(t.TempDir(), "demo")
	mustRun(t, append([]string{"demo", "--workdir", work, "--samples", "0"}, args...)...)
	return work, filepath.Join(work, "enricher.yaml")
}
