package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

// replayCmd is `enricher replay`: a range of source snapshots enriched
// again.
type replayCmd struct {
	cmdBase

	job        string
	from, to   int64
	onlyStatus []string
	model      modelFlags

	// Derived by Validate.
	statuses []enrich.Status
}

func newReplayCmd(g *globals) *cobra.Command {
	r := &replayCmd{cmdBase: cmdBase{g: g}}
	cmd := &cobra.Command{
		Use:   "replay --job J [--from-snapshot A] [--to-snapshot B] [--only-status S,...]",
		Short: "Enrich a range of source snapshots again, replacing their target rows",
		Long: `replay enriches again the rows that the source snapshots from A to B (both
included) appended, for a new prompt, model or spec version, and replaces their
rows in the job's target table. With --only-status it takes only the rows whose
target row has one of those statuses, so that rows written as failed or
invalid_output are never a dead end.

Each commit is one Iceberg overwrite covering whole source snapshots (about
pipeline.chunk_rows rows): the old rows of those snapshots (and keys) are
deleted and the new ones appended in the same snapshot, so the target holds one
row per source row and job at every moment. The job's watermark is carried
forward unchanged; a consumer committing at the same time makes the replay
commit again, not both. An interrupted replay can simply be run again.

The range must already be enriched by the job: B defaults to the job's
watermark and A to the oldest snapshot in B's history. Model flags override the
job spec's model, as for demo and run.

With --batch-api (or model.batch_api in the job spec; auto when the range has
at least model.batch.min_rows rows) the rows go through the provider's Batch
API at half the price: one batch per commit, each recorded on the target
before it is created; the replay then waits (checking every --batch-poll) and
replaces each commit's rows when its batch has ended. Interrupted (Ctrl-C, a
crash) and run again with the same arguments, it waits for the same batches
instead of paying for them twice.`,
		Example: `  enricher replay --config enricher.yaml --job sentiment --only-status failed,invalid_output
  enricher replay --config enricher.yaml --job sentiment --from-snapshot 123 --to-snapshot 456 \
      --provider azure --base-url https://NAME.openai.azure.com --deployment gpt-4o-mini
  enricher replay --config enricher.yaml --job sentiment --batch-api --batch-poll 5m`,
		Args: cobra.NoArgs,
		RunE: runE(r),
	}
	f := cmd.Flags()
	f.StringVar(&r.job, "job", "", "job to replay (default: the config's only job)")
	f.Int64Var(&r.from, "from-snapshot", 0, "first source snapshot of the range (default: the oldest in --to-snapshot's history)")
	f.Int64Var(&r.to, "to-snapshot", 0, "last source snapshot of the range (default: the job's watermark)")
	f.StringSliceVar(&r.onlyStatus, "only-status", nil, "replay only rows whose target row has one of these statuses: "+statusList())
	r.model.register(f)
	return cmd
}

func (r *replayCmd) Validate() error {
	statuses, err := parseStatuses(r.onlyStatus)
	if err != nil {
		return err
	}
	r.statuses = statuses
	return nil
}

// Run replays the range commit by commit, printing each commit and a
// summary.
func (r *replayCmd) Run(ctx context.Context) error {
	env, j, err := r.g.openJob(ctx, &r.model, r.job)
	if err != nil {
		return err
	}
	defer env.Close()
	from, to := r.from, r.to
	if to == 0 || from == 0 {
		if from, to, err = defaultRange(ctx, env, j, from, to); err != nil {
			return err
		}
	}
	proc, err := env.processor(r.log, nil)
	if err != nil {
		return err
	}
	out := r.g.stdout
	fmt.Fprintf(out, "replay job %s (%s) on %s snapshots %d..%d", j.Spec.Name, j.Model.Name(), j.Spec.Source.Table, from, to)
	if len(r.statuses) > 0 {
		fmt.Fprintf(out, ", rows with status %s", strings.Join(r.onlyStatus, ", "))
	}
	fmt.Fprintln(out)
	start := time.Now()
	res, err := proc.Replay(ctx, pipeline.ReplayRequest{
		Job: j.Spec.Name, From: from, To: to, OnlyStatus: r.statuses,
		OnCommit: func(p pipeline.ReplayProgress) {
			fmt.Fprintf(out, "  commit %d/%d: %d rows replaced\n", p.Commit, p.Commits, p.Rows)
		},
		OnBatch: func(b pipeline.BatchReport) {
			switch b.State {
			case pipeline.BatchWaiting:
				fmt.Fprintf(out, "  batch %s: %s, %d of %d requests done (%s old; Ctrl-C and run again to go on waiting)\n", b.Batch, b.Status, b.Done, b.Total, b.Age.Round(time.Second))
			case pipeline.BatchClaimed:
				fmt.Fprintf(out, "  batch of %d texts: being created by another process\n", b.Rows)
			default:
				fmt.Fprintf(out, "  batch %s submitted: %d texts, attempt %d\n", b.Batch, b.Rows, b.Attempt)
			}
		},
	})
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	if u, ok := usageOf(j.Model); ok {
		defer printUsage(tw, u)
	}
	if err != nil {
		if errors.Is(err, enrich.ErrBudgetExhausted) {
			return fmt.Errorf("stopped after %d commit(s): %w; run replay again to go on (with --only-status, only what is left)", res.Commits, err)
		}
		return err
	}
	if res.Commits == 0 {
		fmt.Fprintln(tw, "nothing to replay: no rows in the range match")
		return nil
	}
	printReplaySummary(tw, res, from, to, time.Since(start))
	return nil
}

