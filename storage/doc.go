// Package storage is the enricher's side of Apache Iceberg: opening the
// catalog (iceberg-go's SQL catalog on a sqlite file for the embedded
// default, Glue or REST in AWS), planning the data files that append
// snapshots added after a cursor, streaming them as Arrow batches,
// appending enriched rows to a target table together with the job's
// watermark, replacing rows for a replay, and finding orphaned files.
//
// The watermark (Cursor) lives in the target table's snapshot summary
// (enricher.job, enricher.source-table, enricher.source-snapshot-id and,
// partway through a snapshot, enricher.partial-snapshot-id,
// enricher.partial-files and enricher.partial-rows), written by the same commit as the rows it
// accounts for. AppendChunk pins the target's main branch, so a concurrent
// writer makes the commit fail with ErrConflict instead of appending twice.
//
// Batches yielded by ReadUnits and Rows' underlying scans are the caller's
// to Release; AppendChunk releases the batches it is given. Catalog is safe
// for concurrent use; a *table.Table is an immutable snapshot of metadata.
//
// storage knows nothing of queues or models: it imports neither consumer
// nor enrich.
package storage
