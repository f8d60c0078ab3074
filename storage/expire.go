package storage

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/iceberg-go/table"
	"github.com/sethvargo/go-retry"
)

// Snapshot retention of a target table while it leaves the standard
// properties history.expire.min-snapshots-to-keep and
// history.expire.max-snapshot-age-ms unset.
//
// The enricher needs no history of its targets: the watermark lives in a
// table property (WatermarkProperty). Every snapshot held costs every
// later commit (metadata.json lists them all) and is rewritten by each,
// so the defaults bound the history by count, not by age: the 10 newest
// snapshots of the main branch, whatever their age. At an event a minute
// that is 10 minutes of time travel and of grace for a reader that
// planned a scan on an older snapshot; at demo or backfill rates it is
// less time but the same bytes. An age floor would instead keep every
// snapshot of the last N minutes, which at 10 commits a second is
// thousands and makes the cost per event grow with the rate. Tables that
// want time travel (or downstream incremental readers of the target)
// set the two properties; ExpireSnapshots honours them.
const (
	DefaultMinSnapshotsToKeep = 10
	DefaultMaxSnapshotAge     = time.Duration(0)

	// DefaultExpireBatch is how many snapshots must be expirable before
	// ExpireSnapshots commits an expiry, so that the table holds between
	// DefaultMinSnapshotsToKeep and DefaultMinSnapshotsToKeep +
	// DefaultExpireBatch - 1 snapshots. An expiry is a catalog commit
	// that then reads every retained manifest: measured with
	// BenchmarkCommitAfter, an expiry after each commit made an event's
	// commit about three times as slow as one every 10 (32 to 50 ms
	// against 12 to 17 ms).
	DefaultExpireBatch = 10
)

// Retention is how much history ExpireSnapshots keeps of a table.
type Retention struct {
	// MinSnapshots of the main branch are kept whatever their age.
	MinSnapshots int
	// MaxAge: older snapshots beyond MinSnapshots expire.
	MaxAge time.Duration
	// MinFromTable and AgeFromTable say which came from the table's
	// properties (else the enricher's defaults).
	MinFromTable, AgeFromTable bool
}

// RetentionOf reads tbl's retention: the history.expire.* properties,
// else DefaultMinSnapshotsToKeep and DefaultMaxSnapshotAge.
func RetentionOf(tbl *table.Table) (Retention, error) {
	r := Retention{MinSnapshots: DefaultMinSnapshotsToKeep, MaxAge: DefaultMaxSnapshotAge}
	props := tbl.Properties()
	if v, ok := props[table.MinSnapshotsToKeepKey]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return r, fmt.Errorf("table %s: property %s=%q: want a whole number of at least 1", tableName(tbl), table.MinSnapshotsToKeepKey, v)
		}
		r.MinSnapshots, r.MinFromTable = n, true
	}
	if v, ok := props[table.MaxSnapshotAgeMsKey]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return r, fmt.Errorf("table %s: property %s=%q: want milliseconds, at least 0", tableName(tbl), table.MaxSnapshotAgeMsKey, v)
		}
		// A table's owner may have set centuries: as good as 100 years,
		// and a time.Duration holds no more than 292.
		n = min(n, maxAgeMs)
		r.MaxAge, r.AgeFromTable = time.Duration(n)*time.Millisecond, true
	}
	return r, nil
}

// ExpireOptions tune ExpireSnapshots.
type ExpireOptions struct {
	// MinExpired is how many snapshots must be expirable for an expiry to
	// be committed (0: DefaultExpireBatch). Below it the call is a
	// no-op that reads nothing but the table's metadata in memory.
	MinExpired int
}

// ExpireResult says what ExpireSnapshots did.
type ExpireResult struct {
	// Table is the table after the call: the one committed, else the one
	// given.
	Table *table.Table
	// Expired is how many snapshots the commit removed; Held how many
	// the table holds after.
	Expired, Held int
	// Skipped says why nothing was committed ("" when an expiry was).
	Skipped string
	// Conflict is set when the expiry lost to another writer's commit
	// (nothing expired; the next call tries again).
	Conflict bool
	// Migrated lists the jobs whose watermark property the commit wrote
	// from their newest snapshot summary (tables written before the
	// property existed, or by an enricher that does not keep it).
	Migrated []string
}

