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
// Resync (when incremental reads cannot catch up):
//
//   - CheckHistory(src, cursor) error: nil while src's current history
//     still reaches the cursor. Otherwise a *HistoryError, which matches
//     ErrNotAncestor, and also ErrHistoryExpired when snapshot expiry cut
//     the history (the cursor's snapshot is gone and the oldest snapshot
//     held names an expired parent; for the zero Cursor, any cut). A
//     snapshot the table never held, behind a whole history, is another
//     table's (Held and Expired false); one held off the current line is
//     a rollback (Held). PlanAppends fails with the same error, so a
//     consumer can dead-letter ErrHistoryExpired with its own reason.
//   - Plan.Skipped() lists the overwrite, delete and replace snapshots a
//     plan passes over; SnapshotInfo.AddedRecords / DeletedRecords are
//     their summaries' added-records / deleted-records and
//     Plan.SkippedRows() the rows they added that the plan does not read
//     (replace snapshots count none; a copy-on-write rewrite counts the
//     rows it kept too, so it is an upper bound).
//   - FindMissingRows(ctx, src, tgt, AntiJoinOptions) (*MissingRows, error)
//     finds the rows of src's current snapshot whose key (Key, a long or
//     string column) has no row in tgt (nil: no target yet), in bounded
//     memory: the target's keys are held in an exact set while they fit in
//     half of MemoryBytes, else hash-partitioned (with the source's keys
//     and row positions) to spill files under TempDir and joined one
//     partition at a time. The result is a bitmap of missing row positions
//     (at most one bit per source row); the spill files are gone when it
//     returns. MissingRows.Batches(ctx) streams those rows, projected to
//     Columns, reading only the data files that hold them; Stats() counts
//     rows, keys, partitions and spill bytes, and SourceSnapshotID is the
//     snapshot the rows come from: once they are enriched and committed,
//     the watermark moves there. Duplicate keys: each source row of a
//     missing key is yielded once. Null source keys are refused with
//     ErrNullKey (before any row is yielded) unless NullKeys is
//     NullKeysSkip, which passes over and counts them; null target keys
//     match nothing and are counted. Keys are compared exactly, never by
//     a probabilistic filter. Run it again after a commit conflict: rows
//     another writer committed meanwhile are then found present.
//
// Batches yielded by ReadUnits and Rows' underlying scans are the caller's
// to Release; AppendChunk releases the batches it is given. Catalog is safe
// for concurrent use; a *table.Table is an immutable snapshot of metadata.
//
// storage knows nothing of queues or models: it imports neither consumer
// nor enrich.
package storage
