package storage_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

// committer appends small chunks to a target table as a consumer does,
// one commit (and, with expire, one ExpireSnapshots call) per event,
// without a source table: what a commit costs, alone.
type committer struct {
	tb     testing.TB
	cat    *storage.Catalog
	tgt    *table.Table
	schema *arrow.Schema
	expire bool
	// expireBatch is ExpireOptions.MinExpired (0: the default).
	expireBatch int
	n           int64
}

const committerRows = 10

func newCommitter(tb testing.TB, props map[string]string, expire bool) *committer {
	tb.Helper()
	dir := tb.TempDir()
	cat := testbed.SQLCatalog(tb, dir)
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "post_id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "sentiment", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	tgt, err := cat.CreateTable(tb.Context(), lifeTgt, sc, props)
	require.NoError(tb, err)
	return &committer{tb: tb, cat: cat, tgt: tgt, schema: sc, expire: expire}
}

// commit appends the rows of one event and moves the watermark to it.
func (c *committer) commit() {
	b := array.NewRecordBuilder(memory.DefaultAllocator, c.schema)
	defer b.Release()
	for i := range int64(committerRows) {
		b.Field(0).(*array.Int64Builder).Append(c.n*committerRows + i)
		b.Field(1).(*array.StringBuilder).Append("positive")
	}
	rec := b.NewRecordBatch()
	c.n++
	out, _, err := storage.AppendChunk(c.tb.Context(), c.tgt, &storage.Commit{
		Job: lifeJob, SourceTable: lifeSrc, SpecVersion: "1", After: storage.Cursor{SnapshotID: c.n}, Schema: c.schema,
		Batches: func(yield func(arrow.RecordBatch, error) bool) { yield(rec, nil) },
	})
	require.NoError(c.tb, err)
	c.tgt = out
	if c.expire {
		res, err := storage.ExpireSnapshots(c.tb.Context(), c.tgt, storage.ExpireOptions{MinExpired: c.expireBatch})
		require.NoError(c.tb, err)
		c.tgt = res.Table
	}
}

func (c *committer) health() storage.TableHealth {
	c.tb.Helper()
	h, err := storage.Health(c.tb.Context(), c.tgt)
	require.NoError(c.tb, err)
	return h
}

// With the enricher's defaults and its per-commit expiry, what a commit
// writes and reads stops growing: a bounded number of snapshots in a
// bounded metadata.json, a bounded metadata log, a bounded manifest
// list. (The data files grow, one per commit, until Maintain compacts
// them.) Without them, the same commits make the metadata grow with
// their number.
func TestLongLifeMetadataStaysBounded(t *testing.T) {
	t.Parallel()
	const commits, warmUp = 300, 60
	c := newCommitter(t, storage.TargetProperties(), true)
	var warm storage.TableHealth // the largest seen during the warm-up
	maxSnapshots := storage.DefaultMinSnapshotsToKeep + storage.DefaultExpireBatch - 1
	for i := 1; i <= commits; i++ {
		c.commit()
		if i%10 != 0 {
			continue
		}
		h := c.health()
		require.LessOrEqual(t, h.Snapshots, maxSnapshots, "commit %d", i)
		require.LessOrEqual(t, h.MetadataFiles, storage.DefaultPreviousVersionsMax+1, "commit %d", i)
		require.LessOrEqual(t, h.Manifests, storage.DefaultManifestMinMergeCount, "commit %d", i)
		if i <= warmUp {
			warm.MetadataBytes = max(warm.MetadataBytes, h.MetadataBytes)
			warm.CurrentMetadataBytes = max(warm.CurrentMetadataBytes, h.CurrentMetadataBytes)
			warm.ManifestBytes = max(warm.ManifestBytes, h.ManifestBytes)
			continue
		}
		// Room for longer numbers in the summaries (total-records), not
		// for growth per commit.
		require.LessOrEqual(t, h.MetadataBytes, warm.MetadataBytes*11/10, "commit %d: %+v", i, h)
		require.LessOrEqual(t, h.CurrentMetadataBytes, warm.CurrentMetadataBytes*11/10, "commit %d", i)
		require.Equal(t, int64(i), h.DataFiles, "commit %d", i)
	}
	wm, err := storage.ReadWatermark(c.tgt, lifeJob, lifeSrc)
	require.NoError(t, err)
	assert.Equal(t, storage.Cursor{SnapshotID: commits}, wm.Cursor)
	t.Logf("after %d commits: %+v (warm-up maximum %d metadata bytes)", commits, c.health(), warm.MetadataBytes)

	// The contrast: a table without them after a third of the commits.
	bare := newCommitter(t, nil, false)
	for range commits / 3 {
		bare.commit()
	}
	h := bare.health()
	t.Logf("without the defaults, after %d commits: %+v", commits/3, h)
	assert.Equal(t, commits/3, h.Snapshots)
	assert.Equal(t, commits/3, h.Manifests)
	assert.Greater(t, h.MetadataBytes, 10*warm.MetadataBytes)
}

