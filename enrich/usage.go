package enrich

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sashabaranov/go-openai"

	"github.com/socialdata/enricher/internal/broadcast"
)

// ErrBudgetExhausted is returned by Annotate when the run's token budget
// (model.max_tokens_total) cannot pay for the next request. It stops the run:
// committed chunks stay, the chunk in flight is not committed.
var ErrBudgetExhausted = errors.New("token budget exhausted")

// ErrModelUnusable is matched (errors.Is) by a model failure that every
// request would meet until the configuration changes: the server refuses
// the key (401, 403), knows no such model or deployment (404), or refuses
// the form of the request itself (400, 422). A caller should stop, not
// retry row by row. A server that does not answer at all is not this: it
// may come back.
var ErrModelUnusable = errors.New("the model cannot be used with this configuration")

// UsageReporter is implemented by models that call a paid API.
type UsageReporter interface {
	Usage() Usage
}

// Usage is a snapshot of what a model has done so far in this process.
type Usage struct {
	Requests         int64 // HTTP requests sent, retries included
	Retries          int64 // requests that were a retry of a failed attempt
	Throttled        int64 // answers with status 429
	ServerErrors     int64 // 5xx answers, timeouts and network errors
	Splits           int64 // batches re-asked in smaller pieces
	RowsSent         int64 // distinct rows sent (a row re-asked counts once)
	DedupHits        int64 // rows answered from an identical text in this run
	PromptTokens     int64
	CompletionTokens int64
	Prices           Prices
}

// TokensPerRow is the tokens spent per distinct row sent.
func (u Usage) TokensPerRow() float64 {
	if u.RowsSent == 0 {
		return 0
	}
	return float64(u.PromptTokens+u.CompletionTokens) / float64(u.RowsSent)
}

// Cost is the estimated cost in US dollars from the spec's prices.
func (u Usage) Cost() float64 {
	return float64(u.PromptTokens)/1e6*u.Prices.InputPerMillion +
		float64(u.CompletionTokens)/1e6*u.Prices.OutputPerMillion
}

// String is the one-line summary commands print and log.
func (u Usage) String() string {
	return fmt.Sprintf("requests=%d retries=%d throttled=%d server_errors=%d splits=%d rows_sent=%d dedup_hits=%d prompt_tokens=%d completion_tokens=%d tokens_per_row=%.1f est_cost_usd=%.4f",
		u.Requests, u.Retries, u.Throttled, u.ServerErrors, u.Splits, u.RowsSent, u.DedupHits,
		u.PromptTokens, u.CompletionTokens, u.TokensPerRow(), u.Cost())
}

// usage is the live, concurrently updated form of Usage.
type usage struct {
	requests, retries, throttled, serverErrors, splits atomic.Int64
	rowsSent, dedupHits, prompt, completion            atomic.Int64
}

// add counts the tokens of one answer; batch says it came through the
// Batch API.
func (u *usage) add(t openai.Usage, batch bool) {
	_ = batch
	u.prompt.Add(int64(t.PromptTokens))
	u.completion.Add(int64(t.CompletionTokens))
}

func (u *usage) snapshot(p Prices) Usage {
	return Usage{
		Requests: u.requests.Load(), Retries: u.retries.Load(), Throttled: u.throttled.Load(),
		ServerErrors: u.serverErrors.Load(), Splits: u.splits.Load(), RowsSent: u.rowsSent.Load(),
		DedupHits: u.dedupHits.Load(), PromptTokens: u.prompt.Load(), CompletionTokens: u.completion.Load(),
		Prices: p,
	}
}

// budget caps the tokens of a run. A request reserves its worst case
// (prompt estimate + max_tokens) before it is sent and settles to what the
// server reports after, so concurrent requests cannot overshoot together.
type budget struct {
	mu       sync.Mutex
	max      int64 // 0: no budget
	spent    int64
	reserved int64
	settled  broadcast.Signal // notified at each settlement
}

// reserve books n tokens. While other requests hold reservations it waits
// for them to settle (they usually spend less than they booked); the
// budget is exhausted only when what is spent leaves no room for n.
func (b *budget) reserve(ctx context.Context, n int64) error {
	if b.max == 0 {
		return nil
	}
	for {
		b.mu.Lock()
		if b.spent+b.reserved+n <= b.max {
			b.reserved += n
			b.mu.Unlock()
			return nil
		}
		if b.reserved == 0 || b.spent+n > b.max {
			spent := b.spent
			b.mu.Unlock()
			return fmt.Errorf("%w: %d of %d tokens spent, the next request may need %d", ErrBudgetExhausted, spent, b.max, n)
		}
		wait := b.settled.C()
		b.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// settle turns a reservation of n into actual spending.
func (b *budget) settle(n, actual int64) {
	if b.max == 0 {
		return
	}
	b.mu.Lock()
	b.reserved -= n
	b.spent += actual
	b.settled.Notify()
	b.mu.Unlock()
}
