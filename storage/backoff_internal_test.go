package storage

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConflictBackoffFormula: the wait before retry n is drawn from
// [0, min(5s, base × 2^(n-1))).
func TestConflictBackoffFormula(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	for _, tt := range []struct {
		base time.Duration
		want []time.Duration // ceilings of retries 1, 2, ...
	}{
		{100 * ms, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5 * time.Second, 5 * time.Second}},
		{5 * ms, []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, 1280 * ms, 2560 * ms, 5 * time.Second}},
		{10 * time.Second, []time.Duration{5 * time.Second, 5 * time.Second}},
	} {
		for i, want := range tt.want {
			n := i + 1
			assert.Equal(t, want, conflictCeiling(n, tt.base), "base %s, retry %d", tt.base, n)
			assert.Zero(t, conflictWait(n, tt.base, 0), "the lowest draw waits nothing")
			assert.Equal(t, want/2, conflictWait(n, tt.base, 0.5))
			top := conflictWait(n, tt.base, math.Nextafter(1, 0))
			assert.Less(t, top, want, "the ceiling itself is never drawn")
			assert.Greater(t, top, want-want/100)
		}
	}
	assert.Equal(t, 5*time.Second, conflictCeiling(10_000, time.Nanosecond), "no overflow past the cap")
}

// TestConflictBackoffDraws: ConflictBackoff gives attempts-1 waits, each
// within its retry's bounds, spread over the whole range (full jitter,
// not a few percent around the exponential), then stops.
func TestConflictBackoffDraws(t *testing.T) {
	t.Parallel()
	waits := func(attempts int, base time.Duration) []time.Duration {
		b := ConflictBackoff(attempts, base)
		var out []time.Duration
		for {
			d, stop := b.Next()
			if stop {
				return out
			}
			out = append(out, d)
			require.LessOrEqual(t, len(out), 100, "it never stops")
		}
	}
	assert.Len(t, waits(0, 0), defaultConflictAttempts-1, "0 attempts: the default")
	assert.Len(t, waits(1, 0), 0, "one try: no retry")
	assert.Len(t, waits(6, 0), 5)

	const draws = 2000
	lo, hi := map[int]int{}, map[int]int{}
	for range draws {
		for i, d := range waits(12, 0) {
			n := i + 1
			ceiling := conflictCeiling(n, defaultConflictBase)
			require.GreaterOrEqual(t, d, time.Duration(0), "retry %d", n)
			require.Less(t, d, ceiling, "retry %d", n)
			if d < ceiling/10 {
				lo[n]++
			}
			if d >= ceiling-ceiling/10 {
				hi[n]++
			}
		}
	}
	for n := 1; n <= 11; n++ {
		// Each tenth of the range takes about draws/10; 1 in 10 of that
		// is far out of chance.
		assert.Greater(t, lo[n], draws/100, "retry %d: the lowest tenth is drawn", n)
		assert.Greater(t, hi[n], draws/100, "retry %d: the highest tenth is drawn", n)
	}
}
