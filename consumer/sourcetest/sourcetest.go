// Package sourcetest is the conformance suite of consumer.Source: every
// queue driver (the in-memory queue, SQS, the Lambda batch) runs it, so
// that the Consumer can rely on the contract written on the interface.
//
// A driver's test calls Run with a Harness that makes a fresh source
// holding given message bodies (and, if its deliveries expire, with the
// Expiring option).
package sourcetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
)

// Fixture is a fresh source and what the suite needs to see of its queue.
type Fixture struct {
	Source consumer.Source
	// Redelivers says a released message comes back from this Source (a
	// Lambda batch hands it back to SQS instead, through its response).
	Redelivers bool
	// Finite says Receive returns consumer.ErrDrained once every message
	// was delivered and settled.
	Finite bool
	// FIFO says the source has FIFO message groups. The group of a body is
	// the text before its first "/" ("a/1" and "a/2" are of group "a"); a
	// body without one is a group of its own.
	FIFO bool
	// Visibility is how long a delivery stays in flight unless it is
	// settled or extended (zero: until it is settled). The fixtures of an
	// Expiring harness set it.
	Visibility time.Duration
	// DeadLetters returns the messages dead-lettered so far: body -> the
	// reason of each copy in the dead-letter queue.
	DeadLetters func(t *testing.T) map[string][]string
	// HandedBack returns the bodies a non-redelivering source hands back
	// to its queue (nil when Redelivers).
	HandedBack func(t *testing.T) []string
}

// Harness makes a fixture whose source holds bodies, in this order.
type Harness func(t *testing.T, bodies []string) Fixture

// Option adds to what Run tests.
type Option func(*options)

type options struct {
	expiring Harness
}

// Expiring gives Run a harness of sources like the harness's, but whose
// deliveries expire: a message neither settled nor extended within the
// fixture's Visibility (short: a second or two) comes back. The clauses on
// expiry and on consumer.Extender run on its fixtures; without it they are
// skipped, and a source that is a consumer.Extender fails.
func Expiring(h Harness) Option { return func(o *options) { o.expiring = h } }

// Run runs every conformance test on the sources h makes.
func Run(t *testing.T, h Harness, opts ...Option) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	t.Run("ReceivesEveryMessageOnce", func(t *testing.T) { t.Parallel(); testReceive(t, h) })
	t.Run("ReceiveHonoursMax", func(t *testing.T) { t.Parallel(); testMax(t, h) })
	t.Run("AckedMessagesDoNotComeBack", func(t *testing.T) { t.Parallel(); testAck(t, h) })
	t.Run("ReleasedMessagesComeBack", func(t *testing.T) { t.Parallel(); testRelease(t, h) })
	t.Run("DeadLettersKeepTheirReason", func(t *testing.T) { t.Parallel(); testDeadLetter(t, h) })
	t.Run("ReceiveStopsWithItsContext", func(t *testing.T) { t.Parallel(); testCancel(t, h) })
	t.Run("ConcurrentUse", func(t *testing.T) { t.Parallel(); testConcurrent(t, h) })
	t.Run("DelayedReleaseComesBackLater", func(t *testing.T) { t.Parallel(); testDelay(t, h) })
	t.Run("SettlingTwiceIsAnError", func(t *testing.T) { t.Parallel(); testSettleTwice(t, h) })
	t.Run("FIFOGroupsComeInOrder", func(t *testing.T) { t.Parallel(); testFIFOOrder(t, h) })
	t.Run("FIFOReleasedMessageComesBeforeTheRestOfItsGroup", func(t *testing.T) { t.Parallel(); testFIFORelease(t, h) })
	t.Run("ExpiredDeliveryIsNotInFlight", func(t *testing.T) { t.Parallel(); testExpired(t, h, o) })
	t.Run("ExtendedMessageStaysInFlight", func(t *testing.T) { t.Parallel(); testExtend(t, h, o) })
}

const timeout = 30 * time.Second

// receiveN receives until it has n messages.
func receiveN(t *testing.T, src consumer.Source, n int) []*consumer.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []*consumer.Message
	for len(out) < n {
		msgs, err := src.Receive(ctx, n-len(out))
		require.NoError(t, err, "received %d of %d", len(out), n)
		out = append(out, msgs...)
	}
	return out
}

// requireEmpty checks that nothing is delivered within wait (or that a
// finite source is drained).
func requireEmpty(t *testing.T, f Fixture, wait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	msgs, err := f.Source.Receive(ctx, 10)
	require.Empty(t, msgs)
	if f.Finite && errors.Is(err, consumer.ErrDrained) {
		return
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func bodies(msgs []*consumer.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Body)
	}
	slices.Sort(out)
	return out
}

