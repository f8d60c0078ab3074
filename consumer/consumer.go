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

// Handler does the work a message asks for. The pipeline's Processor is
// the enricher's; tests and other programs may bring their own.
type Handler interface {
	// Key names what m's work is serialized on: messages with the same key
	// are handled one after the other, in the order received (for
	// snapshot events, the source table). "" serializes m with nothing.
	Key(m *Message) string
	// Handle does m's work. A nil error means the work is durable and the
	// message is acknowledged; otherwise the error's class (see Classify)
	// says what becomes of the message. The Report, which may be nil, goes
	// to logs and to Consumer.OnOutcome.
	Handle(ctx context.Context, m *Message) (Report, error)
}

// Report is what a Handler tells about one message, for logs and metrics.
type Report interface {
	// LogAttrs are appended to the message's outcome log line.
	LogAttrs() []slog.Attr
}

// HandlerFunc adapts a function to a Handler whose messages serialize on
// nothing.
type HandlerFunc func(ctx context.Context, m *Message) (Report, error)

// Key implements Handler.
func (HandlerFunc) Key(*Message) string { return "" }

// Handle implements Handler.
func (f HandlerFunc) Handle(ctx context.Context, m *Message) (Report, error) { return f(ctx, m) }

// MessageOutcome is what became of one message.
type MessageOutcome struct {
	Message *Message
	// Report is the handler's, if it gave one.
	Report Report
	Action string
	Reason string // for dead-lettered messages
	// Class is the class of Err (ClassNone when the message was acked).
	Class    Class
	Err      error
	Duration time.Duration
	// RetryIn is how long a released message stays away (0: at once).
	RetryIn time.Duration
}

// Consumer receives messages from a Source and hands them to a Handler: it
// acknowledges a message only after the handler made its work durable,
// dead-letters a message that can never succeed, releases one that failed
// for a passing reason so that it comes back (after Retry-After, or after
// RetryBackoff doubled per receive), and stops on a failure that every
// message would meet (see Classify).
//
// It works on up to Concurrency messages at once, but on the messages of
// one key (Handler.Key) strictly one after the other, in the order
// received (that is also what keeps a FIFO queue's per-table order). While
// a message waits or is worked on, a source that needs it (Extender) gets
// a heartbeat that keeps the message invisible.
type Consumer struct {
	Source  Source
	Handler Handler
	Logger  *slog.Logger
	// Concurrency is how many messages are worked on at once (default 1).
	Concurrency int
	// Grace is how long work in flight may go on once Run's context is
	// cancelled (default 30s); then it is cancelled and its message
	// released. The chunks it committed stay committed.
	Grace time.Duration
	// OnOutcome, when set, is called after each message is settled. Calls
	// never overlap.
	OnOutcome func(MessageOutcome)
	// RetryBackoff, when positive and the source is a Delayer, keeps a
	// message that failed for a passing reason away for RetryBackoff x
	// 2^(receives-1), at most MaxRetryBackoff, so that an outage does not
	// spend the queue's maxReceiveCount in seconds. Messages handed back at
	// shutdown come back at once.
	RetryBackoff time.Duration

	outcomeMu sync.Mutex
}

// Run consumes until the source is drained (nil), ctx is cancelled (nil:
// shutdown is not an error) or a handler halts (the *HaltError). On
// cancellation or halt it stops receiving at once, releases the messages
// that were waiting for their key, and gives the work in flight Grace to
// finish.
func (c *Consumer) Run(parent context.Context) error {
	if c.Source == nil || c.Handler == nil {
		return errors.New("consumer: Source and Handler are required")
	}
	// ctx stops receiving: on the caller's cancellation or on a halt.
	ctx, halt := context.WithCancelCause(parent)
	defer halt(nil)
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	grace := c.Grace
	if grace <= 0 {
		grace = 30 * time.Second
	}
	conc := max(c.Concurrency, 1)
	// work outlives ctx by at most grace.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	done := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() {
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
		bg.Wait()
	}()

	s := &scheduler{
		c: c, ctx: ctx, work: work, log: log, halt: halt,
		held:    make(chan struct{}, 2*conc), // messages received and not yet settled
		running: make(chan struct{}, conc),   // messages being worked on
		waiting: map[string][]*held{},
	}
	err := s.receiveLoop()
	s.workers.Wait()
	if err != nil {
		return err
	}
	if cause := context.Cause(ctx); errors.As(cause, new(*HaltError)) {
		log.Error("stopped consuming: every message would fail the same way", "err", cause)
		return cause
	}
	if ctx.Err() != nil {
		log.Info("stopped receiving: shutting down")
	}
	return nil
}

