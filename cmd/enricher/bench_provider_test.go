package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/socialdata/enricher/internal/fakellm"
	"github.com/socialdata/enricher/internal/postdata"
)

// envInt reads a benchmark knob from the environment.
func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

var (
	reTime     = regexp.MustCompile(`time\s+(\S+)\s+\(`)
	reRowsSent = regexp.MustCompile(`(\d+) rows sent`)
)

// BenchmarkProviderLimit runs the whole flow (demo: ingest, event, plan,
// read, enrich with the openai provider, write, commit) on the TweetEval
// validation tweets against the fake OpenAI server enforcing RPM and TPM
// with 429 + Retry-After and a fixed latency, the client told the same
// quotas. It reports the rows sent to the model per second against the
// bound min(RPM x rows_per_request, TPM / tokens per row), tokens per row
// being what the server charged (prompt estimate plus max_tokens), and the
// rows lost or failed (must be zero). Knobs: BENCH_RPM (300), BENCH_TPM
// (300000), BENCH_LATENCY_MS (300), BENCH_RPR (20), BENCH_ROWS (all 2000).
// Run with -benchtime 1x; each run takes about half a minute.
func BenchmarkProviderLimit(b *testing.B) {
	data := filepath.Join(sharedData(b), "tweeteval-sentiment", "val_text.txt")
	rpm, tpm := envInt(b, "BENCH_RPM", 300), envInt(b, "BENCH_TPM", 300_000)
	latency := time.Duration(envInt(b, "BENCH_LATENCY_MS", 300)) * time.Millisecond
	rpr := envInt(b, "BENCH_RPR", 20)
	posts := data
	if n := envInt(b, "BENCH_ROWS", 0); n > 0 {
		posts = firstLines(b, data, n)
	}
	for b.Loop() {
		llm := &fakellm.Server{RPM: rpm, TPM: tpm, Latency: latency}
		if err := llm.Start(); err != nil {
			b.Fatal(err)
		}
		work := filepath.Join(b.TempDir(), "demo")
		out, stderr, err := runBoth(b, "demo", "--workdir", work, "--posts", posts, "--rounds", "1", "--samples", "0",
			"--provider", "openai", "--base-url", llm.URL()+"/v1", "--model", "bench",
			"--rpm", strconv.Itoa(rpm), "--tpm", strconv.Itoa(tpm), "--rows-per-request", strconv.Itoa(rpr))
		stats := llm.Stats()
		llm.Close()
		if err != nil {
			b.Fatalf("demo: %v\n%s", err, stderr)
		}
		m := reTime.FindStringSubmatch(out)
		s := reRowsSent.FindStringSubmatch(out)
		if m == nil || s == nil {
			b.Fatalf("no time or rows sent in the summary:\n%s", out)
		}
		elapsed, err := time.ParseDuration(m[1])
		if err != nil {
			b.Fatal(err)
		}
		sent, _ := strconv.Atoi(s[1])
		lost, failed := countRows(b, filepath.Join(work, "enricher.yaml"), posts)
		tokensPerRow := float64(stats.TokensCharged) / float64(stats.RowsAnswered)
		bound := math.Inf(1) // rows per minute; a zero quota is no limit
		if rpm > 0 {
			bound = float64(rpm * rpr)
		}
		if tpm > 0 {
			bound = min(bound, float64(tpm)/tokensPerRow)
		}
		bound /= 60
		achieved := float64(sent) / elapsed.Seconds()
		b.ReportMetric(achieved, "rows/s")
		b.ReportMetric(bound, "bound_rows/s")
		b.ReportMetric(achieved/bound, "ratio")
		b.ReportMetric(tokensPerRow, "charged_tokens/row")
		b.ReportMetric(float64(lost), "lost_rows")
		b.ReportMetric(float64(failed), "failed_rows")
		b.ReportMetric(float64(stats.LimitThrottle), "throttled")
	}
}

// countRows compares the target with the posts file: rows missing (or
// written twice), and rows written with status failed or invalid_output.
func countRows(b *testing.B, cfg, posts string) (lost, failed int) {
	b.Helper()
	want, err := postdata.CountLines(posts)
	if err != nil {
		b.Fatal(err)
	}
	out, _, err := runBoth(b, "export", "--config", cfg, "--table", "social.posts_sentiment")
	if err != nil {
		b.Fatal(err)
	}
	seen := map[json.Number]bool{}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	for dec.More() {
		var r map[string]any
		if err := dec.Decode(&r); err != nil {
			b.Fatal(err)
		}
		id := r["post_id"].(json.Number)
		if seen[id] {
			lost++ // a duplicate is as wrong as a loss
		}
		seen[id] = true
		if st := r["_status"]; st == "failed" || st == "invalid_output" {
			failed++
		}
	}
	return lost + int(want) - len(seen), failed
}

// firstLines copies the first n lines of path to a temporary file.
func firstLines(b *testing.B, path string, n int) string {
	b.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	lines := strings.SplitAfter(string(raw), "\n")
	out := filepath.Join(b.TempDir(), "posts.txt")
	if err := os.WriteFile(out, []byte(strings.Join(lines[:min(n, len(lines))], "")), 0o644); err != nil {
		b.Fatal(err)
	}
	return out
}
