package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/apache/iceberg-go/table"
	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/jobs"
	"github.com/socialdata/enricher/storage"
)

// demoLockFile is the lock a demo holds on its workdir while it runs.
const demoLockFile = ".demo.lock"

// demoMarker marks a folder as a demo workdir that demo may reset.
const demoMarker = ".enricher-demo"

// defaultDemoDir is where demo works unless --workdir says otherwise.
const defaultDemoDir = "enricher-demo"

const demoConfig = `# Runtime config written by "enricher demo". Every subcommand takes it with
# --config or the ENRICHER_CONFIG environment variable. Relative paths are
# relative to this file's folder.
catalog:
  name: demo
  type: sql              # iceberg-go's SQL catalog on a sqlite file
  uri: catalog.db
  warehouse: warehouse   # table data and metadata files
jobs:
  - jobs/sentiment.yaml
pipeline:
  batch_rows: 8192       # rows per Arrow batch read from the source
  chunk_rows: 0          # source rows per target commit; 0 = 250000, or 5000 when a job asks a chat model
  workers: 0             # enrich goroutines; 0 = one per CPU
`

// demoCmd is `enricher demo`: the whole flow on an embedded warehouse.
type demoCmd struct {
	cmdBase

	workdir  string
	posts    string
	rounds   int
	generate int64
	seed     uint64
	samples  int
	model    modelFlags
}

func newDemoCmd(g *globals) *cobra.Command {
	d := &demoCmd{cmdBase: cmdBase{g: g, level: slog.LevelWarn}}
	cmd := &cobra.Command{
		Use:   "demo [--workdir DIR] [--posts FILE] [--rounds N]",
		Short: "Run the whole flow on an embedded warehouse: no network, no accounts",
		Long: `demo runs the complete flow locally and shows what it wrote:

  1. creates DIR with a SQL Iceberg catalog on a sqlite file, a warehouse folder,
     the sentiment job spec (jobs/sentiment.yaml) and DIR/enricher.yaml, the
     runtime config every other subcommand takes with --config;
  2. creates the source table social.posts and appends the posts in N append
     snapshots, publishing one snapshot event per append to an in-memory queue,
     and then publishes the first event again, as an at-least-once queue may;
  3. consumes the events: plan (from the target's watermark), read (incremental
     append scan, streamed as Arrow batches), enrich (the offline VADER lexicon
     model), write (append to social.posts_sentiment with the new watermark in
     the same commit), acknowledge;
  4. prints rows read and written per status, time and rows/s, sample rows, and
     the next commands to try.

Without --posts it generates --generate varied sample posts. With --posts FILE
each line of FILE is one post whose post_id is its line number (from 1).

DIR is created if missing and reset if it holds an earlier demo; demo refuses
to touch a non-empty folder that it did not create.`,
		Example: `  enricher demo
  enricher demo --posts ../shared/data/tweeteval-sentiment/val_text.txt --rounds 4
  enricher demo --generate 1000000 --workdir /tmp/big-demo`,
		Args: cobra.NoArgs,
		RunE: runE(d),
	}
	fl := cmd.Flags()
	fl.StringVar(&d.workdir, "workdir", defaultDemoDir, "folder for the embedded catalog, warehouse and config")
	fl.StringVar(&d.posts, "posts", "", "text file with one post per line (default: generated posts)")
	fl.IntVar(&d.rounds, "rounds", 2, "number of append snapshots (and events) to split the posts into")
	fl.Int64Var(&d.generate, "generate", 1000, "how many sample posts to generate when --posts is not given")
	fl.Uint64Var(&d.seed, "seed", 1, "seed of the generated posts")
	fl.IntVar(&d.samples, "samples", 6, "sample rows to show")
	d.model.register(fl)
	return cmd
}

func (d *demoCmd) Validate() error {
	if d.rounds < 1 {
		return fmt.Errorf("%w: --rounds must be at least 1, got %d", errUsage, d.rounds)
	}
	if err := d.model.validate(); err != nil {
		return err
	}
	if d.posts == "" && (d.generate < 1 || d.generate > maxGenerate) {
		return fmt.Errorf("%w: --generate must be from 1 to %d, got %d", errUsage, int64(maxGenerate), d.generate)
	}
	return nil
}