func testReceive(t *testing.T, h Harness) {
	want := []string{"a", "b", "c", "d", "e"}
	f := h(t, want)
	msgs := receiveN(t, f.Source, len(want))
	assert.Equal(t, want, bodies(msgs))
	ids := map[string]bool{}
	for _, m := range msgs {
		assert.NotEmpty(t, m.ID)
		assert.False(t, ids[m.ID], "ids are unique")
		ids[m.ID] = true
		assert.GreaterOrEqual(t, m.ReceiveCount, 1, "ReceiveCount counts this delivery")
		require.NoError(t, f.Source.Ack(context.Background(), m))
	}
	requireEmpty(t, f, 2*time.Second)
}

func testMax(t *testing.T, h Harness) {
	f := h(t, []string{"1", "2", "3", "4"})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	msgs, err := f.Source.Receive(ctx, 1)
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	rest := receiveN(t, f.Source, 3)
	for _, m := range append(msgs, rest...) {
		require.NoError(t, f.Source.Ack(context.Background(), m))
	}
}

func testAck(t *testing.T, h Harness) {
	f := h(t, []string{"x"})
	m := receiveN(t, f.Source, 1)[0]
	require.NoError(t, f.Source.Ack(context.Background(), m))
	requireEmpty(t, f, 2*time.Second)
	if f.DeadLetters != nil {
		assert.Empty(t, f.DeadLetters(t))
	}
}

func testRelease(t *testing.T, h Harness) {
	f := h(t, []string{"again"})
	m := receiveN(t, f.Source, 1)[0]
	require.NoError(t, f.Source.Release(context.Background(), m))
	if !f.Redelivers {
		assert.Equal(t, []string{"again"}, f.HandedBack(t), "a released message goes back to its queue")
		requireEmpty(t, f, time.Second)
		return
	}
	again := receiveN(t, f.Source, 1)[0]
	assert.Equal(t, m.ID, again.ID)
	assert.Equal(t, "again", string(again.Body))
	assert.Greater(t, again.ReceiveCount, m.ReceiveCount)
	require.NoError(t, f.Source.Ack(context.Background(), again))
}

func testDeadLetter(t *testing.T, h Harness) {
	f := h(t, []string{"poison", "fine"})
	msgs := receiveN(t, f.Source, 2)
	for _, m := range msgs {
		if string(m.Body) == "poison" {
			require.NoError(t, f.Source.DeadLetter(context.Background(), m, consumer.ReasonBadMessage, errors.New("not json")))
		} else {
			require.NoError(t, f.Source.Ack(context.Background(), m))
		}
	}
	requireEmpty(t, f, 2*time.Second)
	assert.Equal(t, map[string][]string{"poison": {consumer.ReasonBadMessage}}, f.DeadLetters(t))
	if !f.Redelivers {
		assert.Empty(t, f.HandedBack(t), "a dead-lettered message is not handed back")
	}
}

func testCancel(t *testing.T, h Harness) {
	f := h(t, []string{"held"})
	m := receiveN(t, f.Source, 1)[0]
	// Nothing is left to receive but m is in flight: Receive waits, and
	// must stop with its context.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := f.Source.Receive(ctx, 10)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // let Receive block
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(timeout):
		t.Fatal("Receive did not return after its context was cancelled")
	}
	require.NoError(t, f.Source.Ack(context.Background(), m))
}

func testConcurrent(t *testing.T, h Harness) {
	var want []string
	for i := range 20 {
		want = append(want, string(rune('A'+i)))
	}
	f := h(t, want)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				mu.Lock()
				n := len(got)
				mu.Unlock()
				if n >= len(want) {
					return
				}
				rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
				msgs, err := f.Source.Receive(rctx, 3)
				rcancel()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					continue
				}
				for _, m := range msgs {
					if err := f.Source.Ack(context.Background(), m); err != nil {
						t.Errorf("ack %s: %v", m.ID, err)
					}
					mu.Lock()
					got = append(got, string(m.Body))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	slices.Sort(got)
	assert.Equal(t, want, got, "every message once, across concurrent receivers")
}

func testDelay(t *testing.T, h Harness) {
	f := h(t, []string{"later"})
	d, ok := f.Source.(consumer.Delayer)
	if !ok {
		t.Skip("the source is not a consumer.Delayer")
	}
	m := receiveN(t, f.Source, 1)[0]
	start := time.Now()
	require.NoError(t, d.ReleaseAfter(context.Background(), m, 2*time.Second))
	if !f.Redelivers {
		assert.Equal(t, []string{"later"}, f.HandedBack(t))
		return
	}
	again := receiveN(t, f.Source, 1)[0]
	assert.GreaterOrEqual(t, time.Since(start), 1900*time.Millisecond, "came back before its delay")
	require.NoError(t, f.Source.Ack(context.Background(), again))
}
