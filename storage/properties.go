package storage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/iceberg-go"
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
// uuid, ...), one of the enricher's own (enricher.*), a name one or two
// letters away from a known Iceberg property (a typo would leave the
// setting it meant unset), or a value that the table's writers would
// reject at the first commit or that would stop expiry and orphan cleanup
// (history.expire.*, the metadata, manifest and Parquet writer knobs,
// write.format.default, gc.enabled=false).
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
		if strings.HasPrefix(k, "write.metadata.metrics.column.") {
			if err := checkMetricsMode(v); err != nil {
				return fmt.Errorf("property %s=%q: %w", k, v, err)
			}
			continue
		}
		if near := nearestKnown(k); near != "" {
			return fmt.Errorf("property %s: not an Iceberg property; did you mean %s?", k, near)
		}
		if err := checkValue(k, v, props); err != nil {
			return fmt.Errorf("property %s=%q: %w", k, v, err)
		}
	}
	return nil
}

// knownProperties are the Iceberg table properties iceberg-go reads, and
// the legacy names of the expiry ones.
var knownProperties = []string{
	table.WriteDataPathKey, table.WriteMetadataPathKey, table.WriteMetadataLocationKey,
	table.WriteObjectStorePartitionedPathsKey, table.ObjectStoreEnabledKey,
	table.ReadSplitTargetSizeKey, table.ReadManifestListCacheEnabledKey, table.ReadSplitPlanningLookbackKey,
	table.ReadSplitOpenFileCostKey, table.DefaultNameMappingKey, table.DefaultWriteMetricsModeKey,
	table.ParquetRowGroupSizeBytesKey, table.ParquetRowGroupLimitKey, table.ParquetPageSizeBytesKey,
	table.ParquetPageRowLimitKey, table.ParquetDictSizeBytesKey, table.ParquetPageVersionKey,
	table.ParquetCompressionKey, table.ParquetCompressionLevelKey, table.ParquetBloomFilterMaxBytesKey,
	table.ManifestMergeEnabledKey, table.ManifestTargetSizeBytesKey, table.ManifestMinMergeCountKey,
	table.ManifestMergeMaxConcurrencyKey, table.WritePartitionSummaryLimitKey, table.WriteDeleteModeKey,
	table.MetadataDeleteAfterCommitEnabledKey, table.MetadataPreviousVersionsMaxKey, table.MetadataCompressionKey,
	table.WriteFormatDefaultKey, table.WriteTargetFileSizeBytesKey, table.GCEnabledKey,
	table.MinSnapshotsToKeepKey, table.MaxSnapshotAgeMsKey, table.MaxRefAgeMsKey,
	"min-snapshots-to-keep", "max-snapshot-age-ms", "max-ref-age-ms",
	table.CommitNumRetriesKey, table.CommitMinRetryWaitMsKey, table.CommitMaxRetryWaitMsKey,
	table.CommitTotalRetryTimeoutMsKey,
}

// nearestKnown is the known property k is a typo of: one at most two
// edits away (one for a name under 20 characters) that is not k itself; "" for a known name or one far from
// every known name (a property of the owner's own, such as "owner").
func nearestKnown(k string) string {
	if slices.Contains(knownProperties, k) {
		return ""
	}
	for _, p := range knownProperties {
		// Two edits for a long name, one for a short one: "cdc.enabled"
		// is not a typo of "gc.enabled".
		d := 1
		if len(p) >= 20 {
			d = 2
		}
		if editDistance(k, p, d) <= d {
			return p
		}
	}
	return ""
}

