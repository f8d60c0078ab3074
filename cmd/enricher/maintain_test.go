package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

// rowsByKey indexes exported rows by post_id, failing on a key seen twice.
func rowsByKey(t *testing.T, rows []map[string]any) map[string]map[string]any {
	t.Helper()
	out := make(map[string]map[string]any, len(rows))
	for _, r := range rows {
		k := fmt.Sprint(r["post_id"])
		require.NotContains(t, out, k, "post %s twice", k)
		out[k] = r
	}
	return out
}

// decodeAll decodes the JSON objects of out, one per line, keeping
// numbers exact.
func decodeAll(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	for dec.More() {
		var o map[string]any
		require.NoError(t, dec.Decode(&o))
		objs = append(objs, o)
	}
	return objs
}

// jobStatus is the one object `status --format json` prints for cfg, whose
// config has one job.
func jobStatus(t *testing.T, cfg string) map[string]any {
	t.Helper()
	objs := decodeAll(t, mustRun(t, "status", "--config", cfg, "--format", "json"))
	require.Len(t, objs, 1)
	return objs[0]
}

// num is the integer at path in a decoded JSON object.
func num(t *testing.T, o map[string]any, path ...string) int64 {
	t.Helper()
	var v any = o
	for _, p := range path {
		m, ok := v.(map[string]any)
		require.True(t, ok, "%s: not an object in %v", p, o)
		v = m[p]
	}
	n, ok := v.(json.Number)
	require.True(t, ok, "%v: %v is not a number", path, v)
	i, err := n.Int64()
	require.NoError(t, err)
	return i
}

// TestMaintainCompactsADemoOfManySmallCommits: a demo of 80 small
// commits leaves a target of small files; maintain compacts them, expires
// the history its retention does not keep, reports before and after, and
// changes no row.
func TestMaintainCompactsADemoOfManySmallCommits(t *testing.T) {
	t.Parallel()
	_, cfg := newDemo(t, "--generate", "400", "--rounds", "80")
	before := rowsByKey(t, exportRows(t, cfg, "social.posts_sentiment"))
	require.Len(t, before, 400)

	out, logs, err := runBoth(t, "maintain", "--config", cfg, "--format", "json")
	require.NoError(t, err, logs)
	reps := decodeAll(t, out)
	require.Len(t, reps, 1, "one report per target")
	r := reps[0]
	assert.Equal(t, "sentiment", r["job"])
	assert.Equal(t, "social.posts_sentiment", r["target"])
	assert.Equal(t, true, r["ok"])
	assert.NotContains(t, r, "error")
	filesBefore, filesAfter := num(t, r, "before", "data_files"), num(t, r, "after", "data_files")
	assert.Greater(t, filesBefore, filesAfter, "compacted")
	assert.GreaterOrEqual(t, filesAfter, int64(1))
	assert.Equal(t, int64(400), num(t, r, "before", "rows"))
	assert.Equal(t, int64(400), num(t, r, "after", "rows"))
	assert.Positive(t, num(t, r, "compacted_groups"))
	assert.Equal(t, filesBefore-filesAfter, num(t, r, "files_replaced")-num(t, r, "files_written"))
	assert.Greater(t, num(t, r, "before", "mean_data_file_bytes"), int64(0))
	assert.Greater(t, num(t, r, "after", "mean_data_file_bytes"), num(t, r, "before", "mean_data_file_bytes"))
	assert.GreaterOrEqual(t, num(t, r, "before", "snapshots"), num(t, r, "after", "snapshots"))
	assert.LessOrEqual(t, num(t, r, "after", "snapshots"), int64(storage.DefaultMinSnapshotsToKeep))
	assert.Positive(t, num(t, r, "after", "metadata_bytes"))
	assert.Equal(t, int64(1), num(t, r, "after", "manifests"))
	assert.Equal(t, int64(0), num(t, r, "conflicts_retried"))
	assert.Equal(t, int64(0), num(t, r, "orphan_files"))
	assert.NotEmpty(t, r["finished_at"])
	for _, step := range []string{"maintaining target", "step=compaction", `step="manifest rewrite"`, `step="snapshot expiry"`,
		`step="orphan cleanup"`, "target maintained"} {
		assert.Contains(t, logs, step, "progress in the log")
	}

	after := rowsByKey(t, exportRows(t, cfg, "social.posts_sentiment"))
	assert.Equal(t, before, after, "the same rows, each once")

	// Again, as text: nothing left to compact.
	out = mustRun(t, "maintain", "--config", cfg, "--skip-orphans")
	for _, want := range []string{"social.posts_sentiment (job sentiment): maintained in", "before", "after",
		"mean file size", "snapshots held", "metadata bytes", "manifests", "0 groups: 0 files",
		"orphan cleanup     skipped (--skip-orphans)", "conflicts retried  0"} {
		assert.Contains(t, out, want)
	}
	assert.Regexp(t, regexp.MustCompile(fmt.Sprintf(`data files\s+%d\s+%d\n`, filesAfter, filesAfter)), out)
	assert.Regexp(t, regexp.MustCompile(`rows\s+400\s+400\n`), out)
	assert.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 400)
}

