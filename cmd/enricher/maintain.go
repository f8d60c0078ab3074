package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/storage"
)

// maintainCmd is `enricher maintain`: the whole maintenance of the target
// tables (storage.Catalog.Maintain), with a report of before and after.
type maintainCmd struct {
	cmdBase

	job         string
	orphanGrace time.Duration
	noWriters   bool
	skipOrphans bool
	format      string
}

func newMaintainCmd(g *globals) *cobra.Command {
	m := &maintainCmd{cmdBase: cmdBase{g: g}}
	cmd := &cobra.Command{
		Use:   "maintain [--job J] [--orphan-grace DUR] [--no-writers] [--skip-orphans] [--format text|json]",
		Short: "Compact, rewrite manifests, expire snapshots and delete orphan files of the target tables",
		Long: `maintain maintains the target table of every job in the config (or of --job),
one after the other. It first sets the job's target.properties on the table
where they differ (as a consumer does when it opens the target), so that the
retention and file size the spec says now are what the steps follow. Then four
steps, each its own Iceberg commit:

  1. compaction: data files under 75% of the table's
     write.target-file-size-bytes (default 512 MiB) are rewritten, bin-packed,
     into files of that size, at least 5 small files together (a replace
     snapshot: the same rows in fewer files);
  2. manifest rewrite: the current snapshot's manifests are merged into
     target-size ones;
  3. snapshot expiry: the snapshots the table's retention does not keep go
     (history.expire.min-snapshots-to-keep and
     history.expire.max-snapshot-age-ms; unset: the newest 10), with the
     files only they referenced (the small files compaction replaced);
  4. orphan cleanup (unless --skip-orphans): files under the table's location
     that no snapshot or metadata file references and that are older than
     --orphan-grace are deleted.

and then, when every step succeeded, records the time in the table property
enricher.last-maintenance (status shows it). It prints, per target, the
table's data files, data bytes, mean file size, rows, snapshots, metadata
files and bytes and manifests before and after, what each step did, the
conflicts it retried and how long it took; progress goes to the log
(stderr), a line per target and per step.

It is safe to run next to enricher run, the Lambda and other maintainers: no
step moves a watermark or changes a row, a step that loses a commit race to a
consumer is tried again on the reloaded table, and a consumer that loses to
it re-plans as after any conflict. Keep --orphan-grace above the longest a
chunk takes from writing its first file to its commit (minutes), or the files
of a commit in flight could be deleted: below ` + storage.MinOrphanGrace.String() + ` it is refused unless
--no-writers says that every consumer, replay, resync and "batches collect" of
these tables is stopped.

run, the Lambda handler, demo and replay already expire snapshots after their
commits, and run, the Lambda handler and demo run this maintenance on their own
after an event's commits once a target holds 64 data files and was not
maintained for an hour, or holds 256 whenever it was last maintained
(pipeline.maintain_every and pipeline.maintain_min_files; compacting to 32 MiB
files). Schedule maintain where that does not reach: targets whose
consumers are paused or see few events (the automatic run only follows a
commit), compaction to the table's own target file size, and tables nothing
else maintains. In AWS, an EventBridge Scheduler schedule can start it on
Fargate from a task definition whose container runs "enricher maintain
--config /etc/enricher/enricher.yaml", with the consumer's access to the
catalog and the warehouse:

  aws scheduler create-schedule --name enricher-maintain \
    --schedule-expression 'rate(6 hours)' --flexible-time-window Mode=OFF \
    --target '{"Arn": "arn:aws:ecs:eu-west-1:123456789012:cluster/enricher",
      "RoleArn": "arn:aws:iam::123456789012:role/enricher-scheduler",
      "EcsParameters": {"TaskDefinitionArn": "arn:aws:ecs:eu-west-1:123456789012:task-definition/enricher-maintain",
        "LaunchType": "FARGATE", "NetworkConfiguration": {"awsvpcConfiguration":
          {"Subnets": ["subnet-0123456789abcdef0"], "AssignPublicIp": "DISABLED"}}}}'

Tables in S3 Tables, or in Glue with its table optimizers on, can be
maintained by AWS instead (compaction, snapshot expiry, orphan removal), next
to the enricher: it keeps its watermark in a table property
(enricher.watermark.JOB) that their commits carry over.

A job whose target table does not exist (nothing enriched yet), or whose
maintenance fails, is reported and the other targets are maintained; the exit
status is then non-zero.`,
		Example: `  enricher maintain --config enricher.yaml
  enricher maintain --config enricher.yaml --job sentiment --format json
  enricher maintain --config enricher.yaml --skip-orphans          # no listing of the table's folder`,
		Args: cobra.NoArgs,
		RunE: runE(m),
	}
	f := cmd.Flags()
	f.StringVar(&m.job, "job", "", "only the target table of this job")
	f.DurationVar(&m.orphanGrace, "orphan-grace", storage.DefaultOrphanGrace, "delete only orphan files older than this (keep it above the longest commit in flight)")
	f.BoolVar(&m.noWriters, "no-writers", false, "no process writes these tables now: --orphan-grace may be below "+storage.MinOrphanGrace.String())
	f.BoolVar(&m.skipOrphans, "skip-orphans", false, "leave out the orphan cleanup (it lists every file under the table's location)")
	choiceVar(f, &m.format, "format", "output format: text or json (one object per target)", "text", "json")
	return cmd
}

