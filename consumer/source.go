package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// ErrDrained is returned by Source.Receive when a finite source has
// delivered everything and nothing is in flight: the consumer stops.
var ErrDrained = errors.New("queue drained")

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

	handle string // the source's handle of this delivery
}

// Source is a queue of snapshot events. Receive blocks until at least one
// message is there (it returns at most max), ctx is done, or (for finite
// sources) ErrDrained. A
// received message is in flight until it is acknowledged (deleted: its
// work is durable), released (it comes back for another try), or
// dead-lettered. Implementations are safe for concurrent use.
type Source interface {
	Receive(ctx context.Context, max int) ([]*Message, error)
	Ack(ctx context.Context, m *Message) error
	Release(ctx context.Context, m *Message) error
	DeadLetter(ctx context.Context, m *Message, reason string, cause error) error
}

// Delayer is a Source that can release a message to come back only after
// a delay (SQS: its visibility timeout).
type Delayer interface {
	ReleaseAfter(ctx context.Context, m *Message, d time.Duration) error
}

// Extender is a Source whose in-flight messages come back unless they are
// extended: the consumer calls Extend every HeartbeatInterval while a
// message waits or is worked on.
type Extender interface {
	HeartbeatInterval() time.Duration
	Extend(ctx context.Context, m *Message) error
}

// DeadLetter is a message in a dead-letter queue, with why it is there.
type DeadLetter struct {
	Message
	Reason string
	Error  string
	At     time.Time
}

// MemQueue is an in-memory Source for the embedded demo and for tests. It
// redelivers released messages and moves a message to its dead-letter list
// once it has been received MaxReceives times (0: never).
type MemQueue struct {
	MaxReceives int

	mu       sync.Mutex
	ready    []*Message
	inFlight map[string]*Message
	dead     []DeadLetter
	acked    int
	closed   bool
	nextID   int
	wake     chan struct{} // closed and replaced whenever the state changes
}

var _ Source = (*MemQueue)(nil)

// NewMemQueue returns an empty queue.
func NewMemQueue() *MemQueue {
	return &MemQueue{inFlight: map[string]*Message{}, wake: make(chan struct{})}
}

func (q *MemQueue) changed() {
	close(q.wake)
	q.wake = make(chan struct{})
}

// Publish enqueues a message body and returns its id.
func (q *MemQueue) Publish(body []byte) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.nextID++
	id := "m" + strconv.Itoa(q.nextID)
	q.ready = append(q.ready, &Message{ID: id, Body: append([]byte(nil), body...), SentAt: time.Now()})
	q.changed()
	return id
}

// Close says no more messages will be published: once the queue is empty
// and nothing is in flight, Receive returns ErrDrained.
func (q *MemQueue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.changed()
}

// Receive implements Source.
func (q *MemQueue) Receive(ctx context.Context, max int) ([]*Message, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		q.mu.Lock()
		if len(q.ready) > 0 {
			n := min(max, len(q.ready))
			out := make([]*Message, 0, n)
			for _, m := range q.ready[:n] {
				m.ReceiveCount++
				m.handle = m.ID + "#" + strconv.Itoa(m.ReceiveCount)
				q.inFlight[m.handle] = m
				cp := *m
				out = append(out, &cp)
			}
			q.ready = q.ready[n:]
			q.mu.Unlock()
			return out, nil
		}
		if q.closed && len(q.inFlight) == 0 {
			q.mu.Unlock()
			return nil, ErrDrained
		}
		wake := q.wake
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		}
	}
}

func (q *MemQueue) take(m *Message) (*Message, error) {
	orig, ok := q.inFlight[m.handle]
	if !ok {
		return nil, fmt.Errorf("message %s: delivery %q is not in flight", m.ID, m.handle)
	}
	delete(q.inFlight, m.handle)
	q.changed()
	return orig, nil
}

// Ack implements Source.
func (q *MemQueue) Ack(_ context.Context, m *Message) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, err := q.take(m); err != nil {
		return err
	}
	q.acked++
	return nil
}

// Release implements Source.
func (q *MemQueue) Release(_ context.Context, m *Message) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	orig, err := q.take(m)
	if err != nil {
		return err
	}
	if q.MaxReceives > 0 && orig.ReceiveCount >= q.MaxReceives {
		q.dead = append(q.dead, DeadLetter{Message: *orig, Reason: ReasonMaxReceives, At: time.Now()})
		return nil
	}
	q.ready = append(q.ready, orig)
	return nil
}

// DeadLetter implements Source.
func (q *MemQueue) DeadLetter(_ context.Context, m *Message, reason string, cause error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	orig, err := q.take(m)
	if err != nil {
		return err
	}
	dl := DeadLetter{Message: *orig, Reason: reason, At: time.Now()}
	if cause != nil {
		dl.Error = cause.Error()
	}
	q.dead = append(q.dead, dl)
	return nil
}

// Dead returns a copy of the dead-letter list.
func (q *MemQueue) Dead() []DeadLetter {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]DeadLetter(nil), q.dead...)
}

// Acked is the number of messages acknowledged so far.
func (q *MemQueue) Acked() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.acked
}