// printReplaySummary prints what a replay of snapshots from..to did.
func printReplaySummary(w io.Writer, res pipeline.ReplayResult, from, to int64, took time.Duration) {
	fmt.Fprintf(w, "\nsummary\n")
	fmt.Fprintf(w, "  source snapshots\t%d\t(appends in %d..%d)\n", res.Snapshots, from, to)
	fmt.Fprintf(w, "  rows enriched again\t%d\t(%s)\n", res.RowsRead, formatCounts(res.Counts))
	fmt.Fprintf(w, "  target rows replaced\t%d\t(in %d commit(s))\n", res.RowsDeleted, res.Commits)
	fmt.Fprintf(w, "  time\t%s\t\n", took.Round(time.Millisecond))
}

// formatCounts lists rows per status, every status named.
func formatCounts(c enrich.Counts) string {
	per := make([]string, 0, len(enrich.Statuses))
	for _, s := range enrich.Statuses {
		per = append(per, fmt.Sprintf("%s %d", s, c[s]))
	}
	return strings.Join(per, ", ")
}

func statusList() string {
	s := make([]string, len(enrich.Statuses))
	for i, v := range enrich.Statuses {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

func parseStatuses(in []string) ([]enrich.Status, error) {
	var out []enrich.Status
	for _, s := range in {
		s = strings.TrimSpace(s)
		if !slices.Contains(enrich.Statuses, enrich.Status(s)) {
			return nil, fmt.Errorf("%w: --only-status %q: want one of %s", errUsage, s, statusList())
		}
		out = append(out, enrich.Status(s))
	}
	return out, nil
}

func pickJob(jobs []pipeline.Job, name string) (pipeline.Job, error) {
	var names []string
	for _, j := range jobs {
		if j.Spec.Name == name || (name == "" && len(jobs) == 1) {
			return j, nil
		}
		names = append(names, j.Spec.Name)
	}
	if name == "" {
		return pipeline.Job{}, fmt.Errorf("%w: --job is required: the config has jobs %s", errUsage, strings.Join(names, ", "))
	}
	return pipeline.Job{}, fmt.Errorf("%w: --job %q: the config has jobs %s", errUsage, name, strings.Join(names, ", "))
}

// defaultRange fills a missing end of the range: to is the job's
// watermark, from the oldest snapshot in to's history.
func defaultRange(ctx context.Context, env *runtimeEnv, j pipeline.Job, from, to int64) (int64, int64, error) {
	src, err := env.cat.LoadTable(ctx, j.Spec.Source.Table)
	if err != nil {
		return 0, 0, err
	}
	if to == 0 {
		tgt, err := env.cat.LoadTable(ctx, j.Spec.Target.Table)
		if err != nil {
			return 0, 0, fmt.Errorf("job %s has no target yet, nothing to replay: %w", j.Spec.Name, err)
		}
		wm, err := storage.ReadWatermark(tgt, j.Spec.Name, j.Spec.Source.Table)
		if err != nil {
			return 0, 0, err
		}
		if wm.SnapshotID == 0 {
			return 0, 0, fmt.Errorf("job %s has not finished any snapshot of %s yet, nothing to replay", j.Spec.Name, j.Spec.Source.Table)
		}
		to = wm.SnapshotID
	}
	if from == 0 {
		meta := src.Metadata()
		s := meta.SnapshotByID(to)
		if s == nil {
			return 0, 0, fmt.Errorf("%s has no snapshot %d: %w", j.Spec.Source.Table, to, storage.ErrSnapshotNotFound)
		}
		for s.ParentSnapshotID != nil {
			p := meta.SnapshotByID(*s.ParentSnapshotID)
			if p == nil {
				break
			}
			s = p
		}
		from = s.SnapshotID
	}
	return from, to, nil
}
