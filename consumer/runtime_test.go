package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/socialdata/enricher/consumer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClassify(t *testing.T) {
	t.Parallel()
	base := errors.New("boom")
	tests := []struct {
		name  string
		give  error
		want  consumer.Class
		wait  time.Duration
		cause error
	}{
		{name: "nil", give: nil, want: consumer.ClassNone},
		{name: "plain", give: base, want: consumer.ClassRetry},
		{name: "permanent", give: consumer.Permanent(consumer.ReasonBadMessage, base), want: consumer.ClassPermanent},
		{name: "wrapped permanent", give: fmt.Errorf("job x: %w", consumer.Permanent("r", base)), want: consumer.ClassPermanent},
		{name: "halt", give: consumer.Halt(base), want: consumer.ClassHalt},
		{name: "retry after", give: consumer.RetryAfter(3*time.Second, base), want: consumer.ClassRetryAfter, wait: 3 * time.Second},
		{name: "negative wait", give: consumer.RetryAfter(-time.Second, base), want: consumer.ClassRetryAfter},
		{name: "outermost wins", give: consumer.Halt(consumer.Permanent("r", base)), want: consumer.ClassHalt},
		{name: "context canceled", give: context.Canceled, want: consumer.ClassRetry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, wait := consumer.Classify(tt.give)
			assert.Equal(t, tt.want, c, c.String())
			assert.Equal(t, tt.wait, wait)
			if tt.give != nil && tt.want != consumer.ClassRetry {
				assert.ErrorIs(t, tt.give, base, "the class keeps the cause")
			}
		})
	}
	assert.NoError(t, consumer.Halt(nil))
	assert.NoError(t, consumer.RetryAfter(time.Second, nil))
}

// script is a handler whose answers are given per message body and
// attempt; it records the order of its calls.
type script struct {
	mu     sync.Mutex
	calls  []string
	at     map[string][]time.Time
	answer func(body string, attempt int) error
	key    func(body string) string
}

func (s *script) Key(m *consumer.Message) string {
	if s.key == nil {
		return ""
	}
	return s.key(string(m.Body))
}

func (s *script) Handle(_ context.Context, m *consumer.Message) (consumer.Report, error) {
	s.mu.Lock()
	body := string(m.Body)
	if s.at == nil {
		s.at = map[string][]time.Time{}
	}
	s.calls = append(s.calls, body)
	s.at[body] = append(s.at[body], time.Now())
	attempt := len(s.at[body])
	s.mu.Unlock()
	return nil, s.answer(body, attempt)
}

func run(t *testing.T, q *consumer.MemQueue, h consumer.Handler, conc int) ([]consumer.MessageOutcome, error) {
	t.Helper()
	var outcomes []consumer.MessageOutcome
	c := &consumer.Consumer{Source: q, Handler: h, Logger: quiet(), Concurrency: conc, RetryBackoff: 50 * time.Millisecond,
		OnOutcome: func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) }}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := c.Run(ctx)
	require.NoError(t, ctx.Err(), "Run returned in time")
	return outcomes, err
}

// TestHaltStopsConsumingAndHandsTheMessageBack: a failure every message
// would meet (a wrong key) stops the consumer at once with that error;
// the message is released untouched and the others are never started.
func TestHaltStopsConsumingAndHandsTheMessageBack(t *testing.T) {
	t.Parallel()
	q := consumer.NewMemQueue()
	for _, b := range []string{"a", "b", "c"} {
		q.Publish([]byte(b))
	}
	q.Close()
	keyErr := errors.New("HTTP 401: check the key")
	h := &script{answer: func(string, int) error { return consumer.Halt(keyErr) }}
	outcomes, err := run(t, q, h, 1)
	require.ErrorIs(t, err, keyErr)
	var he *consumer.HaltError
	require.ErrorAs(t, err, &he)
	assert.Len(t, h.calls, 1, "nothing is started after a halt")
	require.Len(t, outcomes, 1)
	assert.Equal(t, consumer.ActionReleased, outcomes[0].Action)
	assert.Equal(t, consumer.ClassHalt, outcomes[0].Class)
	assert.Zero(t, outcomes[0].RetryIn, "a halted message comes back at once for the next consumer")
	assert.Empty(t, q.Dead(), "a halt never dead-letters")
	assert.Zero(t, q.Acked())

	// Every message is still there for the next run.
	h2 := &script{answer: func(string, int) error { return nil }}
	_, err = run(t, q, h2, 1)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"a", "b", "c"}, h2.calls)
	assert.Equal(t, 3, q.Acked())
}

// TestRetryAfterIsHonoured: a passing failure with a known wait comes
// back after that wait, not after the consumer's backoff.
func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	q := consumer.NewMemQueue()
	q.Publish([]byte("throttled"))
	q.Publish([]byte("flaky"))
	q.Close()
	h := &script{answer: func(body string, attempt int) error {
		switch {
		case attempt > 1:
			return nil
		case body == "throttled":
			return consumer.RetryAfter(400*time.Millisecond, errors.New("429"))
		default:
			return errors.New("connection reset")
		}
	}}
	outcomes, err := run(t, q, h, 2)
	require.NoError(t, err)
	retryIn := map[string]time.Duration{}
	for _, o := range outcomes {
		if o.Action == consumer.ActionReleased {
			retryIn[string(o.Message.Body)] = o.RetryIn
		}
	}
	assert.Equal(t, map[string]time.Duration{"throttled": 400 * time.Millisecond, "flaky": 50 * time.Millisecond}, retryIn)
	gap := h.at["throttled"][1].Sub(h.at["throttled"][0])
	assert.GreaterOrEqual(t, gap, 400*time.Millisecond, "came back before its Retry-After")
	assert.Equal(t, 2, q.Acked())
}

