package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// statusCmd is `enricher status`: where every job stands.
type statusCmd struct {
	g *globals

	format string
}

func newStatusCmd(g *globals) *cobra.Command {
	c := &statusCmd{g: g}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show where every job stands: source snapshot, watermark, how far behind",
		Long: `status shows, for every job of the config and its source table: the source's
current snapshot, the job's watermark (read from the target table's snapshot
summary), how many snapshots and appended rows it is behind, when the target
last recorded the watermark, and the target's row count. It only reads.`,
		Example: `  enricher status --config enricher-demo/enricher.yaml
  enricher status --format json`,
		Args: cobra.NoArgs,
		RunE: runE(c),
	}
	cmd.Flags().StringVar(&c.format, "format", "text", "output format: text or json (one object per job)")
	return cmd
}

func (c *statusCmd) Validate() error {
	if c.format != "text" && c.format != "json" {
		return fmt.Errorf("%w: --format %q: want text or json", errUsage, c.format)
	}
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
	st, err := proc.Status(ctx)
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
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t(%s)\n", s.Job, s.SourceTable, s.Problem)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%s\t%s\n", s.Job, s.SourceTable, s.Current, s.WatermarkAt,
			s.Behind, s.RowsBehind, last, orDash(s.TargetRows))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
