package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/apache/iceberg-go/table"
)

// OrphanFile is a file under a table's data location that no snapshot of
// the table references.
type OrphanFile struct {
	Path string
	Size int64
}

// DataLocation is where tbl writes its data files: write.data.path, else
// the table's location followed by /data.
func DataLocation(tbl *table.Table) string {
	if p := tbl.Properties()[table.WriteDataPathKey]; p != "" {
		return strings.TrimSuffix(p, "/")
	}
	return strings.TrimSuffix(tbl.Location(), "/") + "/data"
}

// MinOrphanGrace is the youngest a file may be for an orphan cleanup to
// delete it, unless the caller says no writer of the table is running
// (OrphanOptions.NoWriters, MaintainOptions.NoWriters): a younger file may
// belong to a commit in flight, a chunk still being enriched, a replay or
// a resync, and deleting it corrupts the table once that commit lands (a
// snapshot that references a file that is gone). An hour is far above the
// longest a chunk takes to write and commit with the default sizes.
const MinOrphanGrace = time.Hour

// OrphanOptions say which orphans Orphans lists and whether it deletes
// them.
type OrphanOptions struct {
	// OlderThan: only files last modified longer ago than this are listed.
	OlderThan time.Duration
	// Delete deletes the files listed. It is refused with OlderThan below
	// MinOrphanGrace unless NoWriters.
	Delete bool
	// NoWriters: the caller knows that no process writes the table (every
	// consumer, replay, resync and batch collection is stopped), so a
	// file of any age may be deleted.
	NoWriters bool
}

// ErrGraceTooShort is returned for an orphan cleanup asked to delete files
// younger than MinOrphanGrace while writers may be running.
var ErrGraceTooShort = errors.New("orphan grace too short while writers may run")

// checkGrace refuses to delete files younger than MinOrphanGrace unless
// no writer runs.
func checkGrace(grace time.Duration, noWriters bool) error {
	if grace < 0 {
		return fmt.Errorf("negative orphan grace %s", grace)
	}
	if grace < MinOrphanGrace && !noWriters {
		return fmt.Errorf("%w: a file younger than %s may belong to a commit in flight (a chunk being enriched, a replay, a resync), and deleting it corrupts the table; got %s", ErrGraceTooShort, MinOrphanGrace, grace)
	}
	return nil
}

// Orphans lists the files under tbl's data location that no snapshot of tbl
// references (through its manifests) and that were last modified more than
// opts.OlderThan ago, in path order. They are the data files of commits
// that never happened: a process killed between writing a chunk and
// committing it, or a commit that lost a conflict and could not remove its
// files.
//
// A file younger than OlderThan is never listed: it may belong to a commit
// still in flight, so OlderThan must exceed the longest a chunk takes to
// be written and committed; deleting is refused below MinOrphanGrace
// unless opts.NoWriters. With Delete, the files listed are deleted, and
// the error, if any, says which could not be.
func Orphans(ctx context.Context, tbl *table.Table, opts OrphanOptions) ([]OrphanFile, error) {
	if opts.OlderThan < 0 {
		return nil, fmt.Errorf("orphans of %s: negative age %s", tableName(tbl), opts.OlderThan)
	}
	if opts.Delete {
		if err := checkGrace(opts.OlderThan, opts.NoWriters); err != nil {
			return nil, fmt.Errorf("orphans of %s: %w", tableName(tbl), err)
		}
	}
	return orphansUnder(ctx, tbl, DataLocation(tbl), opts.OlderThan, opts.Delete)
}

// orphansUnder is Orphans for the files under loc.
func orphansUnder(ctx context.Context, tbl *table.Table, loc string, olderThan time.Duration, remove bool) ([]OrphanFile, error) {
	plan, err := tbl.PlanOrphanFiles(ctx, table.WithLocation(loc), table.WithFilesOlderThan(olderThan))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // no data file was ever written
	}
	if err != nil {
		return nil, fmt.Errorf("orphans of %s under %s: %w", tableName(tbl), loc, err)
	}
	var out []OrphanFile
	for _, f := range plan.OrphanFiles() {
		out = append(out, OrphanFile{Path: f.Path, Size: f.SizeBytes})
	}
	slices.SortFunc(out, func(a, b OrphanFile) int { return strings.Compare(a.Path, b.Path) })
	if !remove || len(out) == 0 {
		return out, nil
	}
	if _, err := tbl.ExecuteOrphanCleanup(ctx, plan); err != nil {
		return out, fmt.Errorf("delete orphans of %s: %w", tableName(tbl), err)
	}
	return out, nil
}
