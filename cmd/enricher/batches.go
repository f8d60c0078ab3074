package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

func newBatchesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "batches",
		Short: "List and collect the Batch API batches of jobs with model.batch_api",
		Long: `A job whose spec sets model.batch_api (true, or auto for big ranges) sends
its rows to the provider's Batch API instead of one chat request at a time:
half the price and a separate, much larger quota, with answers within 24 hours.

An event's rows are cut into batches of model.batch.max_rows rows; each is
uploaded, recorded in the target's pending list (table property
enricher.batches.JOB, in a commit that moves no watermark) and created, and
the event's message is let go: nothing holds a message for hours. When a batch
has ended, collecting it writes its rows with their answers and moves the
watermark past them in one commit. Rows a batch did not answer (failed lines,
rows missing or invalid in an answer, an expired batch) are asked again
(model.batch.retry: synchronously when at most model.batch.sync_max_rows, else
as a new batch, model.batch.attempts in all) and are finally written with
their status and reason, as on the synchronous path.

run collects on its own every model.batch.poll. Deployments without a
daemon (Lambda) run "enricher batches collect" on a schedule (cron,
EventBridge).`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newBatchesListCmd(g), newBatchesCollectCmd(g))
	return cmd
}

// batchesListCmd is `enricher batches list`.
type batchesListCmd struct {
	cmdBase
	job string
}

func newBatchesListCmd(g *globals) *cobra.Command {
	l := &batchesListCmd{cmdBase: cmdBase{g: g}}
	cmd := &cobra.Command{
		Use:   "list [--job J]",
		Short: "List the pending batches of the jobs' targets (no model is asked)",
		Long: `list reads the pending batch list of each job from its target table: the
source range of each batch, its rows, its attempts with the provider's batch
IDs, and its age. It asks no model: "batches collect" says what the provider
reports of them.`,
		Example: `  enricher batches list --config enricher.yaml
  enricher batches list --config enricher.yaml --job sentiment`,
		Args: cobra.NoArgs,
		RunE: runE(l),
	}
	cmd.Flags().StringVar(&l.job, "job", "", "only this job (default: every job of the config)")
	return cmd
}

func (l *batchesListCmd) Validate() error { return nil }

func (l *batchesListCmd) Run(ctx context.Context) error {
	_, cat, targets, err := l.g.openTargets(ctx, l.job)
	if err != nil {
		return err
	}
	defer cat.Close()
	tw := tabwriter.NewWriter(l.g.stdout, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "JOB\tRANGE\tROWS\tTEXTS\tATTEMPT\tBATCH\tSTATE\tAGE")
	n := 0
	for _, t := range targets {
		tgt, err := cat.LoadTable(ctx, t.table)
		if errors.Is(err, storage.ErrTableNotFound) {
			continue // nothing written yet, nothing pending
		}
		if err != nil {
			return err
		}
		list, err := storage.PendingBatches(tgt, t.job)
		if err != nil {
			return err
		}
		for _, pb := range list {
			n++
			st := pipeline.PendingStatus(pb)
			batch := st.Batch
			if batch == "" && !pb.Empty() {
				batch = "file " + pb.Last().InputFile
			}
			fmt.Fprintf(tw, "%s\t%s .. %s\t%d\t%d\t%d\t%s\t%s\t%s\n", t.job, pb.From, pb.To, pb.Rows, pb.Texts, st.Attempts, orDash(batch), st.State, time.Since(pb.Created).Round(time.Second))
		}
	}
	if n == 0 {
		fmt.Fprintln(tw, "(no pending batches)")
	}
	return nil
}

// batchesCollectCmd is `enricher batches collect`.
type batchesCollectCmd struct {
	cmdBase
	job   string
	wait  bool
	model modelFlags
}

func newBatchesCollectCmd(g *globals) *cobra.Command {
	c := &batchesCollectCmd{cmdBase: cmdBase{g: g}}
	cmd := &cobra.Command{
		Use:   "collect [--job J] [--wait]",
		Short: "Write the rows of the batches that have ended (once, or --wait until none is pending)",
		Long: `collect asks the provider about each job's pending batches, oldest first, and
brings in each one that has ended: its rows with their answers, in one commit
that moves the job's watermark past them. A job's batches are collected in
order: the first one still running stops that job's collection. Rows a batch
did not answer are asked again (see "enricher batches --help").

Run it on a schedule where no "run" daemon collects (Lambda deployments), or
with --wait to see a backfill through: it then checks every model.batch.poll
(or --batch-poll) until no batch is pending. Running it twice at once is safe:
a batch's rows are committed once, the other run's commit loses and re-reads.`,
		Example: `  enricher batches collect --config enricher.yaml
  enricher batches collect --config enricher.yaml --job sentiment --wait --batch-poll 30s`,
		Args: cobra.NoArgs,
		RunE: runE(c),
	}
	f := cmd.Flags()
	f.StringVar(&c.job, "job", "", "only this job (default: every job of the config with batch_api)")
	f.BoolVar(&c.wait, "wait", false, "check again every poll interval until no batch is pending")
	c.model.register(f)
	return cmd
}

func (c *batchesCollectCmd) Validate() error {
	return nil
}

