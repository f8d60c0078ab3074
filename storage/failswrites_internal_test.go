package storage

import (
	"fmt"
	"testing"

	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/postdata"
)

// TestFailsWritesIsWhatIcebergGoFailsOn: for each probe of the properties
// failsWrites knows, it blames the table's properties exactly when
// iceberg-go's writer fails to write two posts with them. A false blame
// would halt a consumer whose write failed for another reason; a miss
// would leave a table that fails every write to cycle messages to the DLQ.
func TestFailsWritesIsWhatIcebergGoFailsOn(t *testing.T) {
	t.Parallel()
	cat := sqlCatalog(t)
	codec, level := table.ParquetCompressionKey, table.ParquetCompressionLevelKey
	probes := []map[string]string{
		{table.WriteFormatDefaultKey: "parquet"}, {table.WriteFormatDefaultKey: "PARQUET"},
		{table.WriteFormatDefaultKey: "orc"}, {table.WriteFormatDefaultKey: "avro"},
		{table.ParquetPageVersionKey: "3"}, // refused by CheckProperties, ignored by the writer
		{table.WriteTargetFileSizeBytesKey: "2199023255552"},
		{table.MetadataCompressionKey: "zstd"},
	}
	for _, c := range []string{"zstd", "ZSTD", "snappy", "Snappy", "none", "uncompressed", "gzip", "brotli", "lz4raw", "lz4", "lzo", "bogus", ""} {
		probes = append(probes, map[string]string{codec: c})
	}
	for _, cl := range [][2]string{{"zstd", "-5"}, {"zstd", "22"}, {"zstd", "23"}, {"gzip", "-3"}, {"gzip", "10"},
		{"brotli", "-1"}, {"brotli", "12"}, {"ZSTD", "30"}, {"snappy", "1000"}, {"", "30"}, {"zstd", "x"}} {
		probes = append(probes, map[string]string{codec: cl[0], level: cl[1]})
	}
	probes = append(probes, map[string]string{level: "23"}, map[string]string{level: "3"})
	for _, k := range []string{table.ParquetRowGroupSizeBytesKey, table.ParquetRowGroupLimitKey, table.ParquetPageSizeBytesKey,
		table.ParquetPageRowLimitKey, table.ParquetDictSizeBytesKey} {
		for _, v := range []string{"1", "0", "-1", "abc", "1.5"} {
			probes = append(probes, map[string]string{k: v})
		}
	}
	for _, v := range []string{"31", "32", "134217728", "134217729", "x"} {
		probes = append(probes, map[string]string{table.ParquetBloomFilterMaxBytesKey: v})
	}
	for _, v := range []string{"none", "counts", "full", "FULL", " full ", "truncate(16)", "Truncate(8)", "truncate(0)", "truncate(+8)", "bogus"} {
		probes = append(probes, map[string]string{table.DefaultWriteMetricsModeKey: v},
			map[string]string{"write.metadata.metrics.column.text": v},
			map[string]string{"write.metadata.metrics.column.dropped": v}) // no such column: not read
	}
	blamed := 0
	for i, props := range probes {
		tbl, err := cat.CreateIcebergTable(t.Context(), fmt.Sprintf("probe.t%d", i), postdata.Schema(), props)
		require.NoError(t, err)
		_, _, werr := postdata.Append(t.Context(), tbl, postdata.Sample(2, 1, 1))
		blame := failsWrites(tbl.Schema(), props)
		assert.Equal(t, werr != nil, blame != nil, "%v: the write says %v, failsWrites says %v", props, werr, blame)
		if blame != nil {
			blamed++
		}
	}
	assert.Greater(t, blamed, 20, "the probes fail the writer in many ways")
}
