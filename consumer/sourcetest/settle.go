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

// settle is one of the calls that settle a message.
type settle struct {
	name string
	call func(ctx context.Context, m *consumer.Message) error
	// back says the message comes back (Release and ReleaseAfter); dead
	// says it goes to the dead-letter queue.
	back, dead bool
}

// settles are the calls that settle a message on src: Ack, Release,
// DeadLetter, and ReleaseAfter (one second) if src is a consumer.Delayer.
func settles(src consumer.Source) []settle {
	out := []settle{
		{name: "Ack", call: func(ctx context.Context, m *consumer.Message) error { return src.Ack(ctx, m) }},
		{name: "Release", back: true, call: func(ctx context.Context, m *consumer.Message) error { return src.Release(ctx, m) }},
		{name: "DeadLetter", dead: true, call: func(ctx context.Context, m *consumer.Message) error {
			return src.DeadLetter(ctx, m, consumer.ReasonBadMessage, errors.New("poison"))
		}},
	}
	if d, ok := src.(consumer.Delayer); ok {
		out = append(out, settle{name: "ReleaseAfter", back: true, call: func(ctx context.Context, m *consumer.Message) error {
			return d.ReleaseAfter(ctx, m, time.Second)
		}})
	}
	return out
}

// assertNotInFlight calls s on m, which is not in flight: the call must
// fail, saying so, and not panic.
func assertNotInFlight(t *testing.T, s settle, m *consumer.Message, what string) {
	t.Helper()
	var err error
	require.NotPanics(t, func() { err = s.call(context.Background(), m) }, "%s of %s", s.name, what)
	assert.ErrorIs(t, err, consumer.ErrNotInFlight, "%s of %s", s.name, what)
}

// requireDrained checks that nothing is left: a finite source says it is
// drained, another delivers nothing within wait.
func requireDrained(t *testing.T, f Fixture, wait time.Duration) {
	t.Helper()
	if !f.Finite {
		requireEmpty(t, f, wait)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	msgs, err := f.Source.Receive(ctx, 10)
	require.Empty(t, msgs)
	require.ErrorIs(t, err, consumer.ErrDrained)
}

// testSettleTwice: once a message is settled, settling it again, by any
// call, is an error that says it is not in flight; it changes nothing
// (the message is not dead-lettered, released or handed back twice), and
// the source goes on: the next messages come, and it drains.
func testSettleTwice(t *testing.T, h Harness) {
	for _, name := range []string{"Ack", "Release", "DeadLetter", "ReleaseAfter"} {
		t.Run("After"+name, func(t *testing.T) {
			t.Parallel()
			f := h(t, []string{"settled", "next"})
			all := settles(f.Source)
			i := slices.IndexFunc(all, func(s settle) bool { return s.name == name })
			if i < 0 {
				t.Skip("the source is not a consumer.Delayer")
			}
			first := all[i]
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			msgs, err := f.Source.Receive(ctx, 1)
			require.NoError(t, err)
			require.Len(t, msgs, 1)
			m := msgs[0]
			require.NoError(t, first.call(ctx, m), "the first %s", first.name)
			for _, again := range all {
				assertNotInFlight(t, again, m, "a message settled by "+first.name)
				cp := *m // the same delivery, as another copy of the message
				assertNotInFlight(t, again, &cp, "a copy of a message settled by "+first.name)
			}

			other := map[string]string{"settled": "next", "next": "settled"}[string(m.Body)]
			want := []string{other}
			if first.back && f.Redelivers {
				want = append(want, string(m.Body))
			}
			rest := receiveN(t, f.Source, len(want))
			assert.ElementsMatch(t, want, bodiesOf(rest), "the rest of the queue, and the released message once")
			for _, r := range rest {
				if r.ID == m.ID {
					assert.Greater(t, r.ReceiveCount, m.ReceiveCount)
				}
				require.NoError(t, f.Source.Ack(ctx, r))
			}
			requireDrained(t, f, 2*time.Second)
			if f.DeadLetters != nil {
				want := map[string][]string{}
				if first.dead {
					want[string(m.Body)] = []string{consumer.ReasonBadMessage}
				}
				assert.Equal(t, want, f.DeadLetters(t), "dead-lettered once, or never")
			}
			if !f.Redelivers {
				var want []string
				if first.back {
					want = []string{string(m.Body)}
				}
				assert.ElementsMatch(t, want, f.HandedBack(t), "handed back once, or never")
			}
		})
	}
}

// bodiesOf are the bodies of msgs, in their order.
func bodiesOf(msgs []*consumer.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Body)
	}
	return out
}

