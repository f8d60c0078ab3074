package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Actions taken on a message once its work ends.
const (
	ActionAcked        = "acked"
	ActionReleased     = "released"
	ActionDeadLettered = "dead_lettered"
)

// MessageOutcome is what became of one message.
type MessageOutcome struct {
	Message  *Message
	Event    SnapshotEvent
	Results  []Result
	Action   string
	Reason   string // for dead-lettered messages
	Err      error
	Duration time.Duration
}

// Consumer receives snapshot events from a Source and processes them: it
// acknowledges a message only after the commits that made its work
// durable, dead-letters a message that can never succeed, and releases one
// that failed for a passing reason so that it comes back.
type Consumer struct {
	Source    Source
	Processor *Processor
	Logger    *slog.Logger
	// Grace is how long work in flight may go on once Run's context is
	// cancelled (default 30s); then it is cancelled and its message
	// released. The chunks it committed stay committed.
	Grace time.Duration
	// OnOutcome, when set, is called after each message is settled, from
	// the goroutine that called Run.
	OnOutcome func(MessageOutcome)
}

// Run consumes until the source is drained (nil) or ctx is cancelled (nil:
// shutdown is not an error). It stops receiving at once on cancellation
// and gives the message in flight Grace to finish.
func (c *Consumer) Run(ctx context.Context) error {
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	grace := c.Grace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	// work outlives ctx by at most grace.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			log.Warn("shutdown grace period over: cancelling work in flight", "grace", grace)
			cancelWork()
		}
	})
	defer func() {
		close(done)
		wg.Wait()
	}()

	for ctx.Err() == nil {
		msgs, err := c.Source.Receive(ctx, 1)
		switch {
		case errors.Is(err, ErrDrained):
			return nil
		case ctx.Err() != nil:
			// Shutting down: what was just received goes back untouched.
			c.releaseAll(work, log, msgs)
			continue
		case err != nil:
			return fmt.Errorf("receive: %w", err)
		}
		for i, m := range msgs {
			if ctx.Err() != nil {
				c.releaseAll(work, log, msgs[i:])
				break
			}
			out := c.handle(work, log, m)
			if c.OnOutcome != nil {
				c.OnOutcome(out)
			}
		}
	}
	log.Info("stopped receiving: shutting down")
	return nil
}

// releaseAll hands messages back to the source unprocessed.
func (c *Consumer) releaseAll(ctx context.Context, log *slog.Logger, msgs []*Message) {
	settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	for _, m := range msgs {
		if err := c.Source.Release(settle, m); err != nil {
			log.Warn("release message at shutdown", "message_id", m.ID, "err", err)
		}
	}
}

// settleTimeout bounds an ack, release or dead-letter call, which must go
// through even when the work context was cancelled.
const settleTimeout = 30 * time.Second

func (c *Consumer) handle(ctx context.Context, log *slog.Logger, m *Message) MessageOutcome {
	start := time.Now()
	out := MessageOutcome{Message: m}
	settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()

	ev, err := DecodeEvent(m.Body)
	if err == nil {
		out.Event = ev
		out.Results, err = c.Processor.Process(ctx, ev)
	}
	out.Err = err
	out.Duration = time.Since(start)
	var settleErr error
	switch reason, permanent := IsPermanent(err); {
	case err == nil:
		out.Action = ActionAcked
		settleErr = c.Source.Ack(settle, m)
	case permanent:
		out.Action, out.Reason = ActionDeadLettered, reason
		settleErr = c.Source.DeadLetter(settle, m, reason, err)
	default:
		out.Action = ActionReleased
		settleErr = c.Source.Release(settle, m)
	}
	if settleErr != nil {
		// The message will come back after its visibility timeout; the work
		// is idempotent, so that costs time, not correctness.
		out.Err = errors.Join(out.Err, fmt.Errorf("%s message %s: %w", out.Action, m.ID, settleErr))
	}
	c.logOutcome(log, out)
	return out
}

func (c *Consumer) logOutcome(log *slog.Logger, o MessageOutcome) {
	attrs := []any{"message_id", o.Message.ID, "receive_count", o.Message.ReceiveCount,
		"action", o.Action, "duration_ms", o.Duration.Milliseconds()}
	if o.Event.Table != "" {
		attrs = append(attrs, "table", o.Event.Table, "snapshot", o.Event.SnapshotID)
	}
	for _, r := range o.Results {
		attrs = append(attrs, slog.Group(r.Job, "outcome", string(r.Outcome), "from", r.From.String(),
			"to", r.To.String(), "rows", r.RowsWritten, "commits", r.Commits))
	}
	switch {
	case o.Err == nil:
		log.Info("message done", attrs...)
	case o.Action == ActionDeadLettered:
		log.Error("message dead-lettered", append(attrs, "reason", o.Reason, "err", o.Err)...)
	case errors.Is(o.Err, context.Canceled):
		log.Info("message released: work cancelled by shutdown", attrs...)
	default:
		log.Warn("message released for retry", append(attrs, "err", o.Err)...)
	}
}
