package main

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/storage"
)

// ingestCmd is `enricher ingest`: posts from a text file appended to a
// source table.
type ingestCmd struct {
	cmdBase

	table   string
	posts   string
	firstID int64
}

func newIngestCmd(g *globals) *cobra.Command {
	c := &ingestCmd{cmdBase: cmdBase{g: g}}
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
		RunE:    runE(c),
	}
	cmd.Flags().StringVar(&c.table, "table", "social.posts", "source table to append to, NAMESPACE.TABLE")
	cmd.Flags().StringVar(&c.posts, "posts", "", "text file with one post per line (required)")
	cmd.Flags().Int64Var(&c.firstID, "first-id", 1, "post_id of the file's first line")
	return cmd
}

func (c *ingestCmd) Validate() error {
	if c.posts == "" {
		return fmt.Errorf("%w: --posts FILE is required", errUsage)
	}
	if c.firstID < 0 || c.firstID > math.MaxInt64/2 {
		return fmt.Errorf("%w: --first-id %d: want 0 to %d (post_id is it plus the line's index)", errUsage, c.firstID, int64(math.MaxInt64/2))
	}
	return nil
}

// Run appends the posts as one snapshot, creating the table if needed, and
// prints the snapshot's id.
func (c *ingestCmd) Run(ctx context.Context) error {
	c.g.create = true // ingest plays ingestion: it may start a warehouse
	env, err := c.g.open(ctx, false)
	if err != nil {
		return err
	}
	defer env.Close()
	cat := env.cat
	tbl, err := cat.LoadTable(ctx, c.table)
	if errors.Is(err, storage.ErrTableNotFound) {
		tbl, err = cat.CreateIcebergTable(ctx, c.table, postdata.Schema(), storage.SourceProperties())
		if err == nil {
			c.log.Info("created source table", "table", c.table)
		}
	}
	if err != nil {
		return err
	}
	c.log.Debug("reading posts", "file", c.posts)
	tbl, n, err := postdata.Append(ctx, tbl, postdata.File(c.posts, c.firstID, 0, -1))
	if err != nil {
		return err
	}
	snap := tbl.CurrentSnapshot().SnapshotID
	c.log.Info("appended posts", "table", c.table, "rows", n, "snapshot", snap)
	fmt.Fprintln(c.g.stdout, snap)
	return nil
}
