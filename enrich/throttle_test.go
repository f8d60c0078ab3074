package enrich_test

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/fakellm"
)

func always(f fakellm.Fault) func(*fakellm.Request) fakellm.Fault {
	return func(*fakellm.Request) fakellm.Fault { return f }
}

// TestChatReturnsThrottledWhenAChunkGotNoAnswer: within a chunk, when the
// server throttles every request past its attempts, no row is written as
// failed: Annotate (and the enricher) return a ThrottledError with the
// server's Retry-After, the requests not yet sent are never sent, and the
// usage counts what was sent.
func TestChatReturnsThrottledWhenAChunkGotNoAnswer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault fakellm.Fault
		hint  time.Duration
	}{
		{name: "with Retry-After", fault: fakellm.Throttle, hint: 150 * time.Millisecond},
		{name: "without Retry-After", fault: fakellm.ThrottleBare},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, &fakellm.Server{RetryAfter: tc.hint, Fault: always(tc.fault)})
			spec := chatSpec(t, srv, func(m *enrich.ModelSettings) {
				m.MaxAttempts = 3
				m.MaxConcurrency = 1
			})
			chat := newChat(t, spec, nil)
			ctx := t.Context()

			ch := enrich.NewChunk()
			ts := texts(100) // five requests of 20 rows
			out := make([]enrich.Answer, len(ts))
			err := chat.Annotate(enrich.WithChunk(ctx, ch), items(ts), out)
			var te *enrich.ThrottledError
			require.ErrorAs(t, err, &te)
			require.ErrorIs(t, err, enrich.ErrThrottled)
			assert.Equal(t, tc.hint, te.RetryAfter)
			assert.Equal(t, 1, te.Requests)
			assert.Equal(t, 3, te.Attempts)
			assert.Contains(t, err.Error(), "none was answered")
			for i, a := range out {
				assert.Empty(t, a.Status, "row %d is not written", i)
			}
			// The first request tried its three attempts; the four others
			// were held back and never sent.
			assert.Equal(t, 3, srv.Stats().Requests)
			u := chat.Usage()
			assert.Equal(t, int64(3), u.Requests)
			assert.Equal(t, int64(3), u.Throttled)
			assert.Equal(t, int64(2), u.Retries)
			assert.Equal(t, int64(20), u.RowsSent, "held rows were not sent")
			assert.Zero(t, u.Tokens())
			assert.Zero(t, u.Cost())

			// Another call of the chunk sends nothing and gets the same.
			err = chat.Annotate(enrich.WithChunk(ctx, ch), items(texts(5)), make([]enrich.Answer, 5))
			require.ErrorAs(t, err, &te)
			assert.Equal(t, tc.hint, te.RetryAfter)
			assert.Equal(t, 3, srv.Stats().Requests)

			// Through the enricher: no batch, the error.
			mem := checkedAlloc(t)
			enr := newEnricher(t, spec, chat, mem)
			rec := input(t, mem, []*string{ptr("a post about the weather"), ptr("  "), ptr("another post")})
			defer rec.Release()
			got, counts, err := enr.Enrich(enrich.WithChunk(ctx, enrich.NewChunk()), rec, 7)
			require.ErrorAs(t, err, &te)
			assert.Equal(t, tc.hint, te.RetryAfter)
			assert.Nil(t, got)
			assert.Nil(t, counts)
			assert.Equal(t, 6, srv.Stats().Requests)
			assert.Equal(t, int64(6), chat.Usage().Throttled)
		})
	}
}

// TestChatWithoutAChunkWritesThrottledRowsFailed: outside a chunk (a
// replay, the Batch API's synchronous retry), rows throttled past their
// attempts are failed rows, as they always were.
func TestChatWithoutAChunkWritesThrottledRowsFailed(t *testing.T) {
	t.Parallel()
	srv := startServer(t, &fakellm.Server{Fault: always(fakellm.ThrottleBare)})
	chat := newChat(t, chatSpec(t, srv, func(m *enrich.ModelSettings) {
		m.MaxAttempts = 2
		m.MaxConcurrency = 1
	}), nil)
	out := make([]enrich.Answer, 40)
	require.NoError(t, chat.Annotate(t.Context(), items(texts(40)), out))
	assertFailedRows(t, out, "gave up after 2 attempts")
	assert.Equal(t, 4, srv.Stats().Requests, "both requests sent, two attempts each")
	assert.Equal(t, int64(40), chat.Usage().RowsSent)
}

