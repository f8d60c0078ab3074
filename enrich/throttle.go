package enrich

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/socialdata/enricher/internal/broadcast"
)

// ErrThrottled is matched (errors.Is) by a *ThrottledError.
var ErrThrottled = errors.New("the model throttled every request of the chunk")

// ErrChunkAbandoned is returned by Annotate for a chunk its caller
// abandoned (Chunk.Abandon): the caller will not write its rows.
var ErrChunkAbandoned = errors.New("chunk abandoned: its rows will not be written")

// ThrottledError says that no row of a chunk (see Chunk) got an answer:
// every request sent for it was throttled (HTTP 429 on its last attempt,
// after model.max_attempts) and none was answered. Nothing was bought, so
// nothing is lost by not writing the chunk: its rows should be asked again
// once the quota is back, rather than written as failed.
type ThrottledError struct {
	// Requests is how many requests of the chunk ended throttled.
	Requests int
	// Attempts is model.max_attempts: what each of them tried.
	Attempts int
	// RetryAfter is the longest wait the server asked for in the chunk's
	// 429s (retry-after-ms or Retry-After, at most 10 minutes); 0 when it
	// gave none.
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	hint := "the server gave no Retry-After"
	if e.RetryAfter > 0 {
		hint = fmt.Sprintf("the server asks to retry after %s", e.RetryAfter)
	}
	return fmt.Sprintf("every request sent for the chunk (%d) was throttled (HTTP 429, %d attempts each) and none was answered: its rows are not written, %s",
		e.Requests, e.Attempts, hint)
}

// Is makes a ThrottledError match ErrThrottled.
func (e *ThrottledError) Is(target error) bool { return target == ErrThrottled }

// Chunk groups the Annotate calls whose rows are written together or not
// at all (a pipeline chunk: one commit). A chat model asked within a
// chunk (WithChunk) does not write rows as failed when the chunk got no
// answer at all because every request sent for it was throttled: each
// Annotate call of the chunk returns a *ThrottledError instead. Once a
// request of the chunk ends throttled with nothing answered yet, no new
// request of the chunk is sent; the requests in flight go on (any of them
// may still be answered). If one is answered, the chunk will be written:
// the requests held back are sent, and rows that stay throttled are
// written as failed, as without a chunk. A model that sends no requests
// (lexicon, noop) ignores the chunk. The zero value is not usable: see
// NewChunk.
type Chunk struct {
	ctx    context.Context // done once abandoned
	cancel context.CancelCauseFunc

	mu         sync.Mutex
	inflight   int           // requests sent and not ended
	throttled  int           // requests that ended throttled
	answered   bool          // a request ended otherwise: the chunk will be written
	abandoned  bool          // the caller will not write the chunk
	retryAfter time.Duration // the longest hint of the throttled requests
	changed    broadcast.Signal
}

// NewChunk returns an empty chunk.
func NewChunk() *Chunk {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Chunk{ctx: ctx, cancel: cancel}
}

type chunkKey struct{}

// WithChunk returns ctx carrying ch: the Annotate calls made with it
// belong to ch.
func WithChunk(ctx context.Context, ch *Chunk) context.Context {
	return context.WithValue(ctx, chunkKey{}, ch)
}

func chunkFrom(ctx context.Context) *Chunk {
	ch, _ := ctx.Value(chunkKey{}).(*Chunk)
	return ch
}

// Abandon says that the chunk's rows will not be written (an earlier
// chunk failed): no request of it is sent or retried any more, but the
// requests in flight are not cut off (their answers, already paid for,
// go to the model's answer cache), and its Annotate calls return
// ErrChunkAbandoned.
func (ch *Chunk) Abandon() {
	ch.mu.Lock()
	ch.abandoned = true
	ch.changed.Notify()
	ch.mu.Unlock()
	ch.cancel(ErrChunkAbandoned)
}

// holding says that no new request is sent: the chunk is abandoned, or
// a request ended throttled and none was answered. Call with mu held.
func (ch *Chunk) holding() bool {
	return ch.abandoned || (ch.throttled > 0 && !ch.answered)
}

// held is holding for a chunk that may be nil (no chunk: never).
func (ch *Chunk) held() bool {
	if ch == nil {
		return false
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.holding()
}

// begin counts a request about to be sent; false: hold it back.
func (ch *Chunk) begin() bool {
	if ch == nil {
		return true
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.holding() {
		return false
	}
	ch.inflight++
	return true
}

// requestEnd is how a request that begin counted ended.
type requestEnd int

const (
	endAnswered  requestEnd = iota // any answer but a 429 past its attempts
	endThrottled                   // 429 on its last attempt
	endCancelled                   // cut off by its context: says nothing
)

// end counts the end of a request begin counted; retryAfter is the
// longest hint of its 429s.
func (ch *Chunk) end(how requestEnd, retryAfter time.Duration) {
	if ch == nil {
		return
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.inflight--
	switch how {
	case endAnswered:
		ch.answered = true
	case endThrottled:
		ch.throttled++
		ch.retryAfter = max(ch.retryAfter, retryAfter)
	}
	ch.changed.Notify()
}

// chunkFate is what becomes of a chunk's rows, as far as Annotate knows.
type chunkFate int

const (
	fateWritten   chunkFate = iota // send what was held back, write the rows
	fateThrottled                  // nothing answered and nothing in flight: final
	fateAbandoned
)

// settle waits until the chunk's fate is known: a request answered (its
// rows will be written), or none in flight and none answered with some
// throttled (final: no request can begin any more), or abandoned.
func (ch *Chunk) settle(ctx context.Context) (chunkFate, error) {
	for {
		ch.mu.Lock()
		switch {
		case ch.abandoned:
			ch.mu.Unlock()
			return fateAbandoned, nil
		case !ch.holding():
			ch.mu.Unlock()
			return fateWritten, nil
		case ch.inflight == 0:
			ch.mu.Unlock()
			return fateThrottled, nil
		}
		wait := ch.changed.C()
		ch.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// throttledError is the chunk's ThrottledError for a model of attempts.
func (ch *Chunk) throttledError(attempts int) *ThrottledError {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return &ThrottledError{Requests: ch.throttled, Attempts: attempts, RetryAfter: ch.retryAfter}
}
