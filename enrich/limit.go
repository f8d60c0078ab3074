package enrich

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/socialdata/enricher/internal/broadcast"
)

// limiter paces requests under a provider's requests-per-minute and
// tokens-per-minute quotas. Both are token buckets refilled continuously at
// the quota's rate and holding at most one second of it (at least one
// request), the way
// providers enforce per-minute quotas over short windows: a full minute's
// burst at once is what earns a 429. A request costs one request and its
// worst-case tokens, the prompt estimate plus its max_tokens, as Azure
// counts them. A 429's Retry-After pauses every request, not just the one
// that got it.
type limiter struct {
	rpm, tpm *rate.Limiter // nil: no limit

	mu          sync.Mutex
	pausedUntil time.Time
}

func newLimiter(rpm, tpm int) *limiter {
	l := &limiter{}
	if rpm > 0 {
		perSec := float64(rpm) / 60
		l.rpm = rate.NewLimiter(rate.Limit(perSec), max(1, int(math.Ceil(perSec))))
	}
	if tpm > 0 {
		perSec := float64(tpm) / 60
		l.tpm = rate.NewLimiter(rate.Limit(perSec), max(1, int(math.Ceil(perSec))))
	}
	return l
}

// wait blocks until a request of the given token cost may be sent.
func (l *limiter) wait(ctx context.Context, cost int) error {
	for {
		l.mu.Lock()
		d := time.Until(l.pausedUntil)
		l.mu.Unlock()
		if d <= 0 {
			break
		}
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
	if l.rpm != nil {
		if err := l.rpm.Wait(ctx); err != nil {
			return fmt.Errorf("rate limit (rpm): %w", ctxErrOr(ctx, err))
		}
	}
	if l.tpm != nil {
		// A request dearer than the bucket pays in bucketfuls: it waits
		// as long as its cost takes to earn at the quota's rate.
		for rest := cost; rest > 0; rest -= l.tpm.Burst() {
			if err := l.tpm.WaitN(ctx, min(rest, l.tpm.Burst())); err != nil {
				return fmt.Errorf("rate limit (tpm): %w", ctxErrOr(ctx, err))
			}
		}
	}
	return nil
}

// pause holds every request for d (a server's Retry-After).
func (l *limiter) pause(d time.Duration) {
	l.mu.Lock()
	if until := time.Now().Add(d); until.After(l.pausedUntil) {
		l.pausedUntil = until
	}
	l.mu.Unlock()
}

// ctxErrOr prefers the context's error: rate.Limiter reports "would exceed
// context deadline" before the deadline has passed.
func ctxErrOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if _, ok := ctx.Deadline(); ok {
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// gate bounds the requests in flight and adapts the bound: additive
// increase on success, multiplicative decrease on 429 (at most once a
// second, so that one burst of 429s halves it once), never below one.
type gate struct {
	mu       sync.Mutex
	max      float64
	limit    float64
	inflight int
	changed  broadcast.Signal
	lastCut  time.Time
}

func newGate(max int) *gate {
	return &gate{max: float64(max), limit: float64(max)}
}

func (g *gate) acquire(ctx context.Context) error {
	for {
		g.mu.Lock()
		if g.inflight < int(g.limit) {
			g.inflight++
			g.mu.Unlock()
			return nil
		}
		wake := g.changed.C()
		g.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release ends a request; throttled says the server answered 429, ok that
// it answered well (only that grows the bound).
func (g *gate) release(throttled, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight--
	if throttled {
		if now := time.Now(); now.Sub(g.lastCut) > time.Second {
			g.limit = max(1, g.limit/2)
			g.lastCut = now
		}
	} else if ok {
		g.limit = min(g.max, g.limit+1/g.limit)
	}
	g.changed.Notify()
}

// maxRetryAfter caps what a server may ask us to wait.
const maxRetryAfter = 10 * time.Minute

// retryAfter reads a server's wait hint: retry-after-ms (Azure, OpenAI),
// then Retry-After in seconds or as an HTTP date. Zero when absent.
func retryAfter(h http.Header, now time.Time) time.Duration {
	var d time.Duration
	// capped converts a count of units, capping it before the conversion:
	// a huge or infinite hint would overflow to a negative duration.
	capped := func(n float64, unit time.Duration) time.Duration {
		if n >= float64(maxRetryAfter/unit) { // also +Inf
			return maxRetryAfter
		}
		return time.Duration(n * float64(unit))
	}
	if v := strings.TrimSpace(h.Get("retry-after-ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			d = capped(ms, time.Millisecond)
		}
	}
	if v := strings.TrimSpace(h.Get("Retry-After")); d == 0 && v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
			d = capped(s, time.Second)
		} else if t, err := http.ParseTime(v); err == nil {
			d = t.Sub(now)
		}
	}
	return min(max(d, 0), maxRetryAfter)
}
