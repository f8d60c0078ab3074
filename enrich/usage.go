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
//
// Tokens are as the server reported them, in two sets: those of
// synchronous requests and those of requests sent through the Batch API
// (priced at BatchDiscount). In each set the cached tokens are the part of
// the prompt tokens the provider read from its prompt cache (OpenAI: a
// prompt prefix of at least 1024 tokens seen in the last minutes), not more
// tokens.
type Usage struct {
	Requests         int64 // HTTP requests sent, retries included
	Retries          int64 // requests that were a retry of a failed attempt
	Throttled        int64 // answers with status 429
	ServerErrors     int64 // 5xx answers, timeouts and network errors
	Splits           int64 // batches re-asked in smaller pieces
	RowsSent         int64 // distinct rows sent, by either API (a row re-asked counts once)
	BatchRowsSent    int64 // of RowsSent, those sent through the Batch API
	DedupHits        int64 // rows answered from an identical text in this run
	PromptTokens     int64 // synchronous requests, cached tokens included
	CompletionTokens int64
	CachedTokens     int64 // of PromptTokens, read from the prompt cache

	BatchPromptTokens     int64 // Batch API requests, cached tokens included
	BatchCompletionTokens int64
	BatchCachedTokens     int64 // of BatchPromptTokens, read from the prompt cache

	Prices Prices
}

// BatchDiscount is what the Batch API charges of the synchronous price, for
// prompt, cached and completion tokens alike: half, on OpenAI and on Azure
// OpenAI's global batch deployments.
const BatchDiscount = 0.5

// Sub is what a model did between two snapshots of its usage: every
// count of u less before's, with u's prices.
func (u Usage) Sub(before Usage) Usage {
	return Usage{
		Requests: u.Requests - before.Requests, Retries: u.Retries - before.Retries,
		Throttled: u.Throttled - before.Throttled, ServerErrors: u.ServerErrors - before.ServerErrors,
		Splits: u.Splits - before.Splits, RowsSent: u.RowsSent - before.RowsSent,
		BatchRowsSent: u.BatchRowsSent - before.BatchRowsSent, DedupHits: u.DedupHits - before.DedupHits,
		PromptTokens: u.PromptTokens - before.PromptTokens, CompletionTokens: u.CompletionTokens - before.CompletionTokens,
		CachedTokens:          u.CachedTokens - before.CachedTokens,
		BatchPromptTokens:     u.BatchPromptTokens - before.BatchPromptTokens,
		BatchCompletionTokens: u.BatchCompletionTokens - before.BatchCompletionTokens,
		BatchCachedTokens:     u.BatchCachedTokens - before.BatchCachedTokens,
		Prices:                u.Prices,
	}
}

// Tokens is every token reported, both APIs, prompt and completion.
func (u Usage) Tokens() int64 {
	return u.PromptTokens + u.CompletionTokens + u.BatchPromptTokens + u.BatchCompletionTokens
}

// TokensPerRow is the tokens spent per distinct row sent.
func (u Usage) TokensPerRow() float64 {
	if u.RowsSent == 0 {
		return 0
	}
	return float64(u.Tokens()) / float64(u.RowsSent)
}

// Cost is the estimated cost in US dollars from the spec's prices: prompt
// tokens at the input price but those cached at the cached-input price,
// completion tokens at the output price; Batch API tokens at BatchDiscount
// of each.
func (u Usage) Cost() float64 {
	return u.Prices.cost(u.PromptTokens, u.CachedTokens, u.CompletionTokens) +
		BatchDiscount*u.Prices.cost(u.BatchPromptTokens, u.BatchCachedTokens, u.BatchCompletionTokens)
}

// CostPerMillionRows is Cost per distinct row sent, times a million: the
// price of enriching a million posts at this run's mix.
func (u Usage) CostPerMillionRows() float64 {
	if u.RowsSent == 0 {
		return 0
	}
	return u.Cost() / float64(u.RowsSent) * 1e6
}

// String is the one-line summary commands print and log.
func (u Usage) String() string {
	return fmt.Sprintf("requests=%d retries=%d throttled=%d server_errors=%d splits=%d rows_sent=%d batch_rows_sent=%d dedup_hits=%d "+
		"prompt_tokens=%d completion_tokens=%d cached_tokens=%d batch_prompt_tokens=%d batch_completion_tokens=%d batch_cached_tokens=%d "+
		"tokens_per_row=%.1f est_cost_usd=%.4f est_usd_per_million_rows=%.2f",
		u.Requests, u.Retries, u.Throttled, u.ServerErrors, u.Splits, u.RowsSent, u.BatchRowsSent, u.DedupHits,
		u.PromptTokens, u.CompletionTokens, u.CachedTokens, u.BatchPromptTokens, u.BatchCompletionTokens, u.BatchCachedTokens,
		u.TokensPerRow(), u.Cost(), u.CostPerMillionRows())
}

// usage is the live, concurrently updated form of Usage.
type usage struct {
	requests, retries, throttled, serverErrors, splits atomic.Int64
	rowsSent, batchRowsSent, dedupHits                 atomic.Int64
	prompt, completion, cached                         atomic.Int64
	batchPrompt, batchCompletion, batchCached          atomic.Int64
}

// add counts the tokens of one answer; batch says it came through the
// Batch API.
func (u *usage) add(t openai.Usage, batch bool) {
	cached := 0
	if t.PromptTokensDetails != nil {
		cached = t.PromptTokensDetails.CachedTokens
	}
	if batch {
		u.batchPrompt.Add(int64(t.PromptTokens))
		u.batchCompletion.Add(int64(t.CompletionTokens))
		u.batchCached.Add(int64(cached))
		return
	}
	u.prompt.Add(int64(t.PromptTokens))
	u.completion.Add(int64(t.CompletionTokens))
	u.cached.Add(int64(cached))
}

// sent counts n distinct rows sent; batch says through the Batch API.
func (u *usage) sent(n int, batch bool) {
	u.rowsSent.Add(int64(n))
	if batch {
		u.batchRowsSent.Add(int64(n))
	}
}

func (u *usage) snapshot(p Prices) Usage {
	return Usage{
		Requests: u.requests.Load(), Retries: u.retries.Load(), Throttled: u.throttled.Load(),
		ServerErrors: u.serverErrors.Load(), Splits: u.splits.Load(),
		RowsSent: u.rowsSent.Load(), BatchRowsSent: u.batchRowsSent.Load(), DedupHits: u.dedupHits.Load(),
		PromptTokens: u.prompt.Load(), CompletionTokens: u.completion.Load(), CachedTokens: u.cached.Load(),
		BatchPromptTokens: u.batchPrompt.Load(), BatchCompletionTokens: u.batchCompletion.Load(), BatchCachedTokens: u.batchCached.Load(),
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
