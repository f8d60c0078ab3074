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

// Orphans lists the files under tbl's data location that no snapshot of tbl
// references (through its manifests) and that were last modified more than
// olderThan ago, in path order. They are the data files of commits that
// never happened: a process killed between writing a chunk and committing
// it, or a commit that lost a conflict and could not remove its files.
//
// A file younger than olderThan is never listed: it may belong to a commit
// still in flight, so olderThan must exceed the longest a chunk takes to be
// written and committed. With remove, the files listed are deleted, and
// the error, if any, says which could not be.
func Orphans(ctx context.Context, tbl *table.Table, olderThan time.Duration, remove bool) ([]OrphanFile, error) {
	if olderThan < 0 {
		return nil, fmt.Errorf("orphans of %s: negative age %s", tableName(tbl), olderThan)
	}
	return orphansUnder(ctx, tbl, DataLocation(tbl), olderThan, remove)
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