func (m *maintainCmd) Validate() error {
	if m.orphanGrace <= 0 {
		return fmt.Errorf("%w: --orphan-grace %s: must be positive (a younger file may belong to a commit in flight)", errUsage, m.orphanGrace)
	}
	if m.orphanGrace < storage.MinOrphanGrace && !m.noWriters && !m.skipOrphans {
		return errYoungOrphans("--orphan-grace " + m.orphanGrace.String())
	}
	return nil
}

// Run maintains every target and prints a report per target.
func (m *maintainCmd) Run(ctx context.Context) error {
	_, cat, targets, err := m.g.openTargets(ctx, m.job)
	if err != nil {
		return err
	}
	defer cat.Close()

	opts := storage.MaintainOptions{OrphanGrace: m.orphanGrace, NoWriters: m.noWriters, SkipOrphans: m.skipOrphans}
	var failed []string
	for i, t := range targets {
		log := m.log.With("target", t.table, "job", t.job)
		log.Info("maintaining target", "n", i+1, "of", len(targets), "orphan_cleanup", !m.skipOrphans)
		// The job's target.properties first, as a consumer would set them
		// (retention, file size): maintenance then follows what the spec
		// says now.
		if len(t.props) > 0 {
			_, changes, err := cat.ReconcileProperties(ctx, t.table, t.props)
			if err != nil && !errors.Is(err, storage.ErrTableNotFound) {
				// Maintained with the properties it has; the run fails.
				log.Error("could not set the job's target.properties", "err", err)
				failed = append(failed, fmt.Sprintf("%s (job %s: target.properties: %v)", t.table, t.job, err))
			}
			for _, c := range changes {
				log.Info("target property set", "change", c.String())
			}
		}
		rep, err := cat.Maintain(ctx, t.table, opts)
		missing := errors.Is(err, storage.ErrTableNotFound) && rep.Before.Table == ""
		switch {
		case missing:
			log.Warn("no target table: the job has not committed anything yet")
		default:
			m.logSteps(log, rep)
			if err != nil {
				log.Error("maintenance failed", "err", err, "took", rep.Took.Round(time.Millisecond))
			} else {
				log.Info("target maintained", "data_files_before", rep.Before.DataFiles, "data_files_after", rep.After.DataFiles,
					"took", rep.Took.Round(time.Millisecond))
			}
		}
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s (job %s)", t.table, t.job))
		}
		if perr := m.print(t, rep, missing, err); perr != nil {
			return perr
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("maintain: %d of %d targets failed: %s", len(failed), len(targets), strings.Join(failed, ", "))
	}
	return nil
}