// TestMessagesOfOneKeyAreHandledInOrder: with room for several messages
// at once, those of one key still go one after the other, in order.
func TestMessagesOfOneKeyAreHandledInOrder(t *testing.T) {
	t.Parallel()
	q := consumer.NewMemQueue()
	var want []string
	for i := range 12 {
		b := fmt.Sprintf("%c%d", 'x'+rune(i%3), i)
		want = append(want, b)
		q.Publish([]byte(b))
	}
	q.Close()
	var mu sync.Mutex
	busy := map[string]bool{}
	h := &script{key: func(b string) string { return b[:1] }}
	h.answer = func(body string, _ int) error {
		k := body[:1]
		mu.Lock()
		if busy[k] {
			mu.Unlock()
			return consumer.Permanent("overlap", fmt.Errorf("two messages of key %s at once", k))
		}
		busy[k] = true
		mu.Unlock()
		time.Sleep(5 * time.Millisecond) // hold the key while others may start
		mu.Lock()
		busy[k] = false
		mu.Unlock()
		return nil
	}
	_, err := run(t, q, h, 4)
	require.NoError(t, err)
	assert.Empty(t, q.Dead())
	perKey := map[string][]string{}
	for _, b := range h.calls {
		perKey[b[:1]] = append(perKey[b[:1]], b)
	}
	for _, b := range want {
		k := b[:1]
		require.NotEmpty(t, perKey[k])
		assert.Equal(t, b, perKey[k][0], "key %s out of order", k)
		perKey[k] = perKey[k][1:]
	}
}

func TestPermanentFailuresAreDeadLetteredAtOnce(t *testing.T) {
	t.Parallel()
	q := consumer.NewMemQueue()
	q.Publish([]byte("poison"))
	q.Close()
	h := &script{answer: func(string, int) error {
		return consumer.Permanent(consumer.ReasonBadMessage, errors.New("not json"))
	}}
	outcomes, err := run(t, q, h, 1)
	require.NoError(t, err)
	require.Len(t, outcomes, 1)
	assert.Equal(t, consumer.ActionDeadLettered, outcomes[0].Action)
	assert.Equal(t, consumer.ReasonBadMessage, outcomes[0].Reason)
	require.Len(t, q.Dead(), 1)
	assert.Equal(t, "not json", q.Dead()[0].Error)
	assert.Equal(t, 1, q.Dead()[0].ReceiveCount)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// deadLetterFails is a MemQueue whose DeadLetter fails the way fail says.
type deadLetterFails struct {
	*consumer.MemQueue
	fail func(q *consumer.MemQueue, ctx context.Context, m *consumer.Message, reason string, cause error) error
}

func (d *deadLetterFails) DeadLetter(ctx context.Context, m *consumer.Message, reason string, cause error) error {
	return d.fail(d.MemQueue, ctx, m, reason, cause)
}

// TestADeadLetterThatFailsSaysWhereTheMessageIs: a dead-letter the queue
// refused (ErrNotDeadLettered) leaves the message in the queue, so its
// outcome is released; one whose later step failed (the message is in the
// DLQ, its delete failed) stays dead_lettered with the error.
func TestADeadLetterThatFailsSaysWhereTheMessageIs(t *testing.T) {
	t.Parallel()
	poison := func(string, int) error { return consumer.Permanent(consumer.ReasonBadMessage, errors.New("not JSON")) }
	for _, tc := range []struct {
		name   string
		fail   func(q *consumer.MemQueue, ctx context.Context, m *consumer.Message, reason string, cause error) error
		action string
	}{
		{name: "send refused", action: consumer.ActionReleased,
			fail: func(q *consumer.MemQueue, ctx context.Context, m *consumer.Message, _ string, _ error) error {
				_ = q.Release(ctx, m)
				return fmt.Errorf("%w: message too large for the DLQ", consumer.ErrNotDeadLettered)
			}},
		{name: "delete failed after the send", action: consumer.ActionDeadLettered,
			fail: func(q *consumer.MemQueue, ctx context.Context, m *consumer.Message, reason string, cause error) error {
				return errors.Join(q.DeadLetter(ctx, m, reason, cause), errors.New("delete from source: throttled"))
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := consumer.NewMemQueue()
			q.Publish([]byte("x"))
			src := &deadLetterFails{MemQueue: q, fail: tc.fail}
			var outcomes []consumer.MessageOutcome
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			c := &consumer.Consumer{Source: src, Handler: &script{answer: poison}, Logger: quiet(), Concurrency: 1,
				OnOutcome: func(o consumer.MessageOutcome) {
					outcomes = append(outcomes, o)
					cancel() // one outcome is what the test looks at
				}}
			require.NoError(t, c.Run(ctx), "a cancelled consumer stops cleanly")
			require.NotEmpty(t, outcomes)
			assert.Equal(t, tc.action, outcomes[0].Action)
			assert.Equal(t, consumer.ReasonBadMessage, outcomes[0].Reason)
			require.Error(t, outcomes[0].Err)
		})
	}
}
