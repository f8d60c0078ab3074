package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/apache/iceberg-go/table/compaction"
	"github.com/sethvargo/go-retry"
)

// DefaultOrphanGrace is how old a file must be before Maintain deletes it
// as an orphan: it must exceed the longest a commit takes from writing
// its first file to committing (a chunk being enriched, a conflict being
// settled), or an orphan cleanup would delete the files of a commit in
// flight. Iceberg's own default is 3 days; a day is as safe for the
// enricher, whose chunks take minutes.
const DefaultOrphanGrace = 24 * time.Hour

// PropMaintenance is the snapshot summary property of the snapshots
// Maintain commits (compaction, manifest rewrite).
const PropMaintenance = "enricher.maintenance"

// MaintainOptions tune Maintain. The zero value is a full maintenance
// with the defaults.
type MaintainOptions struct {
	// TargetFileBytes is the size of the data files compaction writes
	// (0: the table's write.target-file-size-bytes, else Iceberg's 512
	// MiB). Files under 75% of it are compacted; over 180% never.
	TargetFileBytes int64
	// MinInputFiles is the fewest small files compaction rewrites
	// together (0: 5, iceberg-go's default).
	MinInputFiles int
	// OrphanGrace: files younger than this are never deleted as orphans
	// (0: DefaultOrphanGrace). Below MinOrphanGrace Maintain is refused
	// (ErrGraceTooShort) unless NoWriters.
	OrphanGrace time.Duration
	// NoWriters: the caller knows that no process writes the table, so
	// OrphanGrace may be below MinOrphanGrace.
	NoWriters bool
	// SkipOrphans leaves out the orphan cleanup (it lists every file
	// under the table's location).
	SkipOrphans bool
	// Attempts is how many times a step is tried when it loses to a
	// concurrent commit (0: 8); Backoff the base of the waits between
	// them (0: 100ms; see ConflictBackoff).
	Attempts int
	Backoff  time.Duration
}

// MaintainReport says what Maintain did to a table.
type MaintainReport struct {
	Table         string
	Before, After TableHealth
	// Compaction: groups of small files rewritten, the files and bytes
	// replaced, the files and bytes written in their place.
	CompactedGroups             int
	FilesReplaced, FilesWritten int
	BytesReplaced, BytesWritten int64
	ManifestsReplaced           int
	ManifestsWritten            int
	SnapshotsExpired            int
	WatermarksMigrated          []string
	OrphanFiles                 int
	OrphanBytes                 int64
	// Conflicts counts the commits that lost to another writer and were
	// tried again.
	Conflicts int
	// At is when it finished (recorded in PropLastMaintenance); Took how
	// long it ran.
	At   time.Time
	Took time.Duration
}

