package sourcetest

import (
	"context"
	"errors"
	"slices"
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