// maxGenerate bounds demo --generate: a billion posts is hours of
// ingestion, and more would overflow the split into rounds.
const maxGenerate = 1_000_000_000

// Run sets up the workdir, ingests the posts, consumes the events and
// prints what it wrote.
func (d *demoCmd) Run(ctx context.Context) error {
	total := d.generate
	if d.posts != "" {
		var err error
		if total, err = postdata.CountLines(d.posts); err != nil {
			return err
		}
	}
	if total == 0 {
		return fmt.Errorf("%s holds no posts", d.posts)
	}
	unlock, err := lockDemoDir(d.workdir)
	if err != nil {
		return err
	}
	defer unlock()
	cfgPath, err := prepareDemoDir(d.workdir)
	if err != nil {
		return err
	}
	env, err := openWith(ctx, cfgPath, true, true, &d.model, d.log)
	if err != nil {
		return err
	}
	defer env.Close()
	job := env.jobs[0]
	out := d.g.stdout
	fmt.Fprintf(out, "enricher demo: embedded warehouse in %s (sqlite catalog, local files, %s model)\n\n", d.workdir, job.Model.Name())

	texts := map[int64]string{} // texts of the first posts, for the sample rows
	queue, err := d.ingest(ctx, env.cat, job.Spec, total, texts)
	if err != nil {
		return err
	}
	tally, err := d.consume(ctx, env, queue)
	if err != nil {
		return err
	}
	if len(tally.failed) > 0 {
		if u, ok := usageOf(job.Model); ok {
			fmt.Fprintf(out, "\nmodel usage: %s\n", u)
		}
		return fmt.Errorf("%d event(s) failed; first: %w", len(tally.failed), tally.failed[0].Err)
	}

	tgt, err := env.cat.LoadTable(ctx, job.Spec.Target.Table)
	if err != nil {
		return err
	}
	rc, err := pipeline.CountRows(ctx, tgt)
	if err != nil {
		return err
	}
	tally.skipReasons = rc.SkippedBy
	printDemoSummary(out, tally, tgt, job)
	if d.samples > 0 {
		if err := printSamples(ctx, out, tgt, job.Spec, texts, d.samples); err != nil {
			return err
		}
	}
	printDemoNext(out, cfgPath, job.Spec, total)
	return nil
}

// ingest creates the source table and appends total posts to it in
// --rounds append snapshots, publishing one event per snapshot to the
// queue it returns, and then the first event again. It keeps the texts of
// the first posts in texts.
func (d *demoCmd) ingest(ctx context.Context, cat *storage.Catalog, spec *enrich.Spec, total int64, texts map[int64]string) (*consumer.MemQueue, error) {
	src, err := cat.CreateIcebergTable(ctx, spec.Source.Table, postdata.Schema(), storage.SourceProperties())
	if err != nil {
		return nil, err
	}
	out := d.g.stdout
	queue := consumer.NewMemQueue()
	// A message failing for a reason that does not go away (a wrong key,
	// a server that is down) gives up after three tries, as a queue's
	// redrive policy would, instead of coming back for ever.
	queue.MaxReceives = 3
	const keepTexts = 5000
	var firstEvent []byte
	per := (total + int64(d.rounds) - 1) / int64(d.rounds)
	for r := range int64(d.rounds) {
		from, to := r*per, min((r+1)*per, total)
		if from >= to {
			break
		}
		var posts iter.Seq2[postdata.Post, error]
		if d.posts != "" {
			posts = postdata.File(d.posts, 1, from, to)
		} else {
			posts = postdata.Sample(to-from, from+1, d.seed+uint64(r))
		}
		posts = remember(posts, texts, keepTexts)
		var n int64
		src, n, err = postdata.Append(ctx, src, posts)
		if err != nil {
			return nil, err
		}
		snap := src.CurrentSnapshot().SnapshotID
		ev := consumer.SnapshotEvent{Table: spec.Source.Table, SnapshotID: snap}
		now := time.Now().UTC()
		ev.PublishedAt = &now
		body := ev.Encode()
		if firstEvent == nil {
			firstEvent = body
		}
		queue.Publish(body)
		fmt.Fprintf(out, "ingest   round %d: %d posts -> %s snapshot %d, event published\n", r+1, n, spec.Source.Table, snap)
	}
	queue.Publish(firstEvent)
	fmt.Fprintf(out, "ingest   the first event is published again, as an at-least-once queue may deliver it\n\n")
	queue.Close()
	return queue, nil
}

