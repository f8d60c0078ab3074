package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/storage"
)

// orphansCmd is `enricher orphans`: the data files of target tables that
// no snapshot references.
type orphansCmd struct {
	cmdBase

	job       string
	remove    bool
	noWriters bool
	olderThan time.Duration
}

func newOrphansCmd(g *globals) *cobra.Command {
	o := &orphansCmd{cmdBase: cmdBase{g: g}}
	cmd := &cobra.Command{
		Use:   "orphans [--job J] [--delete] [--older-than D] [--no-writers]",
		Short: "List (or delete) data files of target tables that no snapshot references",
		Long: `orphans lists, for the target table of every job in the config (or of --job),
the files under the table's data location that no snapshot of the table
references through its manifests: data files of commits that never happened,
because the process was killed between writing a chunk and committing it, or
a commit lost a conflict and its files could not be removed.

Only files last modified more than --older-than ago are listed: a younger
file may belong to a commit still in flight. Keep --older-than above the
longest a chunk takes to enrich and commit. With --delete the files listed are
deleted; without it nothing is changed.

--delete refuses an --older-than below ` + storage.MinOrphanGrace.String() + `: deleting a file of a commit
in flight corrupts the table (its snapshot would reference a file that is
gone). When every consumer, replay, resync and "batches collect" of these
tables is stopped, --no-writers allows any age.`,
		Example: `  enricher orphans --config enricher.yaml
  enricher orphans --config enricher.yaml --job sentiment --delete --older-than 6h
  enricher orphans --config enricher.yaml --delete --older-than 0s --no-writers   # every writer stopped`,
		Args: cobra.NoArgs,
		RunE: runE(o),
	}
	f := cmd.Flags()
	f.StringVar(&o.job, "job", "", "only the target table of this job")
	f.BoolVar(&o.remove, "delete", false, "delete the files listed")
	f.DurationVar(&o.olderThan, "older-than", 24*time.Hour, "list only files last modified longer ago than this (the grace for commits in flight)")
	f.BoolVar(&o.noWriters, "no-writers", false, "no process writes these tables now: --delete may take files younger than "+storage.MinOrphanGrace.String())
	return cmd
}

func (o *orphansCmd) Validate() error {
	if o.olderThan < 0 {
		return fmt.Errorf("%w: --older-than %s must not be negative", errUsage, o.olderThan)
	}
	if o.remove && o.olderThan < storage.MinOrphanGrace && !o.noWriters {
		return errYoungOrphans("--delete with --older-than " + o.olderThan.String())
	}
	return nil
}

// errYoungOrphans refuses flags that would delete orphan files younger
// than storage.MinOrphanGrace while writers may be running (the library
// refuses them too; the command line says so before opening anything).
func errYoungOrphans(flags string) error {
	return fmt.Errorf("%w: %s: a file younger than %s may belong to a commit in flight, and deleting it corrupts the table; stop every consumer, replay, resync and batches collect of these tables and add --no-writers", errUsage, flags, storage.MinOrphanGrace)
}

// Run lists (or deletes) the orphaned files of every target table, one
// line each, and a total.
func (o *orphansCmd) Run(ctx context.Context) error {
	_, cat, jobs, err := o.g.openTargets(ctx, o.job)
	if err != nil {
		return err
	}
	defer cat.Close()
	var targets []string
	for _, t := range jobs {
		if !slices.Contains(targets, t.table) {
			targets = append(targets, t.table)
		}
	}

	tw := tabwriter.NewWriter(o.g.stdout, 0, 0, 2, ' ', 0)
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
		orphans, err := storage.Orphans(ctx, tbl, storage.OrphanOptions{OlderThan: o.olderThan, Delete: o.remove, NoWriters: o.noWriters})
		for _, f := range orphans {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", name, f.Size, f.Path)
			files++
			bytes += f.Size
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
	if o.remove {
		verb = "deleted"
	}
	fmt.Fprintf(o.g.stdout, "%d orphaned files, %d bytes, older than %s: %s\n", files, bytes, o.olderThan, verb)
	return nil
}