// scheduler hands received messages to workers, one table at a time.
type scheduler struct {
	c         *Consumer
	ctx, work context.Context
	log       *slog.Logger
	halt      context.CancelCauseFunc
	held      chan struct{}
	running   chan struct{}
	workers   sync.WaitGroup

	mu      sync.Mutex
	waiting map[string][]*held // per busy key, the messages waiting for it
}

// held is a received message with its heartbeat.
type held struct {
	m             *Message
	stopHeartbeat func()
}

func (s *scheduler) receiveLoop() error {
	for s.ctx.Err() == nil {
		select {
		case s.held <- struct{}{}:
		case <-s.ctx.Done():
			return nil
		}
		n := 1
		for n < 10 {
			select {
			case s.held <- struct{}{}:
				n++
				continue
			default:
			}
			break
		}
		msgs, err := s.c.Source.Receive(s.ctx, n)
		for range n - len(msgs) {
			<-s.held
		}
		switch {
		case errors.Is(err, ErrDrained):
			return nil
		case s.ctx.Err() != nil:
			// Shutting down: what was just received goes back untouched.
			s.c.releaseAll(s.work, s.log, msgs)
			for range msgs {
				<-s.held
			}
			return nil
		case err != nil:
			return fmt.Errorf("receive: %w", err)
		}
		for _, m := range msgs {
			s.dispatch(&held{m: m, stopHeartbeat: s.heartbeat(m)})
		}
	}
	return nil
}

// key is what serializes messages: the handler's key, or the message
// itself when the handler names none.
func (s *scheduler) key(m *Message) string {
	if k := s.c.Handler.Key(m); k != "" {
		return "key:" + k
	}
	return "message:" + m.ID
}

func (s *scheduler) dispatch(h *held) {
	k := s.key(h.m)
	s.mu.Lock()
	if q, busy := s.waiting[k]; busy {
		s.waiting[k] = append(q, h)
		s.mu.Unlock()
		return
	}
	s.waiting[k] = nil
	s.mu.Unlock()
	s.workers.Go(func() { s.drainKey(k, h) })
}

// drainKey works on h, then on every message that arrived for the same key
// meanwhile, in order.
func (s *scheduler) drainKey(k string, h *held) {
	for h != nil {
		var out MessageOutcome
		if s.ctx.Err() != nil {
			// Shutting down before this one started: hand it back (the
			// heartbeat stops first, or it could hide the message again).
			h.stopHeartbeat()
			s.c.releaseAll(s.work, s.log, []*Message{h.m})
			<-s.held
		} else {
			slot := false
			select {
			case s.running <- struct{}{}:
				slot = true
			case <-s.ctx.Done():
			}
			if s.ctx.Err() != nil {
				// Shutdown or a halt came while this one waited for a slot
				// (or with it: select picks at random among the ready).
				if slot {
					<-s.running
				}
				h.stopHeartbeat()
				s.c.releaseAll(s.work, s.log, []*Message{h.m})
				<-s.held
				goto next
			}
			out = s.c.handle(s.work, s.log, h.m, h.stopHeartbeat)
			if out.Class == ClassHalt {
				// Before the slot is freed, so that no other message starts.
				s.halt(out.Err)
			}
			<-s.running
			<-s.held
			s.c.report(out)
		}
	next:
		s.mu.Lock()
		if q := s.waiting[k]; len(q) > 0 {
			h, s.waiting[k] = q[0], q[1:]
		} else {
			delete(s.waiting, k)
			h = nil
		}
		s.mu.Unlock()
	}
}

// heartbeat keeps m invisible while it is held, if the source needs it.
// The returned func stops it and waits for it.
func (s *scheduler) heartbeat(m *Message) func() {
	ext, ok := s.c.Source.(Extender)
	if !ok {
		return func() {}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(ext.HeartbeatInterval())
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if err := ext.Extend(s.work, m); err != nil {
					s.log.Warn("heartbeat failed: the message may be redelivered while in flight", "message_id", m.ID, "err", err)
				}
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
		})
	}
}

