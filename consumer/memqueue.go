package consumer

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/socialdata/enricher/internal/broadcast"
)

// MemQueue is an in-memory Source for the embedded demo and for tests. It
// redelivers released messages (after their delay, if released with
// ReleaseAfter) and moves a message to its dead-letter list once it has
// been received MaxReceives times (0: never).
type MemQueue struct {
	MaxReceives int

	mu       sync.Mutex
	ready    []*Message
	delayed  []delayed
	inFlight map[string]*Message
	dead     []DeadLetter
	acked    int
	closed   bool
	nextID   int
	changed  broadcast.Signal
}

// delayed is a released message that comes back at due.
type delayed struct {
	m   *Message
	due time.Time
}

var (
	_ Source  = (*MemQueue)(nil)
	_ Delayer = (*MemQueue)(nil)
)

// NewMemQueue returns an empty queue.
func NewMemQueue() *MemQueue {
	return &MemQueue{inFlight: map[string]*Message{}}
}

// Publish enqueues a message body and returns its id.
func (q *MemQueue) Publish(body []byte) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.nextID++
	id := "m" + strconv.Itoa(q.nextID)
	q.ready = append(q.ready, &Message{ID: id, Body: append([]byte(nil), body...), SentAt: time.Now()})
	q.changed.Notify()
	return id
}

// Close says no more messages will be published: once the queue is empty
// and nothing is in flight or delayed, Receive returns ErrDrained.
func (q *MemQueue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.changed.Notify()
}

// promote moves the delayed messages that are due to the ready list and
// returns when the next one is due (zero: none is delayed).
func (q *MemQueue) promote(now time.Time) time.Time {
	var next time.Time
	kept := q.delayed[:0]
	for _, d := range q.delayed {
		if !d.due.After(now) {
			q.ready = append(q.ready, d.m)
			continue
		}
		kept = append(kept, d)
		if next.IsZero() || d.due.Before(next) {
			next = d.due
		}
	}
	clear(q.delayed[len(kept):])
	q.delayed = kept
	return next
}

// Receive implements Source.
func (q *MemQueue) Receive(ctx context.Context, limit int) ([]*Message, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		q.mu.Lock()
		next := q.promote(time.Now())
		if len(q.ready) > 0 {
			n := min(max(limit, 1), len(q.ready))
			out := make([]*Message, 0, n)
			for _, m := range q.ready[:n] {
				m.ReceiveCount++
				m.Receipt = m.ID + "#" + strconv.Itoa(m.ReceiveCount)
				q.inFlight[m.Receipt] = m
				cp := *m
				out = append(out, &cp)
			}
			q.ready = q.ready[n:]
			q.mu.Unlock()
			return out, nil
		}
		if q.closed && len(q.inFlight) == 0 && len(q.delayed) == 0 {
			q.mu.Unlock()
			return nil, ErrDrained
		}
		wake := q.changed.C()
		q.mu.Unlock()
		var due <-chan time.Time
		var timer *time.Timer
		if !next.IsZero() {
			timer = time.NewTimer(time.Until(next))
			due = timer.C
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-due:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

func (q *MemQueue) take(m *Message) (*Message, error) {
	orig, ok := q.inFlight[m.Receipt]
	if !ok {
		return nil, fmt.Errorf("message %s: %w: delivery %q was settled already, or not received from this queue", m.ID, ErrNotInFlight, m.Receipt)
	}
	delete(q.inFlight, m.Receipt)
	q.changed.Notify()
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
func (q *MemQueue) Release(ctx context.Context, m *Message) error {
	return q.ReleaseAfter(ctx, m, 0)
}

// ReleaseAfter implements Delayer.
func (q *MemQueue) ReleaseAfter(_ context.Context, m *Message, d time.Duration) error {
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
	if d > 0 {
		q.delayed = append(q.delayed, delayed{m: orig, due: time.Now().Add(d)})
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