// Maintain maintains the table name in four steps, each its own commit:
//
//  1. compaction: the data files smaller than 75% of the target size are
//     rewritten, bin-packed, into target-size files (iceberg-go's
//     table/compaction; a `replace` snapshot);
//  2. manifest rewrite: the current snapshot's manifests are merged
//     into target-size ones (a `replace` snapshot; none when they
//     already are);
//  3. snapshot expiry (ExpireSnapshots, whatever the batch): the
//     history the table's retention does not keep goes, with the files
//     only it referenced (the data files compaction replaced among
//     them, once their snapshots are out of the retention);
//  4. orphan cleanup: files under the table's location that no snapshot
//     or metadata file references and that are older than OrphanGrace
//     are deleted.
//
// Then it records the time in PropLastMaintenance. It is safe while
// consumers commit to the table: no step moves a watermark or changes a
// row (a compaction writes the same rows into fewer files); a step that
// loses to a concurrent commit is retried on the reloaded table with
// backoff (a compaction commits the files it already wrote), and a
// consumer that loses to a maintenance commit re-plans as after any
// conflict. A step that fails does not stop the later ones; the error
// joins every failure, and PropLastMaintenance is only written when none
// failed. The report is filled as far as the steps went.
func (c *Catalog) Maintain(ctx context.Context, name string, opts MaintainOptions) (*MaintainReport, error) {
	start := time.Now()
	rep := &MaintainReport{Table: name}
	if !opts.SkipOrphans {
		if err := checkGrace(cmp.Or(opts.OrphanGrace, DefaultOrphanGrace), opts.NoWriters); err != nil {
			return rep, fmt.Errorf("maintain %s: %w", name, err)
		}
	}
	tbl, err := c.LoadTable(ctx, name)
	if err != nil {
		return rep, err
	}
	if rep.Before, err = Health(ctx, tbl); err != nil {
		return rep, err
	}
	steps := []struct {
		what string
		run  func(context.Context, string, MaintainOptions, *MaintainReport) error
	}{
		{"compaction", c.compact},
		{"manifest rewrite", c.rewriteManifests},
		{"snapshot expiry", c.expire},
		{"orphan cleanup", c.cleanOrphans},
	}
	var errs []error
	for _, s := range steps {
		if s.what == "orphan cleanup" && opts.SkipOrphans {
			continue
		}
		if err := s.run(ctx, name, opts, rep); err != nil {
			errs = append(errs, fmt.Errorf("maintain %s: %s: %w", name, s.what, err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	rep.At = time.Now().UTC()
	if len(errs) == 0 {
		if err := c.markMaintained(ctx, name, opts, rep); err != nil {
			errs = append(errs, fmt.Errorf("maintain %s: record the time: %w", name, err))
		}
	}
	if tbl, err = c.LoadTable(ctx, name); err == nil {
		rep.After, err = Health(ctx, tbl)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("maintain %s: measure after: %w", name, err))
	}
	rep.Took = time.Since(start)
	return rep, errors.Join(errs...)
}

// again marks err for another attempt of a maintenance step when it says
// that the table moved under the step: a lost commit, or a file that a
// concurrent expiry deleted while the step read an older snapshot.
func again(err error) error {
	if isConflict(err) || errors.Is(err, iofs.ErrNotExist) {
		return retry.RetryableError(err)
	}
	return err
}

func (c *Catalog) compact(ctx context.Context, name string, opts MaintainOptions, rep *MaintainReport) error {
	// written holds the groups rewritten but not committed yet: a lost
	// commit commits them again on the reloaded table (appends do not
	// touch the files they replace).
	var (
		written []table.CompactionGroupResult
		unknown bool // a commit failed in a way that may have committed it
		tbl     *table.Table
	)
	err := c.onReloaded(ctx, name, ConflictBackoff(opts.Attempts, opts.Backoff), func(ctx context.Context, cur *table.Table) error {
		tbl = cur
		if written == nil {
			cfg, gopts := compactionConfig(tbl, opts)
			plan, err := compaction.Analyze(ctx, tbl, cfg)
			if err != nil {
				return again(fmt.Errorf("plan: %w", err))
			}
			for _, g := range plan.Groups {
				gr, err := table.ExecuteCompactionGroup(ctx, tbl, table.CompactionTaskGroup{
					PartitionKey: g.PartitionKey, Tasks: g.Tasks, TotalSizeBytes: g.TotalSizeBytes}, gopts...)
				if len(gr.OldDataFiles) > 0 || len(gr.NewDataFiles) > 0 {
					written = append(written, gr)
				}
				if err != nil {
					return again(writeFailed(fmt.Sprintf("rewrite %d files", len(g.Tasks)), tbl, dropWritten(tbl, &written, err)))
				}
			}
			if len(written) == 0 {
				return nil // nothing to compact
			}
		}
		txn := tbl.NewTransaction()
		rw := txn.NewRewrite(iceberg.Properties{PropMaintenance: "compaction"})
		for _, gr := range written {
			rw.ApplyResult(gr)
		}
		if err := rw.Commit(ctx); err != nil {
			// The files it replaces left the table (another compaction):
			// plan again from the table as it is.
			return retry.RetryableError(fmt.Errorf("stage: %w", dropWritten(tbl, &written, err)))
		}
		if _, err := txn.Commit(ctx); err != nil {
			if isConflict(err) {
				rep.Conflicts++
				return retry.RetryableError(fmt.Errorf("commit: %w: %w", ErrConflict, err))
			}
			unknown = true
			return fmt.Errorf("commit: %w", err)
		}
		for _, gr := range written {
			rep.CompactedGroups++
			rep.FilesReplaced += len(gr.OldDataFiles)
			rep.FilesWritten += len(gr.NewDataFiles)
			rep.BytesReplaced += gr.BytesBefore
			rep.BytesWritten += gr.BytesAfter
		}
		written = nil
		return nil
	})
	if err != nil && written != nil && !unknown {
		// Certainly not committed: no snapshot references them.
		err = dropWritten(tbl, &written, err)
	}
	return err
}

// dropWritten deletes the data files of written (which no snapshot
// references) and empties it, returning cause with any failure to delete.
func dropWritten(tbl *table.Table, written *[]table.CompactionGroupResult, cause error) error {
	var files []iceberg.DataFile
	for _, gr := range *written {
		files = append(files, gr.NewDataFiles...)
	}
	*written = nil
	if err := RemoveFiles(context.Background(), tbl, files); err != nil {
		return errors.Join(cause, fmt.Errorf("delete the files of the uncommitted compaction: %w", err))
	}
	return cause
}

// compactionConfig is the bin-pack configuration for tbl.
func compactionConfig(tbl *table.Table, opts MaintainOptions) (compaction.Config, []table.CompactionGroupOption) {
	cfg := compaction.DefaultConfig()
	target := tbl.Properties().GetInt64(table.WriteTargetFileSizeBytesKey, table.WriteTargetFileSizeBytesDefault)
	if opts.TargetFileBytes > 0 {
		target = opts.TargetFileBytes
	}
	cfg.TargetFileSizeBytes = target
	cfg.MinFileSizeBytes = target * 3 / 4
	cfg.MaxFileSizeBytes = target * 9 / 5
	if opts.MinInputFiles > 0 {
		cfg.MinInputFiles = uint(opts.MinInputFiles)
	}
	return cfg, []table.CompactionGroupOption{table.WithCompactionTargetFileSize(target)}
}

func (c *Catalog) rewriteManifests(ctx context.Context, name string, opts MaintainOptions, rep *MaintainReport) error {
	return c.onReloaded(ctx, name, ConflictBackoff(opts.Attempts, opts.Backoff), func(ctx context.Context, tbl *table.Table) error {
		txn := tbl.NewTransaction()
		res, err := txn.RewriteManifests(ctx)
		if err != nil {
			return again(fmt.Errorf("stage: %w", err))
		}
		if res.IsNoOp() {
			return nil
		}
		if _, err := txn.Commit(ctx); err != nil {
			if isConflict(err) {
				rep.Conflicts++
				// Certainly not committed: its new manifests are orphans.
				var errs []error
				if fs, ferr := tbl.FS(ctx); ferr == nil {
					for _, m := range res.AddedManifests {
						if rerr := fs.Remove(m.FilePath()); rerr != nil && !errors.Is(rerr, iofs.ErrNotExist) {
							errs = append(errs, rerr)
						}
					}
				} else {
					errs = append(errs, ferr)
				}
				return retry.RetryableError(errors.Join(fmt.Errorf("commit: %w: %w", ErrConflict, err), errors.Join(errs...)))
			}
			return fmt.Errorf("commit: %w", err)
		}
		rep.ManifestsReplaced += len(res.RewrittenManifests)
		rep.ManifestsWritten += len(res.AddedManifests)
		return nil
	})
}

func (c *Catalog) expire(ctx context.Context, name string, opts MaintainOptions, rep *MaintainReport) error {
	return c.onReloaded(ctx, name, ConflictBackoff(opts.Attempts, opts.Backoff), func(ctx context.Context, tbl *table.Table) error {
		res, err := ExpireSnapshots(ctx, tbl, ExpireOptions{MinExpired: 1})
		rep.SnapshotsExpired += res.Expired
		rep.WatermarksMigrated = append(rep.WatermarksMigrated, res.Migrated...)
		if err != nil {
			return err
		}
		if res.Conflict {
			rep.Conflicts++
			return retry.RetryableError(fmt.Errorf("table %s: expiry: %w", name, ErrConflict))
		}
		return nil
	})
}

func (c *Catalog) cleanOrphans(ctx context.Context, name string, opts MaintainOptions, rep *MaintainReport) error {
	grace := cmp.Or(opts.OrphanGrace, DefaultOrphanGrace) // checked by Maintain
	return c.onReloaded(ctx, name, ConflictBackoff(opts.Attempts, opts.Backoff), func(ctx context.Context, tbl *table.Table) error {
		for _, loc := range tableLocations(tbl) {
			files, err := orphansUnder(ctx, tbl, loc, grace, true)
			for _, f := range files {
				rep.OrphanFiles++
				rep.OrphanBytes += f.Size
			}
			if err != nil {
				return again(err)
			}
		}
		return nil
	})
}

// tableLocations are the folders holding tbl's files: its location,
// and its data and metadata paths where they are set elsewhere.
func tableLocations(tbl *table.Table) []string {
	root := strings.TrimSuffix(tbl.Location(), "/")
	out := []string{root}
	for _, p := range []string{DataLocation(tbl), strings.TrimSuffix(tbl.Properties()[table.WriteMetadataPathKey], "/")} {
		if p != "" && p != root && !strings.HasPrefix(p, root+"/") {
			out = append(out, p)
		}
	}
	return out
}

func (c *Catalog) markMaintained(ctx context.Context, name string, opts MaintainOptions, rep *MaintainReport) error {
	return c.onReloaded(ctx, name, ConflictBackoff(opts.Attempts, opts.Backoff), func(ctx context.Context, tbl *table.Table) error {
		txn := tbl.NewTransaction()
		if err := txn.SetProperties(iceberg.Properties{PropLastMaintenance: rep.At.Format(time.RFC3339Nano)}); err != nil {
			return fmt.Errorf("set %s: %w", PropLastMaintenance, err)
		}
		if _, err := txn.Commit(ctx); err != nil {
			if isConflict(err) {
				rep.Conflicts++
				return retry.RetryableError(fmt.Errorf("commit: %w: %w", ErrConflict, err))
			}
			return fmt.Errorf("commit: %w", err)
		}
		return nil
	})
}

// MaintenanceDue reports whether tbl is due for Maintain, from its
// metadata in memory alone (cheap enough to ask after every commit): it
// holds at least minDataFiles data files and was never maintained, or
// last more than every ago.
func MaintenanceDue(tbl *table.Table, every time.Duration, minDataFiles int64, now time.Time) (bool, error) {
	snap := tbl.CurrentSnapshot()
	if snap == nil || snap.Summary == nil {
		return false, nil
	}
	// A snapshot without totals (another writer's) does not count as due.
	files, ok := parseCount(snap.Summary.Properties["total-data-files"])
	if !ok || files < minDataFiles {
		return false, nil
	}
	v, ok := tbl.Properties()[PropLastMaintenance]
	if !ok {
		return true, nil
	}
	last, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return false, fmt.Errorf("table %s: property %s=%q: %w", tableName(tbl), PropLastMaintenance, v, err)
	}
	return now.Sub(last) >= every, nil
}

func parseCount(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}