// TestChatChunkPartlyAnsweredWritesThrottledRowsFailed: a chunk of which
// some rows were answered is written; its throttled rows are failed.
func TestChatChunkPartlyAnsweredWritesThrottledRowsFailed(t *testing.T) {
	t.Parallel()
	ts := texts(60)
	srv := startServer(t, &fakellm.Server{Fault: func(r *fakellm.Request) fakellm.Fault {
		if slices.ContainsFunc(r.Rows, func(row fakellm.Row) bool { return slices.Contains(ts[20:40], row.Text) }) {
			return fakellm.Throttle
		}
		return fakellm.None
	}, RetryAfter: 10 * time.Millisecond})
	chat := newChat(t, chatSpec(t, srv, func(m *enrich.ModelSettings) {
		m.MaxAttempts = 3
		m.MaxConcurrency = 1
	}), nil)
	out := make([]enrich.Answer, len(ts))
	require.NoError(t, chat.Annotate(enrich.WithChunk(t.Context(), enrich.NewChunk()), items(ts), out))
	requireAnsweredFromText(t, ts[:20], out[:20])
	requireAnsweredFromText(t, ts[40:], out[40:])
	for _, a := range out[20:40] {
		assert.Equal(t, enrich.StatusFailed, a.Status)
		assert.Contains(t, a.Error, "gave up after 3 attempts")
	}
	u := chat.Usage()
	assert.Equal(t, int64(3), u.Throttled)
	assert.Equal(t, int64(60), u.RowsSent)
	assert.Equal(t, 5, srv.Stats().Requests)
}

// TestChunkHoldsRequestsBackUntilItsFateIsKnown: once a request of a
// chunk ends throttled with nothing answered, no new request of the
// chunk is sent, but the one in flight goes on; when it is answered, the
// chunk will be written: the held request is sent, and the throttled rows
// are failed rather than returned as a ThrottledError.
func TestChunkHoldsRequestsBackUntilItsFateIsKnown(t *testing.T) {
	t.Parallel()
	ts := texts(60)
	throttling := startServer(t, &fakellm.Server{Fault: always(fakellm.ThrottleBare)})
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	answering := startServer(t, &fakellm.Server{Fault: func(r *fakellm.Request) fakellm.Fault {
		if r.N == 1 {
			once.Do(func() { close(arrived) })
			<-release
		}
		return fakellm.None
	}})
	// Three models (each its own concurrency gate) whose calls share one
	// chunk, as the enrich workers of a pipeline chunk do.
	chatA := newChat(t, chatSpec(t, throttling, func(m *enrich.ModelSettings) { m.MaxAttempts = 1 }), nil)
	chatB := newChat(t, chatSpec(t, answering, nil), nil)
	chatC := newChat(t, chatSpec(t, answering, nil), nil)
	ch := enrich.NewChunk()
	ctx := enrich.WithChunk(t.Context(), ch)
	type result struct {
		out []enrich.Answer
		err error
	}
	annotate := func(chat *enrich.Chat, ts []string) <-chan result {
		done := make(chan result, 1)
		go func() {
			out := make([]enrich.Answer, len(ts))
			err := chat.Annotate(ctx, items(ts), out)
			done <- result{out, err}
		}()
		return done
	}

	b := annotate(chatB, ts[20:40]) // in flight until released
	waitClosed(t, arrived)
	a := annotate(chatA, ts[:20]) // throttled: the chunk holds requests back
	require.Eventually(t, func() bool { return enrich.ChunkHolding(ch) }, 10*time.Second, time.Millisecond)
	c := annotate(chatC, ts[40:]) // held back
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, 1, answering.Stats().Requests, "a request was sent while the chunk held them back")
	select {
	case r := <-a:
		t.Fatalf("the throttled call returned (%v) while a request of its chunk was in flight", r.err)
	case r := <-c:
		t.Fatalf("the held call returned (%v) before the chunk's fate was known", r.err)
	default:
	}

	close(release)
	wait := func(done <-chan result) result {
		t.Helper()
		select {
		case r := <-done:
			require.NoError(t, r.err)
			return r
		case <-time.After(30 * time.Second):
			t.Fatal("a call did not return")
		}
		return result{}
	}
	ra, rb, rc := wait(a), wait(b), wait(c)
	for _, x := range ra.out {
		assert.Equal(t, enrich.StatusFailed, x.Status)
		assert.Contains(t, x.Error, "gave up after 1 attempts")
	}
	requireAnsweredFromText(t, ts[20:40], rb.out)
	requireAnsweredFromText(t, ts[40:], rc.out)
	assert.Equal(t, 2, answering.Stats().Requests)
	assert.Equal(t, 1, throttling.Stats().Requests)
}

