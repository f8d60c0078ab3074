package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/internal/sqstest"
)

// BenchmarkPublishToCommit is scenario 5 of BENCHMARKS.md: the latency from
// `enricher publish` to the target snapshot that commits its rows, through
// the SQS emulator (ENRICHER_SQS_ENDPOINT, from scripts/sqs-emulator.sh),
// with the real `enricher run` long-polling the queue in this process.
// Each event announces a fresh append snapshot of BENCH_LATENCY_ROWS rows
// (default 1,000); BENCH_LATENCY_EVENTS events (default 20) make one
// iteration, which reports their p50 and p95. The clock starts before
// publish runs and stops when run logs the commit of that snapshot.
func BenchmarkPublishToCommit(b *testing.B) {
	sqstest.RequireCLIEndpoint(b)
	rows := benchEnvInt("BENCH_LATENCY_ROWS", 1000)
	events := int(benchEnvInt("BENCH_LATENCY_EVENTS", 20))
	ctx := b.Context()
	api, err := newSQSClient(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var p50s, p95s, means []float64
	for b.Loop() {
		dir := b.TempDir()
		url := sqstest.NewQueue(b, api, nil)
		work := filepath.Join(dir, "demo")
		benchRun(b, "demo", "--workdir", work, "--generate", "100", "--rounds", "1", "--samples", "0")
		cfg := filepath.Join(work, "enricher.yaml")
		posts := filepath.Join(dir, "posts.txt")
		var text bytes.Buffer
		for p := range postdata.Sample(rows, 1, 1) {
			text.WriteString(strings.ReplaceAll(p.Text, "\n", " ") + "\n")
		}
		if err := os.WriteFile(posts, text.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}

		// run, in this process, reporting each commit's watermark.
		committed := make(chan string, 1) // the watcher never blocks the logger for long
		pr, pw := io.Pipe()
		runCtx, stop := context.WithCancel(ctx)
		runDone := make(chan error, 1)
		go func() {
			cmd := newRootCmd(io.Discard, pw)
			cmd.SetArgs([]string{"run", "--config", cfg, "--queue-url", url, "--wait", "20s", "--log-format", "json"})
			err := cmd.ExecuteContext(runCtx)
			pw.Close()
			runDone <- err
		}()
		watchDone := make(chan struct{})
		go func() {
			defer close(watchDone)
			sc := bufio.NewScanner(pr)
			sc.Buffer(make([]byte, 1<<16), 1<<20)
			for sc.Scan() {
				var rec struct {
					Msg       string `json:"msg"`
					Watermark string `json:"watermark"`
				}
				if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "chunk committed" {
					committed <- rec.Watermark
				}
			}
			_, _ = io.Copy(io.Discard, pr)
		}()

		var lat []float64
		for i := range events {
			snap := strings.TrimSpace(benchRun(b, "ingest", "--config", cfg, "--table", "social.posts", "--posts", posts,
				"--first-id", strconv.FormatInt(101+int64(i)*rows, 10)))
			start := time.Now()
			benchRun(b, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts", "--snapshot-id", snap)
			timeout := time.After(time.Minute)
			for done := false; !done; {
				select {
				case wm := <-committed:
					done = wm == snap
				case err := <-runDone:
					b.Fatalf("run stopped: %v", err)
				case <-timeout:
					b.Fatalf("snapshot %s not committed within a minute", snap)
				}
			}
			lat = append(lat, float64(time.Since(start).Microseconds())/1000)
		}
		stop()
		if err := <-runDone; err != nil && ctx.Err() == nil {
			b.Logf("run: %v", err)
		}
		<-watchDone
		if _, err := api.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: &url}); err != nil {
			b.Logf("delete queue: %v", err)
		}
		p50s = append(p50s, percentile(lat, 50))
		p95s = append(p95s, percentile(lat, 95))
		var sum float64
		for _, l := range lat {
			sum += l
		}
		means = append(means, sum/float64(len(lat)))
	}
	b.ReportMetric(float64(events), "events")
	b.ReportMetric(float64(rows), "rows/event")
	b.ReportMetric(percentile(p50s, 50), "p50_ms")
	b.ReportMetric(percentile(p95s, 50), "p95_ms")
	b.ReportMetric(percentile(means, 50), "mean_ms")
}

// benchRun runs the enricher in-process and returns its stdout.
func benchRun(b *testing.B, args ...string) string {
	b.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd(&out, &errOut)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(b.Context()); err != nil {
		b.Fatalf("enricher %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

func benchEnvInt(name string, def int64) int64 {
	if v, err := strconv.ParseInt(os.Getenv(name), 10, 64); err == nil && v > 0 {
		return v
	}
	return def
}

// percentile is the nearest-rank percentile p of xs.
func percentile(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	rank := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}