// logSteps logs what each step of a maintenance did, one line a step.
// Maintain reports the steps when it returns: the lines come together,
// after the target's "maintaining target" line.
func (m *maintainCmd) logSteps(log *slog.Logger, rep *storage.MaintainReport) {
	log.Info("maintain step", "step", "compaction", "groups", rep.CompactedGroups, "files_replaced", rep.FilesReplaced,
		"files_written", rep.FilesWritten, "bytes_replaced", rep.BytesReplaced, "bytes_written", rep.BytesWritten)
	log.Info("maintain step", "step", "manifest rewrite", "manifests_replaced", rep.ManifestsReplaced, "manifests_written", rep.ManifestsWritten)
	log.Info("maintain step", "step", "snapshot expiry", "snapshots_expired", rep.SnapshotsExpired)
	if m.skipOrphans {
		log.Info("maintain step", "step", "orphan cleanup", "skipped", true)
	} else {
		log.Info("maintain step", "step", "orphan cleanup", "orphan_files", rep.OrphanFiles, "orphan_bytes", rep.OrphanBytes)
	}
}

// maintainJSON is one target's report in --format json.
type maintainJSON struct {
	Job    string `json:"job"`
	Target string `json:"target"`
	OK     bool   `json:"ok"`
	// Missing: the target table does not exist (nothing enriched yet).
	Missing bool   `json:"target_missing,omitempty"`
	Error   string `json:"error,omitempty"`
	// Before and After are the table's health (absent when it could not
	// be measured).
	Before             *pipeline.TargetHealth `json:"before,omitempty"`
	After              *pipeline.TargetHealth `json:"after,omitempty"`
	CompactedGroups    int                    `json:"compacted_groups"`
	FilesReplaced      int                    `json:"files_replaced"`
	FilesWritten       int                    `json:"files_written"`
	BytesReplaced      int64                  `json:"bytes_replaced"`
	BytesWritten       int64                  `json:"bytes_written"`
	ManifestsReplaced  int                    `json:"manifests_replaced"`
	ManifestsWritten   int                    `json:"manifests_written"`
	SnapshotsExpired   int                    `json:"snapshots_expired"`
	WatermarksMigrated []string               `json:"watermarks_migrated,omitempty"`
	OrphansSkipped     bool                   `json:"orphan_cleanup_skipped,omitempty"`
	OrphanGraceMs      int64                  `json:"orphan_grace_ms"`
	OrphanFiles        int                    `json:"orphan_files"`
	OrphanBytes        int64                  `json:"orphan_bytes"`
	ConflictsRetried   int                    `json:"conflicts_retried"`
	FinishedAt         *time.Time             `json:"finished_at,omitempty"`
	TookMs             int64                  `json:"took_ms"`
}

func (m *maintainCmd) print(t jobTarget, rep *storage.MaintainReport, missing bool, err error) error {
	if m.format == "json" {
		j := maintainJSON{
			Job: t.job, Target: t.table, OK: err == nil, Missing: missing,
			CompactedGroups: rep.CompactedGroups, FilesReplaced: rep.FilesReplaced, FilesWritten: rep.FilesWritten,
			BytesReplaced: rep.BytesReplaced, BytesWritten: rep.BytesWritten,
			ManifestsReplaced: rep.ManifestsReplaced, ManifestsWritten: rep.ManifestsWritten,
			SnapshotsExpired: rep.SnapshotsExpired, WatermarksMigrated: rep.WatermarksMigrated,
			OrphansSkipped: m.skipOrphans, OrphanGraceMs: m.orphanGrace.Milliseconds(),
			OrphanFiles: rep.OrphanFiles, OrphanBytes: rep.OrphanBytes,
			ConflictsRetried: rep.Conflicts, TookMs: rep.Took.Milliseconds(),
		}
		if err != nil {
			j.Error = err.Error()
		}
		j.Before, j.After = measured(rep.Before), measured(rep.After)
		if !rep.At.IsZero() {
			at := rep.At
			j.FinishedAt = &at
		}
		if err := json.NewEncoder(m.g.stdout).Encode(j); err != nil {
			return fmt.Errorf("maintain: %w", err)
		}
		return nil
	}
	return m.printText(m.g.stdout, t, rep, missing, err)
}

