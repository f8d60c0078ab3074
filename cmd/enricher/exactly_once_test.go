package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/sqsqueue"
	mn "github.com/socialdata/enricher/internal/metricnames"
	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/internal/sqstest"
	"github.com/socialdata/enricher/storage"
)

// The crash and race tests run consumers as separate processes: the test
// binary re-executes itself with envChild set, and TestChildProcess turns
// into that process (the os/exec helper-process pattern). Test-only knobs,
// such as a slow enrich stage, live here and never in the product binary.
const (
	envChild      = "ENRICHER_TEST_CHILD"       // "cli": run the enricher command line in ENRICHER_TEST_ARGS; "slow": the same, with a slow enrich stage in run; "lambda": the Lambda handler (the Runtime API in AWS_LAMBDA_RUNTIME_API)
	envChildArgs  = "ENRICHER_TEST_ARGS"        // JSON array of arguments
	envBatchDelay = "ENRICHER_TEST_BATCH_DELAY" // slow: how long each enriched batch is held
)

// TestChildProcess is not a test: it is the body of the child processes
// the crash and race tests start, and returns at once otherwise.
func TestChildProcess(t *testing.T) {
	mode := os.Getenv(envChild)
	if mode == "" {
		return
	}
	var args []string
	if mode != "lambda" { // the Lambda handler takes no arguments
		if err := json.Unmarshal([]byte(os.Getenv(envChildArgs)), &args); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
	}
	ctx, stop := signalContext()
	var err error
	switch mode {
	case "cli":
		cmd := newRootCmd(os.Stdout, os.Stderr)
		cmd.SetArgs(args)
		err = cmd.ExecuteContext(ctx)
	case "slow":
		err = slowRun(ctx, args)
	case "lambda":
		err = runLambda(ctx)
	default:
		err = fmt.Errorf("unknown child mode %q", mode)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// slowRun runs the enricher command line args, whose run command holds
// every enriched batch for $ENRICHER_TEST_BATCH_DELAY so that a kill lands
// while a chunk is in flight.
func slowRun(ctx context.Context, args []string) error {
	delay, err := time.ParseDuration(os.Getenv(envBatchDelay))
	if err != nil {
		return fmt.Errorf("%s: %w", envBatchDelay, err)
	}
	g := &globals{stdout: os.Stdout, stderr: os.Stderr}
	root := newRoot(g)
	rc := &runCmd{cmdBase: cmdBase{g: g}, stageHook: func(_, stage string, _ time.Duration) {
		if stage == "enrich" {
			time.Sleep(delay)
		}
	}}
	root.AddCommand(rc.command())
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// child is a consumer process of a test, with its log lines.
type child struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan map[string]any // decoded JSON log lines; closed at EOF
	done  chan struct{}       // closed once the log is read to its end

	mu  sync.Mutex
	log strings.Builder
}

func startChild(t *testing.T, mode string, env []string, args ...string) *child {
	t.Helper()
	raw, err := json.Marshal(args)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildProcess$")
	cmd.Env = append(os.Environ(), append(env, envChild+"="+mode, envChildArgs+"="+string(raw))...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	// lines is buffered so that reading the log never waits for the test,
	// which stops listening once it has seen what it waits for.
	c := &child{t: t, cmd: cmd, lines: make(chan map[string]any, 1024), done: make(chan struct{})}
	go c.read(stderr) // ends at EOF, when the process exits; wait joins it
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil { // the test failed before waiting
			_ = c.cmd.Process.Kill()
			_ = c.wait()
		}
	})
	return c
}

func (c *child) read(r io.Reader) {
	defer close(c.done)
	defer close(c.lines)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		c.mu.Lock()
		c.log.WriteString(sc.Text() + "\n")
		c.mu.Unlock()
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			select {
			case c.lines <- m:
			default: // nobody waits for lines any more
			}
		}
	}
}

// waitFor reads log lines until n lines with message msg have come, and
// reports whether they did before the process ended.
func (c *child) waitFor(msg string, n int) bool {
	seen := 0
	for m := range c.lines {
		if m["msg"] == msg {
			if seen++; seen == n {
				return true
			}
		}
	}
	return false
}