// editDistance is the Levenshtein distance of a and b, or max+1 once it
// is known to exceed max.
func editDistance(a, b string, max int) int {
	if d := len(a) - len(b); d > max || -d > max {
		return max + 1
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		best := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			best = min(best, cur[j])
		}
		if best > max {
			return max + 1
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// parquetCodecs are the write.parquet.compression-codec values iceberg-go
// writes with (TestEveryAcceptedParquetSettingWrites writes a file with
// each); lzo and lz4 are in its list but arrow-go writes neither, and an
// unknown name falls back to uncompressed with a warning.
var parquetCodecs = map[string]compress.Compression{
	"zstd": compress.Codecs.Zstd, "snappy": compress.Codecs.Snappy, "gzip": compress.Codecs.Gzip,
	"brotli": compress.Codecs.Brotli, "lz4raw": compress.Codecs.Lz4Raw, "uncompressed": compress.Codecs.Uncompressed,
}

// Bounds of the property values the writers do arithmetic with.
const (
	maxTargetBytes = 1 << 40
	maxAgeMs       = 100 * 365 * 24 * 3600 * 1000
)

// checkMetricsMode checks a write.metadata.metrics value as iceberg-go
// reads it: none, counts, full or truncate(N) with N at least 1.
func checkMetricsMode(v string) error {
	m := strings.ToLower(strings.TrimSpace(v))
	if m == "none" || m == "counts" || m == "full" {
		return nil
	}
	if n, ok := strings.CutPrefix(m, "truncate("); ok {
		if n, ok := strings.CutSuffix(n, ")"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
			if k, err := strconv.Atoi(n); err == nil && k >= 1 {
				return nil // digits only, as iceberg-go's pattern truncate\((\d+)\)
			}
		}
	}
	return fmt.Errorf("want none, counts, full or truncate(N) with N at least 1")
}

// compressionLevels are the levels iceberg-go's writer takes per codec
// (ValidateParquetWriteProperties in its table/internal); the other codecs
// ignore the level.
var compressionLevels = map[string][2]int{"gzip": {-3, 9}, "zstd": {-5, 22}, "brotli": {0, 11}}

// checkValue checks the value of the properties whose meaning the
// enricher relies on or that the writers would reject; props is the
// whole set (the compression level depends on the codec).
func checkValue(k, v string, props map[string]string) error {
	switch k {
	case table.MetadataDeleteAfterCommitEnabledKey, table.ManifestMergeEnabledKey:
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("want true or false")
		}
	case table.GCEnabledKey:
		gc, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false")
		}
		if !gc {
			return fmt.Errorf("false stops snapshot expiry and orphan cleanup, and with them the bounded metadata of a table that takes an event a minute")
		}
	case table.MetadataPreviousVersionsMaxKey, table.ManifestMinMergeCountKey, table.MinSnapshotsToKeepKey,
		table.ParquetRowGroupSizeBytesKey, table.ParquetRowGroupLimitKey, table.ParquetPageSizeBytesKey,
		table.ParquetPageRowLimitKey, table.ParquetDictSizeBytesKey:
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 1 {
			return fmt.Errorf("want a whole number of at least 1")
		}
	case table.ManifestTargetSizeBytesKey, table.WriteTargetFileSizeBytesKey:
		// Compaction works out 180% of the target size: past a TiB it
		// would overflow, and no file is that large.
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 1 || n > maxTargetBytes {
			return fmt.Errorf("want a whole number of bytes from 1 to %d (1 TiB)", maxTargetBytes)
		}
	case table.ParquetBloomFilterMaxBytesKey:
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 32 || n > 128<<20 {
			return fmt.Errorf("want a whole number of bytes from 32 to %d", 128<<20)
		}
	case table.MaxSnapshotAgeMsKey:
		// The enricher's expiry works in nanoseconds (time.Duration): past
		// 292 years of milliseconds the age overflowed and every expiry
		// failed.
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 0 || n > maxAgeMs {
			return fmt.Errorf("want a whole number of milliseconds from 0 to %d (100 years)", maxAgeMs)
		}
	case table.DefaultWriteMetricsModeKey:
		if err := checkMetricsMode(v); err != nil {
			return err
		}
	case table.WriteFormatDefaultKey:
		if !strings.EqualFold(v, "parquet") {
			return fmt.Errorf("iceberg-go writes Parquet only")
		}
	case table.ParquetPageVersionKey:
		if v != "1" && v != "2" {
			return fmt.Errorf("want 1 or 2")
		}
	case table.MetadataCompressionKey:
		if v != "none" && v != "gzip" {
			return fmt.Errorf("want none or gzip")
		}
	case table.ParquetCompressionKey:
		if _, ok := parquetCodecs[v]; !ok {
			return fmt.Errorf("want one of %s", strings.Join(slices.Sorted(maps.Keys(parquetCodecs)), ", "))
		}
	case table.ParquetCompressionLevelKey:
		level, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("want a whole number")
		}
		// The codec as the writer reads it: an empty one is not the
		// default.
		name, ok := props[table.ParquetCompressionKey]
		if !ok {
			name = table.ParquetCompressionDefault
		}
		if r, ok := compressionLevels[name]; ok && level != -1 && (level < r[0] || level > r[1]) {
			return fmt.Errorf("%s takes levels %d to %d, or -1 for its default", name, r[0], r[1])
		}
	}
	return nil
}

