package consumer

import (
	"context"
	"errors"
	"time"
)

// ErrDrained is returned by Source.Receive when a finite source has
// delivered everything and nothing is in flight: the consumer stops.
var ErrDrained = errors.New("queue drained")

// ErrNotInFlight is wrapped by the error of a Source's Ack, Release,
// ReleaseAfter or DeadLetter (and Extend) when the delivery it is given is
// not in flight: it was settled already, or its delivery expired, or it
// was not received from this source.
var ErrNotInFlight = errors.New("delivery not in flight")

// ErrNotDeadLettered is wrapped by a Source's DeadLetter error when the
// message did not reach a dead-letter queue (there is none, or the send
// failed): it comes back, and counts as released.
var ErrNotDeadLettered = errors.New("not dead-lettered")

// Message is one delivery of a queue message.
type Message struct {
	// ID identifies the message in its queue.
	ID string
	// Body is the message payload, a SnapshotEvent in JSON.
	Body []byte
	// ReceiveCount is how many times the message has been delivered,
	// this delivery included.
	ReceiveCount int
	// SentAt is when the message was first sent, if the queue knows.
	SentAt time.Time
	// GroupID is the FIFO message group, if any.
	GroupID string
	// Attributes are the message's string attributes, if any.
	Attributes map[string]string
	// Receipt identifies this delivery to the Source that made it (an SQS
	// receipt handle): opaque to everything else, and set by the Source.
	Receipt string
}

// Source is a queue of messages: the driver interface a queue implements
// to feed a Consumer. Implementations are safe for concurrent use, and
// every implementation passes the conformance suite in
// consumer/sourcetest.
//
// A received message is in flight until exactly one of Ack, Release or
// DeadLetter settles it; settling a message that is not in flight (twice,
// or after its delivery expired) is an error, never a panic: the error
// wraps ErrNotInFlight, and the source carries on as if the call had not
// been made.
type Source interface {
	// Receive blocks until at least one message is there and returns at
	// most max of them (max >= 1). It returns ctx's error when ctx is done
	// first and, for a finite source, ErrDrained once everything was
	// delivered and settled. Messages of one FIFO group come in order.
	Receive(ctx context.Context, max int) ([]*Message, error)
	// Ack deletes m: its work is durable. The message never comes back
	// (at-least-once queues may still deliver a duplicate, which the work
	// must tolerate).
	Ack(ctx context.Context, m *Message) error
	// Release hands m back to come again at once, for another try.
	Release(ctx context.Context, m *Message) error
	// DeadLetter moves m out of the queue for good, keeping reason (one of
	// the Reason constants) and cause's text with it for operators. A
	// source without a dead-letter queue releases m and says so in its
	// error. An error that wraps ErrNotDeadLettered says m is not in the
	// dead-letter queue (none, or it refused m): m comes back; any other
	// error says m is there but a later step failed (its delete: a
	// duplicate may follow), unless it wraps ErrNotInFlight: m was not in
	// flight, and nothing was sent (if it also wraps ErrNotDeadLettered,
	// m's delivery expired and m comes back).
	DeadLetter(ctx context.Context, m *Message, reason string, cause error) error
}

// Delayer is a Source that can release a message to come back only after
// a delay (SQS: its visibility timeout).
type Delayer interface {
	// ReleaseAfter settles m like Release, but m comes back after d at the
	// earliest (a source may round d, and caps it at its own maximum).
	ReleaseAfter(ctx context.Context, m *Message, d time.Duration) error
}

// Extender is a Source whose in-flight messages come back unless they are
// extended: the consumer calls Extend every HeartbeatInterval while a
// message waits or is worked on.
type Extender interface {
	HeartbeatInterval() time.Duration
	// Extend keeps m in flight for another visibility timeout from now. A
	// message not in flight (settled, or its delivery expired) is not
	// extended: the error wraps ErrNotInFlight.
	Extend(ctx context.Context, m *Message) error
}

// DeadLetter is a message in a dead-letter queue, with why it is there.
type DeadLetter struct {
	Message
	Reason string
	Error  string
	At     time.Time
}