// wait waits for the process and its log; it returns the exit error.
func (c *child) wait() error {
	go func() {
		for range c.lines { // keep the reader going
		}
	}()
	<-c.done
	return c.cmd.Wait()
}

func (c *child) logs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

// warehouse is a test's catalog, job and source table on disk, with a
// config file that child processes read.
type warehouse struct {
	t      *testing.T
	dir    string
	config string
	cat    *storage.Catalog
	nextID int64
}

func newWarehouse(t *testing.T, pipeline string) *warehouse {
	t.Helper()
	dir := t.TempDir()
	copySentimentJob(t, dir)
	config := filepath.Join(dir, "enricher.yaml")
	require.NoError(t, os.WriteFile(config, []byte(`catalog:
  type: sql
  uri: catalog.db
  warehouse: warehouse
jobs: [sentiment.yaml]
pipeline:
`+pipeline), 0o644))
	cfg, err := loadConfig(config)
	require.NoError(t, err)
	cat, err := storage.OpenCatalog(t.Context(), cfg.Catalog)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, cat.Close()) })
	_, err = cat.CreateIcebergTable(t.Context(), "social.posts", postdata.Schema(), nil)
	require.NoError(t, err)
	return &warehouse{t: t, dir: dir, config: config, cat: cat, nextID: 1}
}

// appendPosts appends n generated posts as one snapshot; with fileRows > 0
// every fileRows rows go to a data file of their own, else all to one.
func (w *warehouse) appendPosts(n, fileRows int) int64 {
	w.t.Helper()
	ctx := w.t.Context()
	src, err := w.cat.LoadTable(ctx, "social.posts")
	require.NoError(w.t, err)
	size, batch := "536870912", 8192
	if fileRows > 0 {
		size, batch = "1", fileRows
	}
	txn := src.NewTransaction()
	require.NoError(w.t, txn.SetProperties(map[string]string{"write.target-file-size-bytes": size}))
	src, err = txn.Commit(ctx)
	require.NoError(w.t, err)
	src, _, err = postdata.AppendBatched(ctx, src, postdata.Sample(int64(n), w.nextID, uint64(w.nextID)), batch)
	require.NoError(w.t, err)
	w.nextID += int64(n)
	return src.CurrentSnapshot().SnapshotID
}

// watermark is the job's cursor as the target records it now.
func (w *warehouse) watermark() storage.Cursor {
	w.t.Helper()
	tgt, err := w.cat.LoadTable(w.t.Context(), "social.posts_sentiment")
	if err != nil {
		require.ErrorIs(w.t, err, storage.ErrTableNotFound)
		return storage.Cursor{}
	}
	wm, err := storage.ReadWatermark(tgt, "sentiment", "social.posts")
	require.NoError(w.t, err)
	return wm.Cursor
}

// requireExactlyOnce reads the whole target and checks that it holds posts
// 1..n once each (count and unique keys), each naming as lineage the
// source snapshot that appended it.
func (w *warehouse) requireExactlyOnce(n int64, snapOf func(id int64) int64) {
	w.t.Helper()
	tgt, err := w.cat.LoadTable(w.t.Context(), "social.posts_sentiment")
	require.NoError(w.t, err)
	seen := make(map[int64]int, n)
	var rows int64
	for r, err := range storage.Rows(w.t.Context(), tgt, 0) {
		require.NoError(w.t, err)
		rows++
		id := r["post_id"].(int64)
		seen[id]++
		require.Equal(w.t, snapOf(id), r["_source_snapshot_id"], "post %d lineage", id)
	}
	for id := int64(1); id <= n; id++ {
		if seen[id] != 1 {
			require.Failf(w.t, "not exactly once", "post %d is in the target %d times", id, seen[id])
		}
	}
	require.Equal(w.t, n, rows, "target rows")
}