func (c *Consumer) report(out MessageOutcome) {
	if c.OnOutcome == nil {
		return
	}
	c.outcomeMu.Lock()
	defer c.outcomeMu.Unlock()
	c.OnOutcome(out)
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

// handle works on one message and settles it; the heartbeat is stopped
// just before the message is settled.
func (c *Consumer) handle(ctx context.Context, log *slog.Logger, m *Message, stopHeartbeat func()) MessageOutcome {
	start := time.Now()
	out := MessageOutcome{Message: m}
	settle, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()

	report, err := c.Handler.Handle(ctx, m)
	out.Report, out.Err = report, err
	out.Duration = time.Since(start)
	stopHeartbeat()
	class, wait := Classify(err)
	out.Class = class
	var settleErr error
	switch class {
	case ClassNone:
		out.Action = ActionAcked
		settleErr = c.Source.Ack(settle, m)
	case ClassPermanent:
		out.Reason, _ = IsPermanent(err)
		out.Action = ActionDeadLettered
		if settleErr = c.Source.DeadLetter(settle, m, out.Reason, err); errors.Is(settleErr, ErrNotDeadLettered) {
			// Not in the dead-letter queue (it refused the message, or
			// there is none): the message comes back (the source's error
			// says when), and the queue's own redrive takes it after
			// maxReceiveCount receives. Counting it dead-lettered would
			// hide that it cycles.
			out.Action = ActionReleased
		}
	default:
		out.Action = ActionReleased
		switch {
		case class == ClassHalt, errors.Is(err, context.Canceled), ctx.Err() != nil:
			// Handed back untouched: the next consumer takes it at once.
		case class == ClassRetryAfter:
			out.RetryIn = wait
		default:
			out.RetryIn = c.retryIn(m)
		}
		dl, ok := c.Source.(Delayer)
		if ok && out.RetryIn > 0 {
			settleErr = dl.ReleaseAfter(settle, m, out.RetryIn)
		} else {
			out.RetryIn = 0
			settleErr = c.Source.Release(settle, m)
		}
	}
	if settleErr != nil {
		// The message will come back after its visibility timeout; the work
		// is idempotent, so that costs time, not correctness.
		out.Err = errors.Join(out.Err, fmt.Errorf("%s message %s: %w", out.Action, m.ID, settleErr))
	}
	c.logOutcome(log, out)
	return out
}

// MaxRetryBackoff caps the delay of a released message (SQS allows 12h).
const MaxRetryBackoff = 15 * time.Minute

// retryIn is the delay before a failed message comes back.
func (c *Consumer) retryIn(m *Message) time.Duration {
	if c.RetryBackoff <= 0 {
		return 0
	}
	d := c.RetryBackoff
	for i := 1; i < m.ReceiveCount && d < MaxRetryBackoff; i++ {
		d *= 2
	}
	return min(d, MaxRetryBackoff)
}

func (c *Consumer) logOutcome(log *slog.Logger, o MessageOutcome) {
	attrs := []any{"message_id", o.Message.ID, "receive_count", o.Message.ReceiveCount,
		"action", o.Action, "duration_ms", o.Duration.Milliseconds()}
	if o.RetryIn > 0 {
		attrs = append(attrs, "retry_in_s", int(o.RetryIn.Seconds()))
	}
	if o.Report != nil {
		for _, a := range o.Report.LogAttrs() {
			attrs = append(attrs, a)
		}
	}
	switch {
	case o.Err == nil:
		log.Info("message done", attrs...)
	case o.Action == ActionDeadLettered:
		log.Error("message dead-lettered", append(attrs, "reason", o.Reason, "err", o.Err)...)
	case o.Class == ClassHalt:
		log.Error("message released: halting", append(attrs, "err", o.Err)...)
	case errors.Is(o.Err, context.Canceled):
		log.Info("message released: work cancelled by shutdown", attrs...)
	default:
		log.Warn("message released for retry", append(attrs, "class", o.Class.String(), "err", o.Err)...)
	}
}
