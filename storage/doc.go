// Package storage is the enricher's side of Apache Iceberg: opening the
// catalog (iceberg-go's SQL catalog on a sqlite file for the embedded
// default, Glue or REST in AWS), planning the data files that append
// snapshots added after a cursor, streaming them as Arrow batches,
// appending enriched rows to a target table together with the job's
// watermark, replacing rows for a replay, finding orphaned files, and
// keeping tables that live for years cheap: snapshot expiry, maintenance
// and health.
//
// # Watermarks
//
// The watermark (Cursor) of a job is written by the same commit as the
// rows it accounts for, twice: in the snapshot summary (enricher.job,
// enricher.source-table, enricher.source-snapshot-id and, partway through
// a snapshot, enricher.partial-snapshot-id, enricher.partial-files and
// enricher.partial-rows) and in the table property
// enricher.watermark.<job> (WatermarkProperty: JSON with the source
// table, the cursor, the spec version, the target snapshot and the commit
// time). The property is the record: compaction, manifest rewrites,
// snapshot expiry down to one snapshot and orphan cleanup by anyone leave
// it in place, so ReadWatermark needs no history. It walks the summaries
// only down to the property's snapshot, so that a rollback of the target
// or a commit by an enricher that predates the property is still seen;
// a table written before the property existed is read from its
// summaries until ExpireSnapshots (or the job's next commit) writes it.
// AppendChunk, CommitFiles and ReplaceRows pin the target's main branch,
// so a concurrent writer makes the commit fail with ErrConflict instead
// of appending twice; a commit that loses to maintenance is settled as
// after any conflict (CommitFiles once the watermark is unchanged).
// Every retry of a lost commit, the pipeline's and storage's own, waits
// as ConflictBackoff says.
//
// # Tables that live long
//
// What the wiring does with it:
//
//   - creating a target: CreateTable with TargetProperties() overlaid by
//     the job's target.properties (validate those with CheckProperties);
//     a source created by ingest or demo gets SourceProperties();
//   - starting on an existing target: Catalog.ReconcileProperties with the
//     job's target.properties only (it sets what differs, removes
//     nothing, and returns the changes to log); the defaults are not
//     forced onto a table its owner configured;
//   - after every commit (AppendChunk, CommitFiles, ReplaceRows):
//     ExpireSnapshots with the committed table, and carry on with
//     ExpireResult.Table. It is a no-op in memory until
//     DefaultExpireBatch snapshots can go, honours the table's
//     history.expire.* properties (RetentionOf; defaults
//     DefaultMinSnapshotsToKeep and DefaultMaxSnapshotAge), and reports a
//     lost race as Conflict, not as an error. Its error is not the
//     commit's: log it and go on;
//   - `enricher maintain`: Catalog.Maintain (compaction, manifest
//     rewrite, expiry, orphan cleanup; MaintainReport has before and
//     after); safe while consumers commit. MaintenanceDue says, from the
//     metadata in memory, whether a run is due (to run it on its own);
//   - `status`: Health (snapshots, metadata bytes, manifests, data files
//     and their mean size, last maintenance, retention).
//
// # Resync
//
// When incremental reads cannot catch up:
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