// standardQueue creates a standard queue whose messages come back
// visibility seconds after a consumer dies.
func standardQueue(t *testing.T, visibility int) (*sqs.Client, string) {
	t.Helper()
	sqstest.RequireCLIEndpoint(t) // skips without the emulator
	api := sqstest.Client(t)
	return api, sqstest.NewQueue(t, api, map[string]string{"VisibilityTimeout": strconv.Itoa(visibility)})
}

func publish(t *testing.T, api *sqs.Client, url string, snap int64) {
	t.Helper()
	p := &sqsqueue.Publisher{API: api, QueueURL: url}
	_, err := p.Publish(t.Context(), consumer.SnapshotEvent{Table: "social.posts", SnapshotID: snap})
	require.NoError(t, err)
}

// TestCrashedConsumersLoseAndDuplicateNothing works through 200,000 rows
// (one snapshot in one data file, one in many) in a consumer process that
// is killed again and again while a chunk is in flight: with SIGKILL
// before the first commit and after some, and with SIGTERM and no grace.
// Each restart resumes after the last committed chunk; at the end every
// source row is in the target exactly once, with its lineage.
func TestCrashedConsumersLoseAndDuplicateNothing(t *testing.T) {
	t.Parallel()
	api, url := standardQueue(t, 2)
	w := newWarehouse(t, "  batch_rows: 1000\n  chunk_rows: 15000\n  workers: 2\n")
	s1 := w.appendPosts(120_000, 0)     // one data file: chunks end inside it
	s2 := w.appendPosts(80_000, 10_000) // eight data files
	snapOf := func(id int64) int64 {
		if id <= 120_000 {
			return s1
		}
		return s2
	}
	publish(t, api, url, s2)
	publish(t, api, url, s2) // at least once: a duplicate
	publish(t, api, url, s1) // and a stale one

	slowEnv := []string{envBatchDelay + "=20ms"}
	// A message that failed for a passing reason comes back at once, so
	// that the last consumer drains everything.
	runArgs := func(grace string) []string {
		return []string{"run", "--config", w.config, "--queue-url", url, "--drain", "--wait", "1s", "--log-format", "json",
			"--concurrency", "2", "--shutdown-grace", grace, "--retry-backoff", "0s"}
	}
	kills := []struct {
		name    string
		sig     syscall.Signal
		commits int // the child's own commits before the signal; 0: at its plan
	}{
		{"SIGKILL before the first commit", syscall.SIGKILL, 0},
		{"SIGKILL after two commits", syscall.SIGKILL, 2},
		{"SIGTERM without grace after one commit", syscall.SIGTERM, 1},
		{"SIGKILL after three commits", syscall.SIGKILL, 3},
	}
	var cursors []storage.Cursor
	for _, k := range kills {
		c := startChild(t, "slow", slowEnv, runArgs("1ms")...)
		reached := false
		if k.commits == 0 {
			reached = c.waitFor("plan", 1)
		} else {
			reached = c.waitFor("chunk committed", k.commits)
		}
		require.True(t, reached, "%s: the child ended first:\n%s", k.name, c.logs())
		require.NoError(t, c.cmd.Process.Signal(k.sig))
		err := c.wait()
		if k.sig == syscall.SIGTERM {
			require.NoError(t, err, "SIGTERM is a clean shutdown:\n%s", c.logs())
		}
		wm := w.watermark()
		require.NotEqual(t, storage.Cursor{SnapshotID: s2}, wm, "%s: the kill landed before the end", k.name)
		t.Logf("%s: watermark %s", k.name, wm)
		cursors = append(cursors, wm)
	}
	assert.NotEqual(t, cursors[0], cursors[len(cursors)-1], "the restarts made progress")

	// The last consumer finishes, with every message that came back.
	c := startChild(t, "slow", slowEnv, runArgs("30s")...)
	require.NoError(t, c.wait(), c.logs())
	assert.Equal(t, storage.Cursor{SnapshotID: s2}, w.watermark())
	w.requireExactlyOnce(200_000, snapOf)

	// The kills left data files no commit references; the orphans command
	// lists them and deletes them without touching the table's rows.
	out := mustRun(t, "orphans", "--config", w.config, "--older-than", "0s")
	t.Logf("orphans after the kills:\n%s", out)
	mustRun(t, "orphans", "--config", w.config, "--older-than", "0s", "--delete", "--no-writers")
	assert.Contains(t, mustRun(t, "orphans", "--config", w.config, "--older-than", "0s"), "0 orphaned files")
	w.requireExactlyOnce(200_000, snapOf)
}

