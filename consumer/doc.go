// Package consumer is the enricher's queue-agnostic runtime: the snapshot
// event contract, the Source driver interface every queue implements, the
// in-memory queue of the embedded demo and the tests, and Consumer, which
// takes messages from a Source to a Handler and settles each one by the
// class of the handler's error.
//
// What lives where:
//
//	consumer             Message, Source (+ Delayer, Extender), Handler,
//	                     Consumer, MemQueue, SnapshotEvent and its JSON
//	                     Schema, the error classes
//	consumer/pipeline    the Handler of snapshot events: plan, read,
//	                     enrich and write stages on Iceberg and a model;
//	                     replay, status, Prometheus metrics
//	consumer/sqsqueue    the Amazon SQS driver (long-poll Source,
//	                     Publisher, dead-letter tools: stats, peek, redrive)
//	consumer/lambdabatch the AWS Lambda driver: one SQS event batch as a
//	                     Source, partial batch failures
//	consumer/sourcetest  the conformance suite every Source passes
//
// A new queue is a new sub-package with a Source that passes sourcetest;
// nothing here or in pipeline changes. This package imports no queue SDK,
// no Iceberg and no model client.
//
// Delivery: queues deliver at least once; a Handler makes its work
// idempotent (the pipeline's watermark in the target table). Consumer
// acknowledges a message only after Handle returned nil, that is after the
// commits that made its work durable. Otherwise the error's class decides
// (see Classify): a *PermanentError is dead-lettered at once with its
// reason; a *HaltError releases the message untouched and stops the
// consumer, whose Run returns it (every message would fail alike: a wrong
// key, a spent budget); a *RetryAfterError releases the message to come
// back after its wait; anything else comes back after RetryBackoff,
// doubled per receive. Messages of one Handler.Key are handled one after
// the other in the order received; up to Concurrency messages of distinct
// keys at once. While a message waits or is worked on, an Extender source
// gets a heartbeat. On shutdown Consumer stops receiving at once and gives
// the work in flight Grace; then it cancels it and releases its message.
//
// Consumer, MemQueue and the Source implementations are safe for
// concurrent use. Every goroutine Consumer starts is waited for before Run
// returns.
package consumer