// measured is h for a report, nil when it was not measured.
func measured(h storage.TableHealth) *pipeline.TargetHealth {
	if h.Table == "" {
		return nil
	}
	th := pipeline.NewTargetHealth(h)
	return &th
}

func (m *maintainCmd) printText(w io.Writer, t jobTarget, rep *storage.MaintainReport, missing bool, err error) error {
	head := fmt.Sprintf("%s (job %s)", t.table, t.job)
	switch {
	case missing:
		_, werr := fmt.Fprintf(w, "%s: no such table: the job has not committed anything yet, nothing to maintain\n\n", head)
		return werr
	case err != nil:
		fmt.Fprintf(w, "%s: FAILED after %s\n  error: %v\n", head, rep.Took.Round(time.Millisecond), err)
	default:
		fmt.Fprintf(w, "%s: maintained in %s\n", head, rep.Took.Round(time.Millisecond))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	b, a := measured(rep.Before), measured(rep.After)
	if b != nil {
		fmt.Fprintln(tw, "\tbefore\tafter")
		row := func(what string, f func(*pipeline.TargetHealth) string) {
			after := "?"
			if a != nil {
				after = f(a)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", what, f(b), after)
		}
		row("data files", func(h *pipeline.TargetHealth) string { return fmt.Sprint(h.DataFiles) })
		row("data bytes", func(h *pipeline.TargetHealth) string { return sizeOf(h.DataBytes) })
		row("mean file size", func(h *pipeline.TargetHealth) string { return sizeOf(h.MeanDataFileBytes) })
		row("rows", func(h *pipeline.TargetHealth) string { return fmt.Sprint(h.Rows) })
		row("snapshots held", func(h *pipeline.TargetHealth) string { return fmt.Sprint(h.Snapshots) })
		row("metadata files", func(h *pipeline.TargetHealth) string { return fmt.Sprint(h.MetadataFiles) })
		row("metadata bytes", func(h *pipeline.TargetHealth) string { return sizeOf(h.MetadataBytes) })
		row("manifests", func(h *pipeline.TargetHealth) string { return fmt.Sprint(h.Manifests) })
	}
	fmt.Fprintf(tw, "  compaction\t%s: %s (%s) replaced by %d (%s)\n", count(rep.CompactedGroups, "group"),
		count(rep.FilesReplaced, "file"), sizeOf(rep.BytesReplaced), rep.FilesWritten, sizeOf(rep.BytesWritten))
	fmt.Fprintf(tw, "  manifest rewrite\t%s replaced by %d\n", count(rep.ManifestsReplaced, "manifest"), rep.ManifestsWritten)
	fmt.Fprintf(tw, "  snapshot expiry\t%s expired\n", count(rep.SnapshotsExpired, "snapshot"))
	if len(rep.WatermarksMigrated) > 0 {
		slices.Sort(rep.WatermarksMigrated)
		fmt.Fprintf(tw, "  watermarks migrated\t%s (to the table property before their snapshots expired)\n", strings.Join(rep.WatermarksMigrated, ", "))
	}
	if m.skipOrphans {
		fmt.Fprintf(tw, "  orphan cleanup\tskipped (--skip-orphans)\n")
	} else {
		fmt.Fprintf(tw, "  orphan cleanup\t%s (%s) older than %s deleted\n", count(rep.OrphanFiles, "file"), sizeOf(rep.OrphanBytes), m.orphanGrace)
	}
	fmt.Fprintf(tw, "  conflicts retried\t%d\n", rep.Conflicts)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("maintain: %w", err)
	}
	_, werr := fmt.Fprintln(w)
	return werr
}

// count is n things: "1 file", "2 files".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// sizeOf is n bytes for people: 812 B, 8.1 KiB, 1.2 MiB.
func sizeOf(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit && exp < 4; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
