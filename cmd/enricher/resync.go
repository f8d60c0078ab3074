package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

// resyncCmd is `enricher resync`: a job caught up by key.
type resyncCmd struct {
	cmdBase

	job          string
	memory       byteSize
	tempDir      string
	skipNullKeys bool
	dryRun       bool
	model        modelFlags
}

func newResyncCmd(g *globals) *cobra.Command {
	r := &resyncCmd{cmdBase: cmdBase{g: g}}
	cmd := &cobra.Command{
		Use:   "resync --job J [--dry-run]",
		Short: "Catch a job up by key when events cannot: expired source history, rows added by overwrites",
		Long: `resync brings a job up to its source table's current snapshot by key, exactly
once, when incremental reads cannot:

  - the source's history no longer reaches the job's watermark (ingestion
    expired the snapshots after it: S3 Tables does after 5 days, so a consumer
    paused for a week meets it; events are then dead-lettered with reason
    source_history_expired and status says so);
  - overwrite or delete snapshots upstream (a MERGE) added rows, which events
    pass over (the log and the summary count them).

It reads the source's current rows, keeps those whose key (the job's
source.key) has no row in the target, enriches exactly those and appends them,
then moves the job's watermark to that source snapshot. The anti-join holds at
most --memory bytes of keys and spills the rest to files in --temp-dir, so the
key sets of tables of any size fit.

The rows go in commits of about pipeline.chunk_rows; until the last one, a
marker on the target (table property enricher.resync.JOB) makes consumers leave
the job alone: events the resync covers are acknowledged as no-ops, newer ones
come back a minute later, instead of writing rows twice. An interrupted resync leaves the marker: run it again, it writes only
what is still missing. Afterwards, events the consumer dead-lettered as
source_history_expired can be redriven (they are no-ops) or dropped.

Source rows whose key is null can match no target row: resync refuses them
(at the first one, naming it) unless --skip-null-keys passes over them and
counts them. Rows that resync
writes carry the source snapshot they were read from as _source_snapshot_id.
Model flags override the job spec's model, as for run and replay.`,
		Example: `  enricher resync --config enricher.yaml --job sentiment --dry-run
  enricher resync --config enricher.yaml --job sentiment --memory 256MiB`,
		Args: cobra.NoArgs,
		RunE: runE(r),
	}
	f := cmd.Flags()
	f.StringVar(&r.job, "job", "", "job to resync (default: the config's only job)")
	f.Var(&r.memory, "memory", "memory for the anti-join's keys before it spills to files, e.g. 256MiB or 1GB (default 64MiB)")
	f.StringVar(&r.tempDir, "temp-dir", "", "folder for the anti-join's spill files (default: the system's temp folder)")
	f.BoolVar(&r.skipNullKeys, "skip-null-keys", false, "pass over (and count) source rows whose key is null instead of refusing them")
	f.BoolVar(&r.dryRun, "dry-run", false, "find and count the missing rows, write nothing")
	r.model.register(f)
	return cmd
}

// Validate checks the flags and builds the logger.
func (r *resyncCmd) Validate() error {
	if r.tempDir != "" {
		// Checked now, not only once the anti-join spills, hours in.
		if st, err := os.Stat(r.tempDir); err != nil {
			return fmt.Errorf("%w: --temp-dir: %w", errUsage, err)
		} else if !st.IsDir() {
			return fmt.Errorf("%w: --temp-dir %s is not a folder", errUsage, r.tempDir)
		}
	}
	if r.memory > 0 && r.memory < 4096 {
		return fmt.Errorf("%w: --memory %d: want at least 4096 bytes", errUsage, int64(r.memory))
	}
	return nil
}

// Run resyncs the job and prints what it did.
func (r *resyncCmd) Run(ctx context.Context) error {
	env, j, err := r.g.openJob(ctx, &r.model, r.job)
	if err != nil {
		return err
	}
	defer env.Close()
	proc, err := env.processor(r.log, nil)
	if err != nil {
		return err
	}
	out := r.g.stdout
	fmt.Fprintf(out, "resync job %s (%s): %s -> %s\n", j.Spec.Name, j.Model.Name(), j.Spec.Source.Table, j.Spec.Target.Table)
	res, err := proc.Resync(ctx, pipeline.ResyncRequest{
		Job: j.Spec.Name, MemoryBytes: int64(r.memory), TempDir: r.tempDir, SkipNullKeys: r.skipNullKeys, DryRun: r.dryRun,
		Progress: func(p pipeline.ResyncProgress) {
			if p.Phase == "commit" {
				fmt.Fprintf(out, "  commit %d: %d rows written so far\n", p.Commits, p.RowsWritten)
			}
		},
	})
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	if u, ok := usageOf(j.Model); ok {
		defer printUsage(tw, u)
	}
	st := res.Stats
	if st.SourceSnapshotID != 0 {
		// The anti-join ran: what it found, also before an error.
		fmt.Fprintf(tw, "source snapshot\t%d\t(%d rows read, %d with a null key%s)\n", st.SourceSnapshotID, st.SourceRows, st.NullKeys, skippedNote(r.skipNullKeys, st.NullKeys))
		fmt.Fprintf(tw, "target keys\t%d\n", st.TargetKeys)
		fmt.Fprintf(tw, "missing rows\t%d\t(anti-join in %d partition(s), %d bytes spilled)\n", st.MissingRows, st.Partitions, st.SpillBytes)
	}
	if err != nil {
		if errors.Is(err, storage.ErrNullKey) && !r.skipNullKeys {
			return fmt.Errorf("%w (--skip-null-keys passes over such rows and counts them)", err)
		}
		if errors.Is(err, enrich.ErrBudgetExhausted) {
			return fmt.Errorf("stopped after %d commit(s): %w; run resync again to go on", res.Commits, err)
		}
		return err
	}
	if r.dryRun {
		fmt.Fprintln(tw, "dry run\tnothing written")
		return nil
	}
	fmt.Fprintf(tw, "rows written\t%d\t(%s) in %d commit(s), %d conflict(s) retried\n", res.RowsWritten, formatCounts(res.Counts), res.Commits, res.Conflicts)
	fmt.Fprintf(tw, "watermark\t%s -> %d\n", res.From, res.SourceSnapshotID)
	fmt.Fprintf(tw, "took\t%s\n", res.Duration.Round(1e6))
	return nil
}

func skippedNote(skip bool, n int64) string {
	if skip && n > 0 {
		return ", passed over"
	}
	return ""
}
