package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
)

// statusCmd is `enricher status`: where every job stands.
type statusCmd struct {
	cmdBase

	format string
	rows   bool
}

func newStatusCmd(g *globals) *cobra.Command {
	c := &statusCmd{cmdBase: cmdBase{g: g}}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show where every job stands (watermark, how far behind) and the health of its target",
		Long: `status shows, for every job of the config and its source table: the source's
current snapshot, the job's watermark (read from the target table), how many
snapshots and appended rows it is behind, when the target last recorded the
watermark, and the target's row count.

Then, per job, the health of its target table: the snapshots its metadata
holds (and the retention expiry keeps), its metadata.json files and their
bytes, the manifests of its current snapshot, its data files and their mean
size, and when it was last maintained (by enricher maintain or the automatic
maintenance of run; "never" until then). And whether the source's history still
reaches the job's watermark: "no" when snapshot expiry on the source (or a
rollback, or another table under the same name) removed the snapshots after
it, which cannot then be read incrementally; run enricher resync --job J.

It only reads: the tables' metadata, the target's current manifest list and a
stat of each metadata file the target keeps.

With --rows it also scans each target's _status and _error columns (the whole
table, two columns) for its rows by status and its skipped rows by reason
(a blank text, a language the model does not read). A resync in progress is
named, and so are a job's Batch API batches submitted and not yet collected
(how many, their rows, the oldest one's ID and age; enricher batches list
shows each).

A job whose events fail shows its last failure as a consumer recorded it on
the target (run and the Lambda handler record one at most once a minute per
job and process): when, how it was taken (retry, retry_after, permanent with
its dead-letter reason, halt), the event's snapshot and the error; "FAILING"
when the job has not committed since and still has work, so one failing job
among several on a table is told apart from the others.`,
		Example: `  enricher status --config enricher-demo/enricher.yaml
  enricher status --format json`,
		Args: cobra.NoArgs,
		RunE: runE(c),
	}
	cmd.Flags().BoolVar(&c.rows, "rows", false, "also count each target's rows by status and its skipped rows by reason (scans two columns of the whole target)")
	choiceVar(cmd.Flags(), &c.format, "format", "output format: text or json (one object per job, with target_health and source_history_* fields)", "text", "json")
	return cmd
}

func (c *statusCmd) Validate() error {
	return nil
}

