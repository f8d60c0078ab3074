package storage

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/iceberg-go/table"
	"github.com/sethvargo/go-retry"
)

// Defaults of the metadata knobs of the tables the enricher creates. Why
// these values: see TargetProperties.
const (
	// DefaultPreviousVersionsMax is write.metadata.previous-versions-max.
	DefaultPreviousVersionsMax = 10
	// DefaultManifestMinMergeCount is commit.manifest.min-count-to-merge.
	DefaultManifestMinMergeCount = 20
)

// TargetProperties are the Iceberg table properties the enricher gives a
// target table it creates, so that the table's metadata and the cost of
// a commit stay bounded however many events it takes. A job's own
// target.properties go on top of them. They are for new tables: an
// existing table keeps what its owner chose, and only the job's
// target.properties are reconciled onto it (ReconcileProperties).
//
//   - write.metadata.delete-after-commit.enabled=true and
//     write.metadata.previous-versions-max=10: every commit writes a new
//     metadata.json; without these each one is kept forever (the 1.2 GB
//     of metadata in issue 12). The log keeps the last 10 (Iceberg's
//     default is 100): enough for a reader that loaded the table a few
//     commits ago to still find its file, at a tenth of the bytes.
//   - commit.manifest-merge.enabled=true with
//     commit.manifest.min-count-to-merge=20: a fast append adds one
//     manifest per commit and the manifest list, which every commit
//     rewrites and every expiry and scan reads, grows without end; with
//     merging, a commit that finds 20 manifests merges them into one (up
//     to 8 MB).
//     Measured with BenchmarkCommitAfter (longlife_bench_test.go), 200
//     commits after 1,000 without compaction, on 2 shared cores, in
//     three runs: 10.8, 13.5 and 16.9 ms a commit with merging at 20;
//     11.8, 12.7 and 21.0 ms at 100 (Iceberg's default); 16.8 and 29.1
//     ms at 5 (every fifth commit rewrites the merged manifest); 68.9
//     and 94.3 ms without merging; 85.1 and 119.6 ms with none of these
//     properties and no expiry. Between 20 and 100 the local cost does
//     not decide; the manifest count does: every scan, merge and expiry
//     reads the manifests one object at a time, and 20 keeps them under
//     20 instead of under 100. The merged
//     manifest holds an entry per live data file, which compaction
//     (Maintain) keeps few.
//
// Snapshot retention is not set here: ExpireSnapshots applies its
// defaults (DefaultMinSnapshotsToKeep, DefaultMaxSnapshotAge) while the
// table leaves history.expire.* unset, and honours them once set.
func TargetProperties() map[string]string {
	return map[string]string{
		table.MetadataDeleteAfterCommitEnabledKey: "true",
		table.MetadataPreviousVersionsMaxKey:      strconv.Itoa(DefaultPreviousVersionsMax),
		table.ManifestMergeEnabledKey:             "true",
		table.ManifestMinMergeCountKey:            strconv.Itoa(DefaultManifestMinMergeCount),
	}
}

// SourceProperties are the table properties for a source table the
// enricher creates (ingest, demo): the same metadata knobs as
// TargetProperties. Expiry of a source's snapshots is its writer's
// business: consumers read the history between their watermark and the
// newest snapshot.
func SourceProperties() map[string]string { return TargetProperties() }

// PropertyChange is one property ReconcileProperties set.
type PropertyChange struct {
	Key string
	// Old is the value before ("" with Added when the table had none).
	Old, New string
	Added    bool
}

func (c PropertyChange) String() string {
	if c.Added {
		return fmt.Sprintf("%s=%s (was unset)", c.Key, c.New)
	}
	return fmt.Sprintf("%s=%s (was %s)", c.Key, c.New, c.Old)
}

// CheckProperties reports the first property of props that the enricher
// cannot set on a table: a reserved Iceberg property (format-version,
// uuid, ...), one of the enricher's own (enricher.*), or a value that the
// table's readers and writers would reject or that would stop expiry
// (history.expire.*, the metadata and manifest knobs, gc.enabled).
func CheckProperties(props map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(props)) {
		v := props[k]
		if k == "" {
			return fmt.Errorf("property with an empty name (value %q)", v)
		}
		if slices.Contains(table.ReservedProperties[:], k) {
			return fmt.Errorf("property %s: reserved by Iceberg, not a table property to set", k)
		}
		if strings.HasPrefix(k, "enricher.") {
			return fmt.Errorf("property %s: the enricher.* properties are the enricher's own (watermarks, maintenance)", k)
		}
		if err := checkValue(k, v); err != nil {
			return fmt.Errorf("property %s=%q: %w", k, v, err)
		}
	}
	return nil
}

// checkValue checks the value of the properties whose meaning the
// enricher relies on.
func checkValue(k, v string) error {
	switch k {
	case table.MetadataDeleteAfterCommitEnabledKey, table.ManifestMergeEnabledKey, table.GCEnabledKey:
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("want true or false")
		}
	case table.MetadataPreviousVersionsMaxKey, table.ManifestMinMergeCountKey, table.MinSnapshotsToKeepKey,
		table.ManifestTargetSizeBytesKey, table.WriteTargetFileSizeBytesKey:
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 1 {
			return fmt.Errorf("want a whole number of at least 1")
		}
	case table.MaxSnapshotAgeMsKey:
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 0 {
			return fmt.Errorf("want a whole number of milliseconds, at least 0")
		}
	}
	return nil
}

// ReconcileProperties sets on the table name every property of want whose
// value differs (or that is unset), in one commit, and reports what it
// changed, in key order. It never removes a property; nothing is
// committed when nothing differs. A commit that loses to another writer
// is retried on the reloaded table. It returns the table as it is after.
func (c *Catalog) ReconcileProperties(ctx context.Context, name string, want map[string]string) (*table.Table, []PropertyChange, error) {
	if err := CheckProperties(want); err != nil {
		return nil, nil, fmt.Errorf("table %s: %w", name, err)
	}
	var (
		out     *table.Table
		changes []PropertyChange
	)
	err := retry.Do(ctx, conflictBackoff(0, 0), func(ctx context.Context) error {
		tbl, err := c.LoadTable(ctx, name)
		if err != nil {
			return err
		}
		have := tbl.Properties()
		changes = changes[:0]
		set := map[string]string{}
		for _, k := range slices.Sorted(maps.Keys(want)) {
			old, ok := have[k]
			if ok && old == want[k] {
				continue
			}
			set[k] = want[k]
			changes = append(changes, PropertyChange{Key: k, Old: old, New: want[k], Added: !ok})
		}
		if len(set) == 0 {
			out = tbl
			return nil
		}
		txn := tbl.NewTransaction()
		if err := txn.SetProperties(set); err != nil {
			return fmt.Errorf("table %s: set properties: %w", name, err)
		}
		out, err = txn.Commit(ctx)
		if err != nil {
			if isConflict(err) {
				return retry.RetryableError(fmt.Errorf("table %s: set properties: %w: %w", name, ErrConflict, err))
			}
			return fmt.Errorf("table %s: set properties: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(changes) == 0 {
		changes = nil
	}
	return out, changes, nil
}