// demoTally is what the demo's consume phase did.
type demoTally struct {
	counts        enrich.Counts
	read, written int64
	failed        []consumer.MessageOutcome
	elapsed       time.Duration
	skipReasons   []pipeline.ReasonCount // why the target's skipped rows were skipped
}

// demoRetryBackoff is the demo consumer's retry backoff: short, since the
// demo's queue lives in its process.
const demoRetryBackoff = time.Second

// consume runs a consumer on the queue until it is drained, printing
// each message's outcome.
func (d *demoCmd) consume(ctx context.Context, env *runtimeEnv, queue *consumer.MemQueue) (*demoTally, error) {
	proc, err := env.processor(d.log, nil)
	if err != nil {
		return nil, err
	}
	t := &demoTally{counts: enrich.Counts{}}
	// A passing failure (a model server that hiccups) comes back after
	// demoRetryBackoff, doubled per receive, as with run's --retry-backoff:
	// three tries span a few seconds rather than three at once.
	c := &consumer.Consumer{Source: queue, Handler: proc, Logger: d.log, Grace: env.cfg.grace(), RetryBackoff: demoRetryBackoff,
		OnOutcome: func(o consumer.MessageOutcome) {
			printOutcome(d.g.stdout, o)
			for _, r := range resultsOf(o) {
				t.counts.Add(r.Counts)
				t.read += r.RowsRead
				t.written += r.RowsWritten
			}
			if o.Err != nil {
				t.failed = append(t.failed, o)
			}
		}}
	// Measure the consume phase on its own: drop what ingest left behind
	// and reset the kernel's peak-RSS mark.
	debug.FreeOSMemory()
	resetPeakRSS()
	start := time.Now()
	// A halt (a spent budget, a model that refuses the key) stops the
	// consumer; its message is among the failed ones.
	if err := c.Run(ctx); err != nil && !errors.As(err, new(*consumer.HaltError)) {
		return nil, err
	}
	if bjobs := batchJobs(env.jobs, ""); len(bjobs) > 0 && len(t.failed) == 0 {
		fmt.Fprintf(d.g.stdout, "\nbatches  waiting for the provider to answer, checking every %s\n", pollInterval(bjobs))
		err := collectUntil(ctx, proc, "", bjobs, true, d.g.stdout, func(r pipeline.BatchReport) {
			if r.State == pipeline.BatchCommitted {
				t.counts.Add(r.Counts)
				t.written += r.Counts.Total()
			}
		})
		if err != nil {
			return nil, fmt.Errorf("collect batches: %w", err)
		}
	}
	t.elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("demo interrupted: %w", err)
	}
	return t, nil
}

// printDemoSummary prints the rows read and written, per status (the
// skipped ones per reason, read from the target), the time and memory the
// consume phase took, and the model's usage.
func printDemoSummary(out io.Writer, t *demoTally, tgt *table.Table, job pipeline.Job) {
	spec := job.Spec
	fmt.Fprintf(out, "\nsummary\n")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  rows read\t%d\t(%s)\n", t.read, spec.Source.Table)
	fmt.Fprintf(tw, "  rows enriched\t%d\t(status ok)\n", t.counts[enrich.StatusOK])
	var perStatus []string
	for _, s := range enrich.Statuses {
		perStatus = append(perStatus, fmt.Sprintf("%s %d", s, t.counts[s]))
	}
	fmt.Fprintf(tw, "  rows written\t%d\t(%s)\n", t.written, strings.Join(perStatus, ", "))
	const maxReasons = 8
	for i, r := range t.skipReasons {
		if i == maxReasons {
			var rest int64
			for _, r := range t.skipReasons[i:] {
				rest += r.Rows
			}
			fmt.Fprintf(tw, "    skipped\t%d\t(%d other reasons)\n", rest, len(t.skipReasons)-i)
			break
		}
		fmt.Fprintf(tw, "    skipped\t%d\t(%s)\n", r.Rows, r.Reason)
	}
	if snap := tgt.CurrentSnapshot(); snap != nil && snap.Summary != nil {
		fmt.Fprintf(tw, "  target rows\t%s\t(%s, one per source row)\n", snap.Summary.Properties["total-records"], spec.Target.Table)
	}
	rate := float64(t.read) / t.elapsed.Seconds()
	fmt.Fprintf(tw, "  time\t%s\t(%.0f rows/s)\n", t.elapsed.Round(time.Millisecond), rate)
	if peak, ok := peakRSS(); ok {
		fmt.Fprintf(tw, "  peak memory\t%d MiB\t(resident set while consuming)\n", peak>>20)
	}
	if u, ok := usageOf(job.Model); ok {
		printUsage(tw, u)
	}
	tw.Flush()
}

