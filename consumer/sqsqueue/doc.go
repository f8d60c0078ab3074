// Package sqsqueue is the Amazon SQS driver of package consumer: Source
// long-polls a standard or FIFO queue (Ack deletes, Release and
// ReleaseAfter change the visibility, Extend is the heartbeat, DeadLetter
// sends the body with enricher-* reason attributes to the dead-letter
// queue and then deletes it); Publisher is the Go API producers call; the
// dead-letter tools (DLQStats, PeekDLQ, Redrive) serve `enricher dlq`.
//
// It talks to SQS only through API, the subset of *sqs.Client it calls,
// and sets OwnBody on every call (see there: an SDK race that can hide a
// received batch). A dead-lettered or redriven message that is sent but
// not deleted (a crash in between) exists twice, never zero times; the
// consumer's work is idempotent, so that costs nothing but a no-op.
package sqsqueue