// Run prints every job's status.
func (c *statusCmd) Run(ctx context.Context) error {
	env, err := c.g.open(ctx, true)
	if err != nil {
		return err
	}
	defer env.Close()
	proc, err := env.processor(slog.Default(), nil)
	if err != nil {
		return err
	}
	st, err := proc.StatusWith(ctx, pipeline.StatusOptions{CountRows: c.rows})
	if err != nil {
		return err
	}
	if c.format == "json" {
		enc := json.NewEncoder(c.g.stdout)
		for _, s := range st {
			if err := enc.Encode(s); err != nil {
				return fmt.Errorf("status: %w", err)
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(c.g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSOURCE\tSOURCE SNAPSHOT\tWATERMARK\tSNAPSHOTS BEHIND\tROWS BEHIND\tLAST COMMIT\tTARGET ROWS")
	for _, s := range st {
		last := "-"
		if s.LastCommit != nil {
			last = s.LastCommit.Format(time.RFC3339)
		}
		if s.Problem != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t(%s)\n", s.Job, s.SourceTable, oneLine(s.Problem))
			continue
		}
		behind, rowsBehind := strconv.Itoa(s.Behind), strconv.FormatInt(s.RowsBehind, 10)
		if s.HistoryReaches != nil && !*s.HistoryReaches {
			behind, rowsBehind = "?", "?" // not readable incrementally: see the history line
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", s.Job, s.SourceTable, s.Current, s.WatermarkAt,
			behind, rowsBehind, last, orDash(s.TargetRows))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	for _, s := range st {
		if s.Problem != "" {
			continue
		}
		fmt.Fprintf(c.g.stdout, "\n%s: target %s\n", s.Job, s.TargetTable)
		tw := tabwriter.NewWriter(c.g.stdout, 0, 0, 2, ' ', 0)
		switch h := s.Health; {
		case h != nil:
			fmt.Fprintf(tw, "  snapshots held\t%d (retention: %s)\n", h.Snapshots, retention(h))
			fmt.Fprintf(tw, "  metadata\t%d files, %s (current %s)\n", h.MetadataFiles, sizeOf(h.MetadataBytes), sizeOf(h.CurrentMetadataBytes))
			fmt.Fprintf(tw, "  manifests\t%d, %s\n", h.Manifests, sizeOf(h.ManifestBytes))
			fmt.Fprintf(tw, "  data files\t%d, mean %s (%s, %d rows)\n", h.DataFiles, sizeOf(h.MeanDataFileBytes), sizeOf(h.DataBytes), h.Rows)
			last := "never"
			if h.LastMaintenance != nil {
				last = h.LastMaintenance.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "  last maintenance\t%s\n", last)
		case s.HealthProblem != "":
			fmt.Fprintf(tw, "  health\tunknown: %s\n", oneLine(s.HealthProblem))
		default:
			fmt.Fprintf(tw, "  health\tno target table yet (nothing enriched)\n")
		}
		if s.Resync != "" {
			fmt.Fprintf(tw, "  resync\t%s\n", s.Resync)
		}
		if len(s.PropertiesToSet) > 0 {
			fmt.Fprintf(tw, "  target.properties\tnot yet on the table: %s (the next consumer or enricher maintain sets them)\n", strings.Join(s.PropertiesToSet, ", "))
		}
		if f := s.LastFailure; f != nil {
			state := "before the last commit: the job has moved on since"
			if s.Failing {
				state = "FAILING: no commit since"
			}
			why := f.Class
			if f.Reason != "" {
				why += ", " + f.Reason
			}
			fmt.Fprintf(tw, "  last failure\t%s, %s (%s), snapshot %d: %s\n", f.At.Format(time.RFC3339), state, why, f.Snapshot, oneLine(f.Error))
		}
		if len(s.Batches) > 0 {
			var rows int64
			for _, b := range s.Batches {
				rows += b.Rows
			}
			oldest := s.Batches[0]
			fmt.Fprintf(tw, "  pending batches\t%d, %d rows; oldest %s, %s, %s old, attempt %d (enricher batches list --job %s)\n",
				len(s.Batches), rows, orDash(oldest.Batch), oldest.State, (time.Duration(oldest.AgeSecs) * time.Second).String(), oldest.Attempts, s.Job)
		}
		if r := s.Rows; r != nil {
			var per []string
			for _, st := range enrich.Statuses {
				per = append(per, fmt.Sprintf("%s %d", st, r.ByStatus[st]))
			}
			fmt.Fprintf(tw, "  rows\t%s\n", strings.Join(per, ", "))
			for _, rc := range r.SkippedBy {
				fmt.Fprintf(tw, "  skipped\t%d: %s\n", rc.Rows, rc.Reason)
			}
		}
		switch {
		case s.HistoryReaches == nil:
		case *s.HistoryReaches:
			fmt.Fprintf(tw, "  history reaches watermark\tyes\n")
		default:
			fmt.Fprintf(tw, "  history reaches watermark\tno: run enricher resync --job %s (%s)\n", s.Job, oneLine(s.HistoryProblem))
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("status: %w", err)
		}
	}
	return nil
}

// retention says what snapshot expiry keeps of a target's history.
func retention(h *pipeline.TargetHealth) string {
	s := fmt.Sprintf("the newest %d", h.RetainSnapshots)
	if h.RetainMaxAgeMs > 0 {
		s += " and any younger than " + (time.Duration(h.RetainMaxAgeMs) * time.Millisecond).String()
	}
	return s
}

// oneLine is an error text for a line of the terminal: a failure record
// and the problems status reports hold what servers and tables said, so a
// line break or a control character (an escape sequence) in them is
// written escaped (\n, \u001b).
func oneLine(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t' || r == ' ' || unicode.IsGraphic(r):
			b.WriteRune(r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