// ExpireSnapshots expires the snapshots of tbl's history that its
// retention (RetentionOf) no longer keeps, and deletes the files that
// only they referenced (manifest lists, manifests, and the data files
// that compaction replaced). It is meant to be called after every commit
// with the table that commit returned: unless at least opts.MinExpired
// snapshots can go, it returns at once without touching the catalog or
// the files.
//
// An expiry that loses to a concurrent commit is not retried and is not
// an error: the result says Conflict, and a later call expires what is
// left. A table with gc.enabled=false is left alone (Skipped says so).
//
// Before anything expires, the watermark of every job whose newest
// snapshot is not the one its watermark property names is written to the
// property by the same commit, so no expiry can take the last record of
// a watermark.
//
// An error with a non-nil Table means the expiry committed but some of
// the files could not be deleted; they are orphans now (Maintain, or
// `enricher orphans`, finds them).
func ExpireSnapshots(ctx context.Context, tbl *table.Table, opts ExpireOptions) (ExpireResult, error) {
	res := ExpireResult{Table: tbl, Held: len(tbl.Metadata().Snapshots())}
	name := tableName(tbl)
	if v, ok := tbl.Properties()[table.GCEnabledKey]; ok && !strings.EqualFold(v, "true") {
		res.Skipped = table.GCEnabledKey + " is " + v
		return res, nil
	}
	ret, err := RetentionOf(tbl)
	if err != nil {
		return res, err
	}
	batch := opts.MinExpired
	if batch <= 0 {
		batch = DefaultExpireBatch
	}
	n := expirable(tbl.Metadata(), ret, time.Now())
	if n == 0 || n < batch {
		res.Skipped = fmt.Sprintf("%d of %d snapshots expirable, expiring from %d", n, res.Held, batch)
		return res, nil
	}

	txn := tbl.NewTransaction()
	// Pinned, the commit is never replayed onto a newer head (with
	// commit.retry.num-retries set): what it expires and the watermarks
	// it writes were decided on this one.
	if err := txn.AssertRefSnapshotID(table.MainBranch); err != nil {
		return res, fmt.Errorf("table %s: pin branch: %w", name, err)
	}
	migrate, err := unmirroredWatermarks(tbl)
	if err != nil {
		return res, err
	}
	if len(migrate) > 0 {
		if err := txn.SetProperties(migrate); err != nil {
			return res, fmt.Errorf("table %s: set watermark properties: %w", name, err)
		}
		for _, k := range slices.Sorted(maps.Keys(migrate)) {
			res.Migrated = append(res.Migrated, k[len(PropWatermarkPrefix):])
		}
	}
	if err := txn.ExpireSnapshots(table.WithRetainLast(ret.MinSnapshots), table.WithOlderThan(ret.MaxAge),
		table.WithPostCommit(true)); err != nil {
		return res, fmt.Errorf("table %s: expire snapshots: %w", name, err)
	}
	out, err := txn.Commit(ctx)
	if out == nil || (err != nil && isConflict(err)) {
		// Nothing committed (Commit returns the table only once the
		// catalog took the commit).
		res.Migrated = nil
		if err != nil && isConflict(err) {
			res.Skipped, res.Conflict = "another writer committed first", true
			return res, nil
		}
		return res, fmt.Errorf("table %s: commit expiry: %w", name, err)
	}
	res.Table = out
	res.Held = len(out.Metadata().Snapshots())
	res.Expired = len(tbl.Metadata().Snapshots()) - res.Held
	if err != nil && !onlyNotExist(err) {
		return res, fmt.Errorf("table %s: expiry committed, but deleting the files of expired snapshots failed: %w", name, err)
	}
	return res, nil
}

