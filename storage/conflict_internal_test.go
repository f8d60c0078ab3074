package storage

import (
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sqlCatalog is a SQL catalog in a temporary folder, closed when the test
// ends: testbed.SQLCatalog for the tests inside the package, which cannot
// import testbed (it imports storage).
func sqlCatalog(t *testing.T) *Catalog {
	t.Helper()
	dir := t.TempDir()
	cat, err := OpenCatalog(t.Context(), CatalogConfig{Type: CatalogSQL, URI: filepath.Join(dir, "catalog.db"), Warehouse: filepath.Join(dir, "wh")})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, cat.Close()) })
	return cat
}

// TestStaleHandleConflictIsTextOnly pins the iceberg-go behaviour that
// isConflict works around: on the SQL catalog, an append pinned to the
// head a stale table handle saw (as AppendChunk pins it) fails with
// "requirement failed: ..." that wraps neither table.ErrCommitFailed nor
// table.ErrCommitDiverged.
func TestStaleHandleConflictIsTextOnly(t *testing.T) {
	t.Parallel()
	cat := sqlCatalog(t)
	sc := iceberg.NewSchema(0, iceberg.NestedField{ID: 1, Name: "id", Type: iceberg.PrimitiveTypes.Int64, Required: true})
	fresh, err := cat.CreateIcebergTable(t.Context(), "ns.t", sc, nil)
	require.NoError(t, err)
	stale, err := cat.LoadTable(t.Context(), "ns.t")
	require.NoError(t, err)

	appendPinned := func(h *table.Table) error {
		asc := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}}, nil)
		b := array.NewRecordBuilder(memory.DefaultAllocator, asc)
		defer b.Release()
		b.Field(0).(*array.Int64Builder).Append(1)
		rec := b.NewRecordBatch()
		defer rec.Release()
		rdr, err := array.NewRecordReader(asc, []arrow.RecordBatch{rec})
		require.NoError(t, err)
		defer rdr.Release()
		txn := h.NewTransaction()
		require.NoError(t, txn.AssertRefSnapshotID(table.MainBranch))
		require.NoError(t, txn.Append(t.Context(), rdr, nil))
		_, err = txn.Commit(t.Context())
		return err
	}
	require.NoError(t, appendPinned(fresh))
	err = appendPinned(stale)
	require.Error(t, err, "a stale handle must not commit")
	assert.NotErrorIs(t, err, table.ErrCommitFailed, "iceberg-go now wraps ErrCommitFailed here: drop the text match in isConflict")
	assert.NotErrorIs(t, err, table.ErrCommitDiverged)
	assert.Contains(t, err.Error(), "requirement failed")
	assert.True(t, isConflict(err))
}