// TestAbandonedChunkKeepsWhatWasBought: abandoning a chunk cuts off no
// request in flight: its answer goes to the cache and costs nothing when
// asked again; and it ends the waits of a request throttled with a long
// Retry-After at once.
func TestAbandonedChunkKeepsWhatWasBought(t *testing.T) {
	t.Parallel()
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := startServer(t, &fakellm.Server{Fault: func(r *fakellm.Request) fakellm.Fault {
		once.Do(func() { close(arrived) })
		<-release
		return fakellm.None
	}})
	chat := newChat(t, chatSpec(t, srv, nil), nil)
	ts := texts(20)
	ch := enrich.NewChunk()
	done := make(chan error, 1)
	go func() {
		done <- chat.Annotate(enrich.WithChunk(t.Context(), ch), items(ts), make([]enrich.Answer, len(ts)))
	}()
	waitClosed(t, arrived)
	ch.Abandon()
	close(release)
	requireAbandoned(t, done)
	assert.Positive(t, chat.Usage().CompletionTokens, "the answer in flight was read")
	requireAnswersTexts(t, chat, 20)
	assert.Equal(t, 1, srv.Stats().Requests, "the answer bought was kept")

	// A request waiting out a 429's long Retry-After stops waiting.
	slow := startServer(t, &fakellm.Server{RetryAfter: 10 * time.Minute, Fault: always(fakellm.Throttle)})
	chat = newChat(t, chatSpec(t, slow, nil), nil)
	ch = enrich.NewChunk()
	go func() {
		done <- chat.Annotate(enrich.WithChunk(t.Context(), ch), items(ts), make([]enrich.Answer, len(ts)))
	}()
	require.Eventually(t, func() bool { return slow.Stats().Requests == 1 }, 10*time.Second, time.Millisecond)
	start := time.Now()
	ch.Abandon()
	select {
	case err := <-done:
		require.ErrorIs(t, err, enrich.ErrChunkAbandoned)
	case <-time.After(30 * time.Second):
		t.Fatal("the abandoned call kept waiting")
	}
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Equal(t, 1, slow.Stats().Requests)
}

// TestAbandonedChunkLetsItsOtherRequestsFinish: a request of an abandoned
// chunk that waits to try again stops, and its call ends, without cutting
// off the chunk's other request on the wire: that answer is paid for, and
// asking the same texts again costs only the rows never answered.
func TestAbandonedChunkLetsItsOtherRequestsFinish(t *testing.T) {
	t.Parallel()
	arrived, release := make(chan struct{}), make(chan struct{})
	var faulty atomic.Bool
	faulty.Store(true)
	// The Retry-After outlasts the abandon, and the model's quota, which
	// it pauses, is back by the time the texts are asked again.
	srv := startServer(t, &fakellm.Server{RetryAfter: 3 * time.Second, Fault: func(r *fakellm.Request) fakellm.Fault {
		switch {
		case !faulty.Load():
			return fakellm.None
		case r.N == 1:
			close(arrived)
			<-release
			return fakellm.None
		default:
			return fakellm.Throttle
		}
	}})
	chat := newChat(t, chatSpec(t, srv, func(m *enrich.ModelSettings) {
		m.MaxConcurrency = 2
		m.RowsPerRequest = 20
	}), nil)
	ts := texts(40)
	ch := enrich.NewChunk()
	done := make(chan error, 1)
	go func() {
		done <- chat.Annotate(enrich.WithChunk(t.Context(), ch), items(ts), make([]enrich.Answer, len(ts)))
	}()
	waitClosed(t, arrived)
	require.Eventually(t, func() bool { return srv.Stats().Injected >= 1 }, 10*time.Second, time.Millisecond,
		"the second request was throttled and waits out its Retry-After")
	ch.Abandon()
	close(release)
	requireAbandoned(t, done)
	assert.Positive(t, chat.Usage().CompletionTokens, "the answer on the wire was read, not cut off")
	before := srv.Stats().Requests
	faulty.Store(false)
	requireAnswersTexts(t, chat, 40)
	assert.Equal(t, before+1, srv.Stats().Requests, "only the 20 rows never answered are asked again")
}

// requireAbandoned waits (at most 30s) for an Annotate call of an
// abandoned chunk to end, with ErrChunkAbandoned.
func requireAbandoned(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		require.ErrorIs(t, err, enrich.ErrChunkAbandoned)
	case <-time.After(30 * time.Second):
		t.Fatal("the abandoned call did not return")
	}
}

func waitClosed(t *testing.T, c <-chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting")
	}
}