func (c *batchesCollectCmd) Run(ctx context.Context) error {
	c.g.model = &c.model
	env, err := c.g.open(ctx, true)
	if err != nil {
		return err
	}
	defer env.Close()
	if c.job != "" {
		if _, err := pickJob(env.jobs, c.job); err != nil {
			return err
		}
	}
	proc, err := env.processor(c.log, nil)
	if err != nil {
		return err
	}
	jobs := batchJobs(env.jobs, c.job)
	if len(jobs) == 0 {
		return fmt.Errorf("%w: no job has model.batch_api (set it in the job spec, or pass --batch-api)", errUsage)
	}
	out := c.g.stdout
	defer func() {
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		for _, j := range jobs {
			if u, ok := usageOf(j.Model); ok {
				fmt.Fprintf(tw, "job %s\n", j.Spec.Name)
				printUsage(tw, u)
			}
		}
		tw.Flush()
	}()
	return collectUntil(ctx, proc, c.job, jobs, c.wait, out, nil)
}

// batchJobs are the jobs (of name, or all) that use the Batch API.
func batchJobs(jobs []pipeline.Job, name string) []pipeline.Job {
	var out []pipeline.Job
	for _, j := range jobs {
		if (name == "" || j.Spec.Name == name) && j.Spec.Model.BatchAPI != enrich.BatchOff {
			out = append(out, j)
		}
	}
	return out
}

// pollInterval is the shortest batch poll of jobs.
func pollInterval(jobs []pipeline.Job) time.Duration {
	d := time.Duration(0)
	for _, j := range jobs {
		if p := j.Spec.Model.Batch.PollInterval(); p > 0 && (d == 0 || p < d) {
			d = p
		}
	}
	if d == 0 {
		d = time.Minute
	}
	return d
}

// collectUntil collects the batches of jobs once or, with wait, every poll
// interval until none is pending, printing each batch it looked at (and
// giving it to onReport, when set).
func collectUntil(ctx context.Context, proc *pipeline.Processor, job string, jobs []pipeline.Job, wait bool, out io.Writer, onReport func(pipeline.BatchReport)) error {
	every := pollInterval(jobs)
	for {
		reps, err := proc.Collect(ctx, job)
		printBatchReports(out, reps)
		if onReport != nil {
			for _, r := range reps {
				onReport(r)
			}
		}
		if err != nil {
			return err
		}
		waiting := 0
		for _, r := range reps {
			if r.State != pipeline.BatchCommitted {
				waiting++
			}
		}
		if !wait || waiting == 0 {
			if len(reps) == 0 {
				fmt.Fprintln(out, "no pending batches")
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// printBatchReports writes one line per batch looked at.
func printBatchReports(w io.Writer, reps []pipeline.BatchReport) {
	for _, r := range reps {
		line := fmt.Sprintf("batch %s of job %s (%s .. %s, %d rows, attempt %d, %s old): %s", orDash(r.Batch), r.Job, r.From, r.To, r.Rows, r.Attempt, r.Age.Round(time.Second), r.State)
		switch r.State {
		case pipeline.BatchWaiting:
			line += fmt.Sprintf(", provider says %s (%d of %d requests done)", r.Status, r.Done, r.Total)
		case pipeline.BatchCommitted:
			line += ": " + formatCounts(r.Counts)
			if r.Retried > 0 {
				line += fmt.Sprintf(" (%d rows asked again synchronously)", r.Retried)
			}
		case pipeline.BatchRetried:
			line += fmt.Sprintf(": %d rows unanswered sent as a new batch", r.Retried)
		}
		fmt.Fprintln(w, line)
	}
}

// startCollector collects the batches of jobs every poll interval until
// ctx ends or the returned stop is called (which waits for it). Failures
// are logged: the next round tries again; a model that cannot be used
// (a wrong key) is logged as an error each round.
func startCollector(ctx context.Context, proc *pipeline.Processor, jobs []pipeline.Job, log *slog.Logger, onReport func(pipeline.BatchReport)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	every := pollInterval(jobs)
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			reps, err := proc.Collect(ctx, "")
			for _, r := range reps {
				logBatchReport(log, r)
				if onReport != nil {
					onReport(r)
				}
			}
			if err != nil && ctx.Err() == nil {
				lvl := slog.LevelWarn
				if errors.Is(err, enrich.ErrModelUnusable) {
					lvl = slog.LevelError
				}
				log.Log(ctx, lvl, "collecting batches failed; trying again next round", collectFailure(err, "every", every)...)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	log.Info("batch collector started", "jobs", len(jobs), "every", every)
	return func() {
		cancel()
		<-done
	}
}

func logBatchReport(log *slog.Logger, r pipeline.BatchReport) {
	attrs := []any{"job", r.Job, "batch", r.Batch, "state", r.State, "rows", r.Rows, "attempt", r.Attempt,
		"age", r.Age.Round(time.Second).String(), "from", r.From.String(), "to", r.To.String()}
	switch r.State {
	case pipeline.BatchWaiting:
		attrs = append(attrs, "provider_status", r.Status, "requests_done", r.Done, "requests", r.Total)
	case pipeline.BatchCommitted:
		attrs = append(attrs, "counts", formatCounts(r.Counts), "retried", r.Retried)
	case pipeline.BatchRetried:
		attrs = append(attrs, "retried", r.Retried)
	}
	log.Info("batch", attrs...)
}

// collectFailure are the attributes of a log line saying that collecting
// batches failed with err: budget_exhausted when the token budget stopped
// it, which the run service's BudgetExhausted metric filter counts.
func collectFailure(err error, attrs ...any) []any {
	attrs = append(attrs, "err", err)
	if errors.Is(err, enrich.ErrBudgetExhausted) {
		attrs = append(attrs, "budget_exhausted", true)
	}
	return attrs
}