// printDemoNext prints the commands to try next.
func printDemoNext(out io.Writer, cfgPath string, spec *enrich.Spec, total int64) {
	self := selfCommand()
	fmt.Fprintf(out, "\nnext\n")
	fmt.Fprintf(out, "  %s export --config %s --table %s --limit 5\n", self, cfgPath, spec.Target.Table)
	fmt.Fprintf(out, "  %s export --config %s --table %s --format csv > sentiment.csv\n", self, cfgPath, spec.Target.Table)
	fmt.Fprintf(out, "  %s ingest --config %s --table %s --posts FILE --first-id %d\n", self, cfgPath, spec.Source.Table, total+1)
	fmt.Fprintf(out, "  %s demo --posts ../shared/data/tweeteval-sentiment/val_text.txt --rounds 4\n", self)
}

// prepareDemoDir creates (or resets) the demo folder and writes its config
// and job spec. It returns the config's path.
func prepareDemoDir(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return "", fmt.Errorf("demo workdir: %w", err)
	case slices.ContainsFunc(entries, func(e os.DirEntry) bool { return e.Name() != demoLockFile }):
		if _, err := os.Stat(filepath.Join(dir, demoMarker)); err != nil {
			return "", fmt.Errorf("demo workdir %s is not empty and was not made by demo: choose another --workdir", dir)
		}
		for _, name := range []string{"catalog.db", "catalog.db-wal", "catalog.db-shm", "warehouse", "jobs", "enricher.yaml"} {
			if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
				return "", fmt.Errorf("reset demo workdir: %w", err)
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "jobs"), 0o755); err != nil {
		return "", fmt.Errorf("demo workdir: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "warehouse"), 0o755); err != nil {
		return "", fmt.Errorf("demo workdir: %w", err)
	}
	spec, err := jobs.Files.ReadFile("sentiment.yaml")
	if err != nil {
		return "", fmt.Errorf("embedded job spec: %w", err)
	}
	files := map[string][]byte{
		demoMarker:                              []byte("This folder was made by `enricher demo`, which resets it on its next run.\n"),
		filepath.Join("jobs", "sentiment.yaml"): spec,
		"enricher.yaml":                         []byte(demoConfig),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return "", fmt.Errorf("demo workdir: %w", err)
		}
	}
	return filepath.Join(dir, "enricher.yaml"), nil
}

// remember records the texts of posts with id <= keep as they pass.
func remember(posts iter.Seq2[postdata.Post, error], texts map[int64]string, keep int64) iter.Seq2[postdata.Post, error] {
	return func(yield func(postdata.Post, error) bool) {
		for p, err := range posts {
			if err == nil && p.ID <= keep {
				texts[p.ID] = p.Text
			}
			if !yield(p, err) {
				return
			}
		}
	}
}

// resultsOf returns the job results of a settled snapshot event.
func resultsOf(o consumer.MessageOutcome) []pipeline.Result {
	if r, ok := o.Report.(*pipeline.Report); ok {
		return r.Results
	}
	return nil
}

