// Package pipeline is the Handler of snapshot events: for each job that
// reads the event's table, Processor reads the job's watermark from the
// target table, plans the appended data files between it and the event's
// snapshot, and streams them through three stages linked by bounded
// channels:
//
//	read (one goroutine, owns and closes its channels)
//	  -> enrich (Options.Workers goroutines; batches keep their order)
//	  -> write (one goroutine: commits a chunk of about ChunkRows rows with
//	     the watermark it reaches, then the next)
//
// all under one errgroup, so the first error or a cancellation stops every
// stage; the writer drains and releases whatever is still queued. One
// failure stops them gently instead: a chunk of which the model answered
// nothing because it throttled every request (enrich.ThrottledError). The
// chunks before it are still committed, those after it are abandoned (no
// request sent), and no request on the wire is cut off. A
// redelivered or stale event finds the watermark past it and writes
// nothing. A commit conflict re-plans from the fresh watermark, with
// backoff. Memory in flight is bounded by BatchRows x (2 x Workers + 2)
// rows, whatever the snapshot's size.
//
// Errors leave classified for package consumer (see Classify): a schema
// the job cannot read, an unknown table or job, a snapshot that does not
// exist are permanent; a model that refuses the key or the request, a
// spent token budget, or a target table property that fails every write
// (set by another tool) halts; a chunk the model throttled entirely comes
// back after the server's Retry-After (a plain retry without one); the
// rest are passing.
//
// Replay re-enriches a range of source snapshots in place; Status reports
// where every job stands. pipeline composes enrich and storage and knows
// no queue: it imports no SQS or Lambda package (a test checks it).
package pipeline