// ErrTableProperty is matched (errors.Is) by a write that failed on a
// table holding a property its writers cannot use: a value another tool
// set (the job's target.properties are checked when the spec loads).
// Every write to the table fails alike until the property is changed.
var ErrTableProperty = errors.New("table property the writers cannot use")

// writeFailed is the error of a data write (what) to tbl that failed with
// err. When a property of tbl holds a value that iceberg-go's Parquet
// writer fails on (failsWrites), the error names it and wraps
// ErrTableProperty: it, not the data, is why the write failed. A
// cancelled write blames nothing.
func writeFailed(what string, tbl *table.Table, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if perr := failsWrites(tbl.Schema(), tbl.Properties()); perr != nil {
		return fmt.Errorf("%s: %w: %w; every write fails until the property is changed on the table (or set in the job's target.properties, which the consumer and `enricher maintain` apply): %w",
			what, ErrTableProperty, perr, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// failsWrites reports the first property of props (in key order) whose
// value iceberg-go's Parquet writer fails on, and why. It is narrower
// than CheckProperties, which also refuses values the writer takes but
// should not be given (a codec it does not know, which it writes
// uncompressed; a page version it ignores): blaming a property for a
// write that failed for another reason would halt a consumer on a passing
// error. The writer reads a column's metrics mode only for a column of
// the table's schema sc: an override left for a dropped column is not
// blamed. TestFailsWritesIsWhatIcebergGoFailsOn holds it to the writer.
func failsWrites(sc *iceberg.Schema, props map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(props)) {
		v := props[k]
		var err error
		col, isColumn := strings.CutPrefix(k, "write.metadata.metrics.column.")
		switch {
		case isColumn:
			if _, ok := sc.FindFieldByName(col); ok {
				err = checkMetricsMode(v)
			}
		case k == table.ParquetCompressionKey:
			if v == "lzo" || v == "lz4" {
				err = fmt.Errorf("iceberg-go cannot write %s; want one of %s", v, strings.Join(slices.Sorted(maps.Keys(parquetCodecs)), ", "))
			}
		case k == table.DefaultWriteMetricsModeKey, k == table.ParquetCompressionLevelKey, k == table.WriteFormatDefaultKey,
			k == table.ParquetRowGroupSizeBytesKey, k == table.ParquetRowGroupLimitKey,
			k == table.ParquetPageSizeBytesKey, k == table.ParquetPageRowLimitKey, k == table.ParquetDictSizeBytesKey,
			k == table.ParquetBloomFilterMaxBytesKey:
			err = checkValue(k, v, props)
		}
		if err != nil {
			return fmt.Errorf("property %s=%q: %w", k, v, err)
		}
	}
	return nil
}

// checkOn checks want as it would be on a table that holds have: a value
// whose meaning depends on another property (a compression level on the
// codec) is checked against what the table would then hold.
func checkOn(have, want map[string]string) error {
	merged := maps.Clone(have)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, want)
	keys := slices.Sorted(maps.Keys(want))
	if _, ok := want[table.ParquetCompressionKey]; ok {
		if _, ok := merged[table.ParquetCompressionLevelKey]; ok {
			keys = append(keys, table.ParquetCompressionLevelKey) // the table's level on the new codec
		}
	}
	for _, k := range keys {
		if err := checkValue(k, merged[k], merged); err != nil {
			return fmt.Errorf("property %s=%q on this table: %w", k, merged[k], err)
		}
	}
	return nil
}

// ReconcileProperties sets on the table name every property of want whose
// value differs (or that is unset), in one commit, and reports what it
// changed, in key order. It never removes a property; nothing is
// committed when nothing differs. A commit that loses to another writer
// is retried on the reloaded table. It returns the table as it is after.
// A wanted value that what the table holds makes unusable (a compression
// level for the table's codec) is refused with ErrTableProperty.
func (c *Catalog) ReconcileProperties(ctx context.Context, name string, want map[string]string) (*table.Table, []PropertyChange, error) {
	if err := CheckProperties(want); err != nil {
		return nil, nil, fmt.Errorf("table %s: %w", name, err)
	}
	var (
		out     *table.Table
		changes []PropertyChange
	)
	err := c.onReloaded(ctx, name, ConflictBackoff(0, 0), func(ctx context.Context, tbl *table.Table) error {
		have := tbl.Properties()
		if err := checkOn(have, want); err != nil {
			// What the table holds makes a wanted value unusable: every
			// start fails alike until one of them is changed.
			return fmt.Errorf("table %s: %w: %w", name, ErrTableProperty, err)
		}
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
		var err error
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