// expiring makes a fixture of the Expiring harness, or skips the test.
func expiring(t *testing.T, o options, bodies []string) Fixture {
	t.Helper()
	if o.expiring == nil {
		t.Skip("no Expiring harness: the deliveries of this source do not expire")
	}
	f := o.expiring(t, bodies)
	require.Positive(t, f.Visibility, "a fixture of the Expiring harness says its Visibility")
	require.True(t, f.Redelivers, "an expired delivery comes back from its source")
	return f
}

// testExpired: a delivery whose visibility ended is not in flight any
// more: the message comes back, and settling the expired delivery, by any
// call, is an error that changes nothing (no dead letter); the new
// delivery settles as usual.
func testExpired(t *testing.T, h Harness, o options) {
	bodies := []string{"e1", "e2", "e3", "e4"}
	f := expiring(t, o, bodies)
	start := time.Now()
	first := receiveN(t, f.Source, len(bodies))
	again := receiveN(t, f.Source, len(bodies)) // none settled: each comes back
	assert.GreaterOrEqual(t, time.Since(start), f.Visibility, "came back before its visibility ended")
	byID := map[string]*consumer.Message{}
	for _, m := range again {
		byID[m.ID] = m
	}
	all := settles(f.Source)
	for i, m := range first {
		fresh := byID[m.ID]
		require.NotNil(t, fresh, "message %s came back", m.ID)
		assert.Greater(t, fresh.ReceiveCount, m.ReceiveCount)
		assertNotInFlight(t, all[i%len(all)], m, "an expired delivery")
	}
	for _, m := range again {
		require.NoError(t, f.Source.Ack(context.Background(), m), "the latest delivery is in flight")
	}
	requireDrained(t, f, 2*time.Second)
	if f.DeadLetters != nil {
		assert.Empty(t, f.DeadLetters(t), "an expired delivery is not dead-lettered")
	}
}

// testExtend: a message extended every HeartbeatInterval does not come
// back while it is, though that outlasts its visibility, and its delivery
// stays in flight; a settled message cannot be extended.
func testExtend(t *testing.T, h Harness, o options) {
	if o.expiring == nil {
		if _, ok := h(t, nil).Source.(consumer.Extender); ok {
			t.Fatal("the source is a consumer.Extender: pass sourcetest.Expiring to Run")
		}
	}
	f := expiring(t, o, []string{"held"})
	e, ok := f.Source.(consumer.Extender)
	if !ok {
		t.Skip("the source is not a consumer.Extender")
	}
	every := e.HeartbeatInterval()
	require.Positive(t, every)
	require.Less(t, every, f.Visibility, "a heartbeat comes within the visibility")
	m := receiveN(t, f.Source, 1)[0]

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				assert.NoError(t, e.Extend(context.Background(), m))
			}
		}
	})
	hold := f.Visibility * 3 / 2
	ctx, cancel := context.WithTimeout(context.Background(), hold)
	msgs, err := f.Source.Receive(ctx, 10)
	cancel()
	close(stop)
	wg.Wait()
	require.Empty(t, bodiesOf(msgs), "an extended message came back within %s, its visibility being %s", hold, f.Visibility)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	require.NoError(t, f.Source.Ack(context.Background(), m), "the extended delivery is in flight after its first visibility")
	var extendErr error
	require.NotPanics(t, func() { extendErr = e.Extend(context.Background(), m) })
	require.ErrorIs(t, extendErr, consumer.ErrNotInFlight, "Extend of a settled message")
	requireDrained(t, f, 2*time.Second)
}