func printOutcome(w io.Writer, o consumer.MessageOutcome) {
	results := resultsOf(o)
	if o.Err != nil && len(results) == 0 {
		fmt.Fprintf(w, "consume  message %s: %s: %v\n", o.Message.ID, o.Action, o.Err)
		return
	}
	for _, r := range results {
		switch {
		case r.PendingBatches > 0 && (r.Outcome == pipeline.OutcomeStale || r.Outcome == pipeline.OutcomeUpToDate):
			fmt.Fprintf(w, "consume  snapshot %d: redelivered event, its rows are in a batch already (%d pending, reaching %s): nothing sent\n", r.SnapshotID, r.PendingBatches, r.To)
		case r.Outcome == pipeline.OutcomeStale:
			fmt.Fprintf(w, "consume  snapshot %d: redelivered event, the watermark (%s) is already past it: nothing written\n", r.SnapshotID, r.To)
		case r.Outcome == pipeline.OutcomeUpToDate:
			fmt.Fprintf(w, "consume  snapshot %d: the watermark is already there: nothing written\n", r.SnapshotID)
		case r.Outcome == pipeline.OutcomeBatched:
			fmt.Fprintf(w, "consume  snapshot %d: %d rows sent to the Batch API in %d batch(es), recorded in %d commit(s) (%s .. %s); collected when the provider answers\n",
				r.SnapshotID, r.BatchRows, r.Batches, r.Commits, r.From, r.To)
		case r.Outcome == pipeline.OutcomeFailed:
			fmt.Fprintf(w, "consume  snapshot %d: job %s failed after %d rows in %d commit(s) (the event's other jobs went on)\n",
				r.SnapshotID, r.Job, r.RowsWritten, r.Commits)
		default:
			skipped := ""
			if len(r.Skipped) > 0 {
				skipped = fmt.Sprintf(", passed over %d non-append snapshot(s)", len(r.Skipped))
			}
			fmt.Fprintf(w, "consume  snapshot %d: %d rows read, %d written in %d commit(s), watermark %s -> %s%s (%s)\n",
				r.SnapshotID, r.RowsRead, r.RowsWritten, r.Commits, r.From, r.To, skipped, r.Duration.Round(time.Millisecond))
		}
	}
	if o.Err != nil {
		fmt.Fprintf(w, "consume  message %s: %s: %v\n", o.Message.ID, o.Action, o.Err)
	}
}

// printSamples shows a few target rows, a varied pick of labels and
// statuses, with the text they came from.
func printSamples(ctx context.Context, w io.Writer, tgt *table.Table, spec *enrich.Spec, texts map[int64]string, n int) error {
	seen := map[string]int{}
	var picked []map[string]any
	for row, err := range storage.Rows(ctx, tgt, 5000) {
		if err != nil {
			return err
		}
		kind := fmt.Sprint(row[enrich.ColStatus], "/", row[spec.Outputs[0].Name])
		if seen[kind] >= max(1, n/4) {
			continue
		}
		seen[kind]++
		picked = append(picked, row)
		if len(picked) == n {
			break
		}
	}
	fmt.Fprintf(w, "\nsample rows of %s\n", spec.Target.Table)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := []string{spec.Source.Key}
	for _, f := range spec.Outputs {
		header = append(header, f.Name)
	}
	header = append(header, enrich.ColStatus, spec.Source.Text)
	fmt.Fprintf(tw, "  %s\n", strings.Join(header, "\t"))
	for _, row := range picked {
		cells := []string{fmt.Sprint(row[spec.Source.Key])}
		for _, f := range spec.Outputs {
			cells = append(cells, cell(row[f.Name]))
		}
		text := ""
		if id, ok := row[spec.Source.Key].(int64); ok {
			text = texts[id]
		}
		cells = append(cells, cell(row[enrich.ColStatus]), strconv.Quote(clip(text, 60)))
		fmt.Fprintf(tw, "  %s\n", strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func cell(v any) string {
	switch v := v.(type) {
	case nil:
		return "-"
	case float64:
		return strconv.FormatFloat(v, 'f', 3, 64)
	default:
		return fmt.Sprint(v)
	}
}

// peakRSS is the process's peak resident set size, from /proc (Linux).
func peakRSS() (int64, bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, false
			}
			return kb << 10, true
		}
	}
	return 0, false
}

// resetPeakRSS resets the kernel's peak resident set mark of this process
// (Linux); where it cannot, peakRSS reports the whole process's peak.
func resetPeakRSS() {
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// selfCommand is how the user ran this binary, for the "next" hints.
func selfCommand() string {
	exe := os.Args[0]
	if strings.Contains(exe, "go-build") {
		return "go run ./cmd/enricher"
	}
	return exe
}

// clip shortens s to n characters for display.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
