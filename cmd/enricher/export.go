package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/storage"
)

func newExportCmd(g *globals) *cobra.Command {
	var (
		tableName string
		format    string
		limit     int64
	)
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
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tableName == "" {
				return fmt.Errorf("%w: --table NS.TABLE is required", errUsage)
			}
			if format != storage.FormatJSONL && format != storage.FormatCSV {
				return fmt.Errorf("%w: --format %q: want jsonl or csv", errUsage, format)
			}
			ctx := cmd.Context()
			env, err := g.open(ctx, false)
			if err != nil {
				return err
			}
			defer env.Close()
			tbl, err := env.cat.LoadTable(ctx, tableName)
			if err != nil {
				return err
			}
			_, err = storage.Export(ctx, tbl, g.stdout, format, limit)
			return err
		},
	}
	cmd.Flags().StringVar(&tableName, "table", "", "table to print, NAMESPACE.TABLE (required)")
	cmd.Flags().StringVar(&format, "format", storage.FormatJSONL, "output format: jsonl or csv")
	cmd.Flags().Int64Var(&limit, "limit", 0, "print at most N rows (0: all)")
	return cmd
}
