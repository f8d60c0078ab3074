package storage_test

import (
	"fmt"
	"testing"

	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

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
	}
	for i, props := range refused {
		assert.Error(t, storage.CheckProperties(props), "%v", props)
		assert.Error(t, writeWith(t, cat, fmt.Sprintf("bad.t%d", i), props), "iceberg-go fails on %v too", props)
	}
}