func TestMaintainUnknownJobListsTheJobs(t *testing.T) {
	t.Parallel()
	work, _ := newDemo(t, "--generate", "10", "--rounds", "1")
	_, err := run(t, "maintain", "--config", filepath.Join(work, "enricher.yaml"), "--job", "nope")
	require.ErrorIs(t, err, errUsage)
	assert.ErrorContains(t, err, `--job "nope": no such job`)
	assert.ErrorContains(t, err, "the config has jobs sentiment")

	_, err = run(t, "maintain", "--config", filepath.Join(work, "enricher.yaml"), "--format", "yaml")
	require.ErrorIs(t, err, errUsage)
	_, err = run(t, "maintain", "--config", filepath.Join(work, "enricher.yaml"), "--orphan-grace", "0s")
	require.ErrorIs(t, err, errUsage)
}

// TestOrphanCleanupRefusesAGraceShorterThanACommit: deleting orphans
// younger than storage.MinOrphanGrace could delete the files of a commit
// in flight, so maintain and orphans --delete refuse it unless
// --no-writers says that nothing writes the tables; listing is always
// allowed.
func TestOrphanCleanupRefusesAGraceShorterThanACommit(t *testing.T) {
	t.Parallel()
	_, cfg := newDemo(t, "--generate", "10", "--rounds", "1")
	for _, args := range [][]string{
		{"maintain", "--orphan-grace", "1ns"},
		{"maintain", "--orphan-grace", "59m"},
		{"orphans", "--delete", "--older-than", "0s"},
		{"orphans", "--delete", "--older-than", "30m"},
	} {
		_, err := run(t, append(args, "--config", cfg)...)
		require.ErrorIs(t, err, errUsage, "%v", args)
		assert.ErrorContains(t, err, "may belong to a commit in flight", "%v", args)
		assert.ErrorContains(t, err, "--no-writers", "%v", args)
	}
	assert.Contains(t, mustRun(t, "orphans", "--config", cfg, "--older-than", "0s"), "0 orphaned files")
	assert.Contains(t, mustRun(t, "orphans", "--config", cfg, "--delete", "--older-than", "1h"), "0 orphaned files")
	assert.Contains(t, mustRun(t, "orphans", "--config", cfg, "--delete", "--older-than", "0s", "--no-writers"), "0 orphaned files")
	mustRun(t, "maintain", "--config", cfg, "--orphan-grace", "1ns", "--no-writers")
	mustRun(t, "maintain", "--config", cfg, "--orphan-grace", "1ns", "--skip-orphans")
}

