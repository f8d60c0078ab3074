package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/storage"
)

func newIngestCmd(g *globals) *cobra.Command {
	var (
		tableName string
		posts     string
		firstID   int64
	)
	cmd := &cobra.Command{
		Use:   "ingest --table NS.TABLE --posts FILE",
		Short: "Append posts from a text file to a source table as one new snapshot",
		Long: `ingest plays the ingestion role for development and tests: it appends the posts
of FILE (one post per line) to a posts table as one new append snapshot, creating
the table when it does not exist, and prints the new snapshot id on stdout.

post_id is --first-id plus the line's index, so with the default 1 it is the line
number. Empty lines become posts with empty text (the job writes them as
skipped); lines of any length are read whole.`,
		Example: `  enricher ingest --config enricher-demo/enricher.yaml --table social.posts --posts more.txt --first-id 5001`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if posts == "" {
				return fmt.Errorf("%w: --posts FILE is required", errUsage)
			}
			log, err := g.logger(slog.LevelInfo)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			env, err := g.open(ctx, false)
			if err != nil {
				return err
			}
			defer env.Close()
			cat := env.cat
			tbl, err := cat.LoadTable(ctx, tableName)
			if errors.Is(err, storage.ErrTableNotFound) {
				tbl, err = cat.CreateIcebergTable(ctx, tableName, postdata.Schema(), nil)
				if err == nil {
					log.Info("created source table", "table", tableName)
				}
			}
			if err != nil {
				return err
			}
			tbl, n, err := postdata.Append(ctx, tbl, postdata.File(posts, firstID, 0, -1))
			if err != nil {
				return err
			}
			snap := tbl.CurrentSnapshot().SnapshotID
			log.Info("appended posts", "table", tableName, "rows", n, "snapshot", snap)
			fmt.Fprintln(g.stdout, snap)
			return nil
		},
	}
	cmd.Flags().StringVar(&tableName, "table", "social.posts", "source table to append to, NAMESPACE.TABLE")
	cmd.Flags().StringVar(&posts, "posts", "", "text file with one post per line (required)")
	cmd.Flags().Int64Var(&firstID, "first-id", 1, "post_id of the file's first line")
	return cmd
}