// expirable counts the snapshots of meta that an expiry with ret would
// remove at now, following iceberg-go's rules (table.Transaction's
// ExpireSnapshots): every ref's snapshot stays; a branch keeps its
// ancestors until one is both older than the age and beyond the count;
// snapshots off every branch stay while younger than the age.
func expirable(meta table.Metadata, ret Retention, now time.Time) int {
	nowMs := now.UnixMilli()
	maxAgeMs := ret.MaxAge.Milliseconds()
	keep := map[int64]bool{}
	onBranch := map[int64]bool{}
	for _, ref := range meta.Refs() {
		keep[ref.SnapshotID] = true
		if ref.SnapshotRefType != table.BranchRef {
			onBranch[ref.SnapshotID] = true
			continue
		}
		minKeep, maxAge := ret.MinSnapshots, maxAgeMs
		if ref.MinSnapshotsToKeep != nil {
			minKeep = *ref.MinSnapshotsToKeep
		}
		if ref.MaxSnapshotAgeMs != nil {
			maxAge = *ref.MaxSnapshotAgeMs
		}
		i, kept := 0, true
		for s := meta.SnapshotByID(ref.SnapshotID); s != nil; i++ {
			onBranch[s.SnapshotID] = true
			if kept && nowMs-s.TimestampMs > maxAge && i >= minKeep {
				kept = false
			}
			if kept {
				keep[s.SnapshotID] = true
			}
			if s.ParentSnapshotID == nil {
				break
			}
			s = meta.SnapshotByID(*s.ParentSnapshotID)
		}
	}
	n := 0
	for _, s := range meta.Snapshots() {
		switch {
		case keep[s.SnapshotID]:
		case !onBranch[s.SnapshotID] && s.TimestampMs >= nowMs-maxAgeMs:
		default:
			n++
		}
	}
	return n
}

// unmirroredWatermarks returns the watermark properties to write so that
// every job with a snapshot in tbl's history has its newest one in its
// property: empty when every job's property names its newest snapshot.
func unmirroredWatermarks(tbl *table.Table) (map[string]string, error) {
	meta := tbl.Metadata()
	jobs := map[string]bool{}
	for _, s := range meta.Snapshots() {
		if s.Summary != nil && s.Summary.Properties[PropJob] != "" {
			jobs[s.Summary.Properties[PropJob]] = true
		}
	}
	out := map[string]string{}
	for _, job := range slices.Sorted(maps.Keys(jobs)) {
		prop, _, hasProp, err := propertyWatermark(tbl, job)
		if err != nil {
			return nil, err
		}
		s, _ := newestOfJob(meta, job, "", func(id int64) bool { return hasProp && id == prop.TargetSnapshotID })
		if s == nil || (hasProp && s.SnapshotID == prop.TargetSnapshotID) {
			continue
		}
		w, err := parseWatermark(s)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", tableName(tbl), err)
		}
		v, err := encodeWatermark(s.Summary.Properties[PropSourceTable], w)
		if err != nil {
			return nil, err
		}
		out[WatermarkProperty(job)] = v
	}
	return out, nil
}

// onReloaded runs step on the table name, loaded afresh for each try,
// and tries again with backoff b while step fails retryably (a commit
// that lost to another writer is tried again on the table as it is now).
func (c *Catalog) onReloaded(ctx context.Context, name string, b retry.Backoff, step func(ctx context.Context, tbl *table.Table) error) error {
	return retry.Do(ctx, b, func(ctx context.Context) error {
		tbl, err := c.LoadTable(ctx, name)
		if err != nil {
			return err
		}
		return step(ctx, tbl)
	})
}

// onlyNotExist reports whether err is, or joins, nothing but errors for
// files that do not exist. iceberg-go v0.7.0's expiry deletes the files of
// the DELETED entries of expired manifests too, which an earlier expiry
// already deleted: on a local FileIO each is an error (S3 deletes a
// missing object without one). The files are gone either way.
func onlyNotExist(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !onlyNotExist(e) {
				return false
			}
		}
		return len(j.Unwrap()) > 0
	}
	return errors.Is(err, iofs.ErrNotExist)
}
