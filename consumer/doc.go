// Package consumer is the enricher's runtime: the snapshot event contract,
// queue sources (an in-memory queue for the embedded demo and tests), the
// staged pipeline, and the acknowledgement policy.
//
// Delivery: queues deliver at least once; the target holds every source row
// exactly once. For each job reading the event's table, Processor reads the
// job's watermark from the target table, plans the appended data files
// between it and the event's snapshot, and streams them through three
// stages linked by bounded channels:
//
//	read (one goroutine, owns and closes its channels)
//	  -> enrich (Options.Workers goroutines; batches keep their order)
//	  -> write (one goroutine: commits a chunk of about ChunkRows rows with
//	     the watermark it reaches, then the next)
//
// all under one errgroup, so the first error or a cancellation stops every
// stage; the writer drains and releases whatever is still queued. A
// redelivered or stale event finds the watermark past it and writes nothing.
// A commit conflict re-plans from the fresh watermark, with backoff.
//
// Consumer acknowledges a message only after its commits; a message that can
// never succeed (a *PermanentError: bad JSON, unknown table or job, a schema
// the job cannot read) is dead-lettered at once with its reason; anything
// else is released to come back. On shutdown it stops receiving at once and
// gives the message in flight a grace period; what was committed stays
// committed and the redelivery resumes after it.
package consumer
