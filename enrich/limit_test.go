package enrich

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGateHalvesOn429AndRecovers(t *testing.T) {
	g := newGate(8)
	ctx := context.Background()
	for range 8 {
		require.NoError(t, g.acquire(ctx))
	}
	// A ninth request waits for a slot.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, g.acquire(short), context.DeadlineExceeded)

	g.release(true, false) // 429: 8 -> 4
	g.release(true, false) // the same burst: no second cut
	assert.Equal(t, 4.0, g.limit)
	for range 6 {
		g.release(false, true)
	}
	// Back to one in flight; additive increase brings the bound back up.
	require.NoError(t, g.acquire(ctx))
	n := 0
	for g.limit < 8 {
		g.release(false, true)
		require.NoError(t, g.acquire(ctx))
		n++
	}
	assert.Equal(t, 8.0, g.limit)
	assert.Less(t, n, 30, "about one step per limit's worth of successes")
}

func TestLimiterPausesEveryoneForRetryAfter(t *testing.T) {
	l := newLimiter(0, 0)
	l.pause(150 * time.Millisecond)
	start := time.Now()
	require.NoError(t, l.wait(context.Background(), 10))
	assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)

	// A request dearer than a second of quota pays in bucketfuls: 600 TPM
	// is 10 tokens a second, a 25-token request after a full bucket waits
	// about 1.5 seconds.
	l = newLimiter(0, 600)
	start = time.Now()
	require.NoError(t, l.wait(context.Background(), 25))
	assert.GreaterOrEqual(t, time.Since(start), 1400*time.Millisecond)
}

func TestRetryAfterHeaders(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	assert.Equal(t, 1500*time.Millisecond, retryAfter(h("retry-after-ms", "1500", "Retry-After", "9"), now))
	assert.Equal(t, 2*time.Second, retryAfter(h("Retry-After", "2"), now))
	assert.Equal(t, 30*time.Second, retryAfter(h("Retry-After", now.Add(30*time.Second).Format(http.TimeFormat)), now))
	assert.Equal(t, maxRetryAfter, retryAfter(h("Retry-After", "86400"), now))
	// Huge or infinite hints are capped, not overflowed to a negative (no) wait.
	assert.Equal(t, maxRetryAfter, retryAfter(h("Retry-After", "99999999999"), now))
	assert.Equal(t, maxRetryAfter, retryAfter(h("Retry-After", "inf"), now))
	assert.Equal(t, maxRetryAfter, retryAfter(h("retry-after-ms", "1e300"), now))
	assert.Zero(t, retryAfter(h("Retry-After", "soon"), now))
	assert.Zero(t, retryAfter(h(), now))
}
