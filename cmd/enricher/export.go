package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/storage"
)

// exportCmd is `enricher export`: a table's rows on stdout.
type exportCmd struct {
	cmdBase

	table  string
	format string
	limit  int64
}

func newExportCmd(g *globals) *cobra.Command {
	c := &exportCmd{cmdBase: cmdBase{g: g}}
	cmd := &cobra.Command{
		Use:   "export --table NS.TABLE [--format jsonl|csv] [--limit N]",
		Short: "Print a table's rows as JSON lines or CSV",
		Long: `export prints the rows of a table's current snapshot on stdout, streaming.

jsonl: one JSON object per row keyed by column name; numbers are JSON numbers
(64-bit ids too), timestamps RFC 3339 strings, nulls null.
csv: a header line, then one line per row; null is an empty field.`,
		Example: `  enricher export --config enricher-demo/enricher.yaml --table social.posts_sentiment --limit 5
  enricher export --table social.posts_sentiment --format csv > sentiment.csv`,
		Args: cobra.NoArgs,
		RunE: runE(c),
	}
	cmd.Flags().StringVar(&c.table, "table", "", "table to print, NAMESPACE.TABLE (required)")
	choiceVar(cmd.Flags(), &c.format, "format", "output format: jsonl or csv", storage.FormatJSONL, storage.FormatCSV)
	cmd.Flags().Int64Var(&c.limit, "limit", 0, "print at most N rows (0: all)")
	return cmd
}

func (c *exportCmd) Validate() error {
	if c.table == "" {
		return fmt.Errorf("%w: --table NS.TABLE is required", errUsage)
	}
	if c.limit < 0 {
		return fmt.Errorf("%w: --limit %d must not be negative (0: all rows)", errUsage, c.limit)
	}
	return nil
}

// Run streams the rows of the table's current snapshot to stdout.
func (c *exportCmd) Run(ctx context.Context) error {
	env, err := c.g.open(ctx, false)
	if err != nil {
		return err
	}
	defer env.Close()
	tbl, err := env.cat.LoadTable(ctx, c.table)
	if err != nil {
		return err
	}
	_, err = storage.Export(ctx, tbl, c.g.stdout, c.format, c.limit)
	return err
}