// TestMaintainGoesOnPastAMissingTarget: a job that has not written its
// target yet is reported, the other targets are maintained, and the exit
// status says one failed.
func TestMaintainGoesOnPastAMissingTarget(t *testing.T) {
	t.Parallel()
	work, _ := newDemo(t, "--generate", "30", "--rounds", "3")
	cfg := addJob(t, work, "mood", "social.posts_mood")

	out, err := run(t, "maintain", "--config", cfg)
	require.Error(t, err)
	assert.ErrorContains(t, err, "1 of 2 targets failed: social.posts_mood (job mood)")
	assert.Contains(t, out, "social.posts_sentiment (job sentiment): maintained in")
	assert.Contains(t, out, "social.posts_mood (job mood): no such table")

	out, err = run(t, "maintain", "--config", cfg, "--format", "json", "--job", "mood")
	require.Error(t, err)
	reps := decodeAll(t, out)
	require.Len(t, reps, 1)
	assert.Equal(t, "mood", reps[0]["job"])
	assert.Equal(t, false, reps[0]["ok"])
	assert.Equal(t, true, reps[0]["target_missing"])
	assert.Contains(t, reps[0]["error"], "table not found")

	mustRun(t, "maintain", "--config", cfg, "--job", "sentiment")
	assert.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 30)
}

// addJob adds to the demo in work a copy of its sentiment job named name
// that writes target, and returns the config.
func addJob(t *testing.T, work, name, target string) string {
	t.Helper()
	spec, err := os.ReadFile(filepath.Join(work, "jobs", "sentiment.yaml"))
	require.NoError(t, err)
	s := regexp.MustCompile(`(?m)^name: .*$`).ReplaceAllString(string(spec), "name: "+name)
	s = strings.Replace(s, "table: social.posts_sentiment", "table: "+target, 1)
	require.Contains(t, s, "table: "+target)
	require.NoError(t, os.WriteFile(filepath.Join(work, "jobs", name+".yaml"), []byte(s), 0o644))
	cfg := filepath.Join(work, "enricher.yaml")
	c, err := os.ReadFile(cfg)
	require.NoError(t, err)
	out := strings.Replace(string(c), "  - jobs/sentiment.yaml\n", "  - jobs/sentiment.yaml\n  - jobs/"+name+".yaml\n", 1)
	require.NotEqual(t, string(c), out)
	require.NoError(t, os.WriteFile(cfg, []byte(out), 0o644))
	return cfg
}

// TestStatusShowsTargetHealthAndSourceHistory: status shows the target's
// health, its last maintenance (never, then maintain's), and whether the
// source's history reaches the watermark: no, with the way out, once the
// source's snapshots after it are expired.
func TestStatusShowsTargetHealthAndSourceHistory(t *testing.T) {
	t.Parallel()
	work, cfg := newDemo(t, "--generate", "30", "--rounds", "6")
	dir := filepath.Dir(work)

	s := jobStatus(t, cfg)
	assert.Equal(t, true, s["source_history_reaches_watermark"])
	assert.NotContains(t, s, "source_history_problem")
	h, ok := s["target_health"].(map[string]any)
	require.True(t, ok, "target_health: %v", s)
	assert.Equal(t, int64(6), num(t, s, "target_health", "data_files"), "a file per round")
	assert.Equal(t, int64(30), num(t, s, "target_health", "rows"))
	assert.Positive(t, num(t, s, "target_health", "snapshots"))
	assert.Positive(t, num(t, s, "target_health", "metadata_bytes"))
	assert.Positive(t, num(t, s, "target_health", "mean_data_file_bytes"))
	assert.Equal(t, num(t, s, "target_health", "data_bytes")/6, num(t, s, "target_health", "mean_data_file_bytes"))
	assert.Equal(t, int64(storage.DefaultMinSnapshotsToKeep), num(t, s, "target_health", "retain_min_snapshots"))
	assert.Contains(t, h, "last_maintenance_at")
	assert.Nil(t, h["last_maintenance_at"], "never maintained")

	out := mustRun(t, "status", "--config", cfg)
	for _, want := range []string{"SNAPSHOTS BEHIND", "sentiment: target social.posts_sentiment", "snapshots held",
		"(retention: the newest 10)", "metadata", "manifests", "last maintenance           never"} {
		assert.Contains(t, out, want)
	}
	assert.Regexp(t, regexp.MustCompile(`data files\s+6, mean \d+(\.\d)? (B|KiB) \(.*, 30 rows\)\n`), out)
	assert.Regexp(t, regexp.MustCompile(`history reaches watermark\s+yes\n`), out)

	mustRun(t, "maintain", "--config", cfg) // compacts the 6 files (5 at least)
	s = jobStatus(t, cfg)
	assert.NotNil(t, s["target_health"].(map[string]any)["last_maintenance_at"])
	assert.Equal(t, int64(1), num(t, s, "target_health", "data_files"))
	assert.NotContains(t, mustRun(t, "status", "--config", cfg), "never")

	// Two snapshots appended after the watermark, then ingestion's expiry
	// keeps only the newest: the watermark's snapshot is gone.
	more := filepath.Join(dir, "more.txt")
	require.NoError(t, os.WriteFile(more, []byte("a\nb\nc\n"), 0o644))
	mustRun(t, "ingest", "--config", cfg, "--posts", more, "--first-id", "31")
	mustRun(t, "ingest", "--config", cfg, "--posts", more, "--first-id", "34")
	src, done := loadTable(t, cfg, "social.posts")
	testbed.ExpireSource(t, src, 1)
	done()

	s = jobStatus(t, cfg)
	assert.Equal(t, false, s["source_history_reaches_watermark"])
	assert.Equal(t, true, s["source_history_expired"])
	assert.Contains(t, s["source_history_problem"], "source history expired past the watermark")
	assert.NotContains(t, s, "problem", "the rest is still shown")
	assert.Equal(t, int64(1), num(t, s, "target_health", "data_files"))
	out = mustRun(t, "status", "--config", cfg)
	t.Logf("status after the source's expiry:\n%s", out)
	assert.Contains(t, out, "history reaches watermark  no: run enricher resync --job sentiment (")
	assert.Regexp(t, regexp.MustCompile(`sentiment\s+social\.posts\s+\d+\s+\d+\s+\?\s+\?\s`), out, "behind: unknown")
}

