package main

import (
	"errors"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/storage"
)

func newOrphansCmd(g *globals) *cobra.Command {
	var (
		job       string
		remove    bool
		olderThan time.Duration
	)
	cmd := &cobra.Command{
		Use:   "orphans [--job J] [--delete] [--older-than D]",
		Short: "List (or delete) data files of target tables that no snapshot references",
		Long: `orphans lists, for the target table of every job in the config (or of --job),
the files under the table's data location that no snapshot of the table
references through its manifests: data files of commits that never happened,
because the process was killed between writing a chunk and committing it, or
a commit lost a conflict and its files could not be removed.

Only files last modified more than --older-than ago are listed: a younger
file may belong to a commit still in flight. Keep --older-than above the
longest a chunk takes to enrich and commit. With --delete the files listed are
deleted; without it nothing is changed.`,
		Example: `  enricher orphans --config enricher.yaml
  enricher orphans --config enricher.yaml --job sentiment --delete --older-than 6h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if olderThan < 0 {
				return fmt.Errorf("%w: --older-than %s must not be negative", errUsage, olderThan)
			}
			ctx := cmd.Context()
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			// Only the target tables are needed: the specs, not their models.
			var targets []string
			var errs []error
			found := job == ""
			for _, p := range cfg.specPaths() {
				spec, err := enrich.LoadSpec(p)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if job != "" && spec.Name != job {
					continue
				}
				found = true
				if !slices.Contains(targets, spec.Target.Table) {
					targets = append(targets, spec.Target.Table)
				}
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}
			if !found {
				return fmt.Errorf("%w: --job %s: no such job in %s", errUsage, job, cfg.file)
			}
			cat, err := storage.OpenCatalog(ctx, cfg.Catalog)
			if err != nil {
				return err
			}
			defer cat.Close()

			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "TABLE\tBYTES\tFILE")
			var files, bytes int64
			for _, name := range targets {
				tbl, err := cat.LoadTable(ctx, name)
				if errors.Is(err, storage.ErrTableNotFound) {
					continue // nothing written yet
				}
				if err != nil {
					return err
				}
				orphans, err := storage.Orphans(ctx, tbl, olderThan, remove)
				for _, o := range orphans {
					fmt.Fprintf(tw, "%s\t%d\t%s\n", name, o.Size, o.Path)
					files++
					bytes += o.Size
				}
				if err != nil {
					tw.Flush()
					return err
				}
			}
			if err := tw.Flush(); err != nil {
				return fmt.Errorf("orphans: %w", err)
			}
			verb := "found (pass --delete to delete them)"
			if remove {
				verb = "deleted"
			}
			fmt.Fprintf(g.stdout, "%d orphaned files, %d bytes, older than %s: %s\n", files, bytes, olderThan, verb)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&job, "job", "", "only the target table of this job")
	f.BoolVar(&remove, "delete", false, "delete the files listed")
	f.DurationVar(&olderThan, "older-than", 24*time.Hour, "list only files last modified longer ago than this (the grace for commits in flight)")
	return cmd
}