// TestRacingConsumersCommitEachRangeOnce runs two `enricher run` processes
// on one standard queue that holds every event twice: they work on the
// same table at the same time, lose commit races to each other, and still
// write every row exactly once.
func TestRacingConsumersCommitEachRangeOnce(t *testing.T) {
	t.Parallel()
	api, url := standardQueue(t, 30)
	w := newWarehouse(t, "  batch_rows: 500\n  chunk_rows: 2000\n  workers: 2\n")
	var snaps []int64
	for range 6 {
		snaps = append(snaps, w.appendPosts(5000, 2500))
	}
	for _, s := range snaps {
		publish(t, api, url, s)
		publish(t, api, url, s)
	}
	args := []string{"run", "--config", w.config, "--queue-url", url, "--drain", "--wait", "1s", "--log-format", "json", "--concurrency", "2"}
	a := startChild(t, "cli", nil, args...)
	b := startChild(t, "cli", nil, args...)
	errA, errB := a.wait(), b.wait()
	require.NoError(t, errA, a.logs())
	require.NoError(t, errB, b.logs())
	// The run service's CommitConflicts metric filter counts what the
	// consumers counted (each job's conflicts in its message lines).
	logs := a.logs() + b.logs()
	conflicts := 0.0
	for line := range strings.Lines(logs) {
		var m struct {
			Msg  string
			Jobs map[string]struct{ Conflicts float64 }
		}
		if json.Unmarshal([]byte(line), &m) == nil && strings.HasPrefix(m.Msg, "message ") {
			for _, j := range m.Jobs {
				conflicts += j.Conflicts
			}
		}
	}
	t.Logf("commit conflicts between the two consumers: %v", conflicts)
	for _, f := range mn.RunFilters {
		if f.Name == mn.CommitConflicts {
			assert.Equal(t, conflicts, metricOf(t, f, logs), "the metric filter counts each conflict once")
		}
	}

	w.requireExactlyOnce(30_000, func(id int64) int64 { return snaps[(id-1)/5000] })
	assert.Equal(t, storage.Cursor{SnapshotID: snaps[5]}, w.watermark())
}

// TestInterruptedPublishLosesNothing: ingestion that dies between its
// commit and its publish loses no row (the next event covers every earlier
// append), and a publish retried after an unclear failure (sent twice)
// writes nothing twice.
func TestInterruptedPublishLosesNothing(t *testing.T) {
	t.Parallel()
	api, url := standardQueue(t, 30)
	w := newWarehouse(t, "  chunk_rows: 1000\n")
	s1 := w.appendPosts(1500, 0) // committed; its publish never happened
	s2 := w.appendPosts(700, 0)
	mustRun(t, "publish", "--config", w.config, "--queue-url", url, "--table", "social.posts")
	mustRun(t, "publish", "--config", w.config, "--queue-url", url, "--table", "social.posts", "--snapshot-id", strconv.FormatInt(s2, 10))
	var out, errOut strings.Builder
	cmd := newRootCmd(&out, &errOut)
	cmd.SetArgs([]string{"run", "--config", w.config, "--queue-url", url, "--drain", "--wait", "1s"})
	require.NoError(t, cmd.ExecuteContext(t.Context()), errOut.String())
	w.requireExactlyOnce(2200, func(id int64) int64 {
		if id <= 1500 {
			return s1
		}
		return s2
	})
	d, err := sqsqueue.QueueDepth(t.Context(), api, url)
	require.NoError(t, err)
	assert.Zero(t, d.Visible+d.InFlight, "both events acknowledged")
}