func TestTargetPropertiesPassTheirOwnCheck(t *testing.T) {
	t.Parallel()
	require.NoError(t, storage.CheckProperties(storage.TargetProperties()))
	require.NoError(t, storage.CheckProperties(storage.SourceProperties()))
	p := storage.TargetProperties()
	p[table.MaxSnapshotAgeMsKey] = strconv.Itoa(60_000)
	require.NoError(t, storage.CheckProperties(p))
	for k, v := range map[string]string{
		"format-version":                     "3",
		"enricher.watermark.x":               "{}",
		table.MinSnapshotsToKeepKey:          "0",
		table.MaxSnapshotAgeMsKey:            "-1",
		table.ManifestMergeEnabledKey:        "yes please",
		table.MetadataPreviousVersionsMaxKey: "ten",
		"":                                   "x",
		table.GCEnabledKey:                   "false",
	} {
		bad := maps.Clone(p)
		bad[k] = v
		assert.Error(t, storage.CheckProperties(bad), fmt.Sprintf("%s=%s", k, v))
	}
	// Values the writers would overflow on: 400 years of snapshot age,
	// an 8 EiB target file.
	for k, v := range map[string]string{
		table.MaxSnapshotAgeMsKey:         "12614400000000",
		table.WriteTargetFileSizeBytesKey: "9223372036854775807",
	} {
		assert.Error(t, storage.CheckProperties(map[string]string{k: v}), "%s=%s", k, v)
	}
	require.NoError(t, storage.CheckProperties(map[string]string{table.MaxSnapshotAgeMsKey: "3153600000000", table.WriteTargetFileSizeBytesKey: "1099511627776",
		table.MaxRefAgeMsKey: "9223372036854775807"})) // Iceberg's own default for refs, kept in milliseconds
	// A name a letter or two from a known property is a typo that would
	// leave the setting it meant unset; a name of the owner's own is fine.
	for typo, want := range map[string]string{
		"history.expire.min-snapshot-to-keep": table.MinSnapshotsToKeepKey,
		"writ.target-file-size-bytes":         table.WriteTargetFileSizeBytesKey,
		"commit.manifest-merge.enable":        table.ManifestMergeEnabledKey,
	} {
		err := storage.CheckProperties(map[string]string{typo: "5"})
		assert.ErrorContains(t, err, "not an Iceberg property; did you mean "+want+"?", typo)
	}
	require.NoError(t, storage.CheckProperties(map[string]string{"owner": "data-team", "comment": "sentiment of posts", table.GCEnabledKey: "true",
		"cdc.enabled": "true", "io.enabled": "true", // a short name of one's own is no typo of gc.enabled
		table.WriteTargetFileSizeBytesKey: "2147483648", table.ManifestTargetSizeBytesKey: "17179869184"})) // sizes past 2 GiB
}

// writeWith creates a table with props and appends two posts to it: what
// the first commit of a target with these properties does.
func writeWith(t *testing.T, cat *storage.Catalog, name string, props map[string]string) error {
	t.Helper()
	tbl, err := cat.CreateIcebergTable(t.Context(), name, postdata.Schema(), props)
	require.NoError(t, err)
	_, _, err = postdata.Append(t.Context(), tbl, postdata.Sample(2, 1, 1))
	return err
}