// loadTable loads a table of the config's catalog; done closes the catalog.
func loadTable(t *testing.T, cfgPath, name string) (tbl *table.Table, done func()) {
	t.Helper()
	cfg, err := loadConfig(cfgPath)
	require.NoError(t, err)
	cfg.Catalog.MustExist = true
	cat, err := storage.OpenCatalog(t.Context(), cfg.Catalog)
	require.NoError(t, err)
	tbl, err = cat.LoadTable(t.Context(), name)
	if err != nil {
		_ = cat.Close()
		require.NoError(t, err)
	}
	return tbl, func() { _ = cat.Close() }
}

// TestMaintainFollowsTheSpecsTargetProperties: a retention added to the
// job spec after the target was created is set by maintain itself (no
// consumer has to open the target first) and its expiry keeps that many.
func TestMaintainFollowsTheSpecsTargetProperties(t *testing.T) {
	t.Parallel()
	work, cfg := newDemo(t, "--generate", "60", "--rounds", "15")
	spec := filepath.Join(work, "jobs", "sentiment.yaml")
	data, err := os.ReadFile(spec)
	require.NoError(t, err)
	edited := strings.Replace(string(data), "target:\n  table: social.posts_sentiment\n",
		"target:\n  table: social.posts_sentiment\n  properties:\n    history.expire.min-snapshots-to-keep: \"2\"\n", 1)
	require.NotEqual(t, string(data), edited)
	require.NoError(t, os.WriteFile(spec, []byte(edited), 0o644))
	assert.Contains(t, mustRun(t, "status", "--config", cfg),
		"not yet on the table: history.expire.min-snapshots-to-keep=2 (the next consumer or enricher maintain sets them)")

	out, logs, err := runBoth(t, "maintain", "--config", cfg, "--format", "json")
	require.NoError(t, err, logs)
	assert.Contains(t, logs, "history.expire.min-snapshots-to-keep=2 (was unset)")
	r := decodeAll(t, out)[0]
	assert.LessOrEqual(t, num(t, r, "after", "snapshots"), int64(2+2), "the newest 2, and maintenance's own")
	status := mustRun(t, "status", "--config", cfg)
	assert.Contains(t, status, "retention: the newest 2")
	assert.NotContains(t, status, "not yet on the table")
}