// TestEveryAcceptedParquetSettingWrites: each writer setting that
// CheckProperties accepts writes a data file, and the values it refuses
// are ones iceberg-go's writer fails on at the first commit (so that a
// target never takes a property that fails every event).
func TestEveryAcceptedParquetSettingWrites(t *testing.T) {
	t.Parallel()
	cat := testbed.SQLCatalog(t, t.TempDir())
	accepted := []map[string]string{
		{table.WriteFormatDefaultKey: "PARQUET"},
		{table.ParquetPageVersionKey: "1"},
		{table.ParquetRowGroupLimitKey: "1", table.ParquetPageRowLimitKey: "1", table.ParquetPageSizeBytesKey: "1", table.ParquetDictSizeBytesKey: "1"},
	}
	for _, codec := range []string{"zstd", "snappy", "gzip", "brotli", "lz4raw", "uncompressed"} {
		accepted = append(accepted, map[string]string{table.ParquetCompressionKey: codec})
	}
	for codec, levels := range map[string][]string{"zstd": {"-1", "-5", "22"}, "gzip": {"-3", "9"}, "brotli": {"-1", "0", "11"}, "snappy": {"1000"}} {
		for _, level := range levels {
			accepted = append(accepted, map[string]string{table.ParquetCompressionKey: codec, table.ParquetCompressionLevelKey: level})
		}
	}
	accepted = append(accepted, map[string]string{table.DefaultWriteMetricsModeKey: "Truncate(8)"},
		map[string]string{table.DefaultWriteMetricsModeKey: "counts", "write.metadata.metrics.column.text": "none"})
	accepted = append(accepted, map[string]string{table.ParquetCompressionLevelKey: "3"}, // zstd, the default codec
		map[string]string{table.ParquetBloomFilterMaxBytesKey: "32"}, map[string]string{table.ParquetBloomFilterMaxBytesKey: "134217728"})
	for i, props := range accepted {
		require.NoError(t, storage.CheckProperties(props), "%v", props)
		assert.NoError(t, writeWith(t, cat, fmt.Sprintf("ok.t%d", i), props), "%v", props)
	}
	refused := []map[string]string{
		{table.WriteFormatDefaultKey: "orc"},
		{table.ParquetCompressionKey: "lzo"},
		{table.ParquetRowGroupLimitKey: "0"},
		{table.ParquetPageSizeBytesKey: "-1"},
		{table.ParquetPageRowLimitKey: "0"},
		{table.ParquetDictSizeBytesKey: "-5"},
		{table.ParquetCompressionKey: "gzip", table.ParquetCompressionLevelKey: "10"},
		{table.ParquetCompressionKey: "zstd", table.ParquetCompressionLevelKey: "23"},
		{table.ParquetCompressionLevelKey: "1000"},
		{table.ParquetCompressionKey: "brotli", table.ParquetCompressionLevelKey: "12"},
		{table.ParquetBloomFilterMaxBytesKey: "31"},
		{table.ParquetBloomFilterMaxBytesKey: "134217729"},
		{table.DefaultWriteMetricsModeKey: "bogus"},
		{"write.metadata.metrics.column.text": "truncate(0)"},
		{table.DefaultWriteMetricsModeKey: "truncate(+8)"},
		{table.ParquetRowGroupSizeBytesKey: "0"},
	}
	for i, props := range refused {
		assert.Error(t, storage.CheckProperties(props), "%v", props)
		assert.Error(t, writeWith(t, cat, fmt.Sprintf("bad.t%d", i), props), "iceberg-go fails on %v too", props)
	}
}

// TestAWriteFailingOnATablePropertyNamesIt: a property another tool set
// on the target that its writers cannot use fails the append and the
// compaction; the error names the property and matches ErrTableProperty
// (the consumer halts on it), and the append works once the property is
// changed. A write that fails for another reason, or is cancelled, blames
// no property, not even a refused value that only snapshot expiry reads.
func TestAWriteFailingOnATablePropertyNamesIt(t *testing.T) {
	t.Parallel()
	c := newCommitter(t, nil, false)
	for range 3 {
		c.commit()
	}
	set := func(props map[string]string) {
		txn := c.tgt.NewTransaction()
		require.NoError(t, txn.SetProperties(props))
		out, err := txn.Commit(t.Context())
		require.NoError(t, err)
		c.tgt = out
	}
	appendRows := func(batches func(yield func(arrow.RecordBatch, error) bool)) error {
		_, _, err := storage.AppendChunk(t.Context(), c.tgt, &storage.Commit{Job: lifeJob, SourceTable: lifeSrc,
			SpecVersion: "2", After: storage.Cursor{SnapshotID: 1 << 30}, Schema: c.schema, Batches: batches})
		return err
	}
	rows := func() func(yield func(arrow.RecordBatch, error) bool) {
		_, batches := c.rowsOf(1<<30, 2)
		return batches
	}

	set(map[string]string{table.ParquetCompressionKey: "lzo"})
	err := appendRows(rows())
	require.ErrorIs(t, err, storage.ErrTableProperty)
	assert.Contains(t, err.Error(), `table social.posts_enriched: append: table property the writers cannot use: property write.parquet.compression-codec="lzo": iceberg-go cannot write lzo; want one of brotli,`)
	err = appendRows(func(yield func(arrow.RecordBatch, error) bool) { yield(nil, context.Canceled) })
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, storage.ErrTableProperty, "a cancelled write blames nothing: shutdown is no halt")
	_, err = c.cat.Maintain(t.Context(), lifeTgt, storage.MaintainOptions{SkipOrphans: true, MinInputFiles: 2})
	require.ErrorIs(t, err, storage.ErrTableProperty, "the compaction writes Parquet too")
	assert.Contains(t, err.Error(), "compaction: rewrite")
	c.tgt, err = c.cat.LoadTable(t.Context(), lifeTgt) // the other steps of Maintain committed
	require.NoError(t, err)

	set(map[string]string{table.ParquetCompressionKey: "zstd", table.GCEnabledKey: "false"})
	lost := errors.New("the source file went away")
	err = appendRows(func(yield func(arrow.RecordBatch, error) bool) { yield(nil, lost) })
	require.ErrorIs(t, err, lost)
	assert.NotErrorIs(t, err, storage.ErrTableProperty, "gc.enabled is no writer's: the write failed on its data")
	require.NoError(t, appendRows(rows()))
}
