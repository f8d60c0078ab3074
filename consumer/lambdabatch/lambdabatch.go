// Package lambdabatch runs a consumer.Handler inside AWS Lambda: it turns
// one SQS event batch of an event source mapping (with
// ReportBatchItemFailures) into a consumer.Source, lets a consumer.Consumer
// work on it, and reports the records that must come back.
package lambdabatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/sqsqueue"
	"github.com/socialdata/enricher/internal/broadcast"
)

// Handler handles the SQS event batches of an AWS Lambda event source
// mapping with ReportBatchItemFailures. Every record is one message: those
// whose work is committed are reported done (Lambda deletes them), those
// that fail for a passing reason or are not finished before the deadline
// are reported as batch item failures (SQS redelivers them), and poison
// messages are sent to the dead-letter queue at once and reported done.
//
// The error classes of package consumer hold here too: a record released
// with a Retry-After stays invisible that long (ChangeMessageVisibility on
// its receipt handle, when API is set); a halt stops the batch and reports
// every unfinished record failed (logged at error level as "lambda batch
// halted"), while the records already settled stay settled, and, with
// Mappings, disables the function's event source mapping of the queue, so
// that Lambda stops polling until an operator enables it again.
type Handler struct {
	Handler consumer.Handler
	// API and DLQURL dead-letter poison messages. Without them a poison
	// message is reported failed, and the queue's redrive policy moves it
	// after maxReceiveCount receives. API also delays retries.
	API    sqsqueue.API
	DLQURL string
	Logger *slog.Logger
	// Concurrency is how many records are worked on at once (default 1).
	Concurrency int
	// RetryBackoff is the consumer's (see consumer.Consumer.RetryBackoff):
	// it needs API, to change the visibility of a failed record.
	RetryBackoff time.Duration
	// Margin is how long before the invocation's deadline the handler stops
	// starting work and cancels what runs (default: a tenth of the time
	// left, at least 3s). Half of it is the grace for work in flight.
	Margin time.Duration
	// Summary, when set, adds attributes to the handler's one log line per
	// batch ("lambda batch done"; the metrics are OnDone's business)
	// from the outcomes of the batch's records.
	Summary func([]consumer.MessageOutcome) []slog.Attr
	// Mappings and FunctionName (the Lambda runtime's
	// AWS_LAMBDA_FUNCTION_NAME) let a halt stop the event source: every
	// later batch would fail alike, and each of its receives would count
	// towards the queue's maxReceiveCount, until the messages reach the
	// dead-letter queue as max_receives. Without Mappings a halt only
	// reports the records failed, and Lambda goes on polling.
	Mappings     MappingsAPI
	FunctionName string
	// OnStart, when set, is called as a batch starts, before any of its
	// work; OnDone, when set, after it, with its figures, before Handle
	// returns. Handle runs one batch at a time (the Lambda runtime hands a
	// process one invocation at a time, except under Lambda Managed
	// Instances with AWS_LAMBDA_MAX_CONCURRENCY above 1, where they wait
	// for each other, until their own margin: a batch that cannot start
	// in time reports every record failed), so a batch's OnStart and
	// OnDone pair up and its figures are its own.
	OnStart func()
	OnDone  func(BatchDone)

	semOnce sync.Once
	sem     chan struct{} // holds a token while a batch runs
}

// BatchDone is what one batch came to.
type BatchDone struct {
	// Records is how many records the batch held, Failed how many come
	// back (all of them when the invocation fails), DeadLettered how many
	// were sent to the dead-letter queue.
	Records, Failed, DeadLettered int
	// Halted says a halt stopped the batch (see Handler); Paused is what
	// it did to the event source mappings (with Handler.Mappings).
	Halted bool
	Paused Paused
	// Outcomes are those of the records settled, in the order settled.
	Outcomes []consumer.MessageOutcome
}

// Handle processes one batch.
func (h *Handler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	log := h.Logger
	if log == nil {
		log = slog.Default()
	}
	runCtx := ctx
	grace := 30 * time.Second
	if deadline, ok := ctx.Deadline(); ok {
		margin := h.Margin
		if margin <= 0 {
			margin = max(time.Until(deadline)/10, 3*time.Second)
		}
		var cancel context.CancelFunc
		runCtx, cancel = context.WithDeadline(ctx, deadline.Add(-margin))
		defer cancel()
		grace = margin / 2
	}
	h.semOnce.Do(func() { h.sem = make(chan struct{}, 1) })
	select {
	case h.sem <- struct{}{}:
		defer func() { <-h.sem }()
	case <-runCtx.Done():
		// Another batch of this process ran until this one's margin:
		// nothing was started, every record comes back.
		resp := events.SQSEventResponse{}
		for _, r := range ev.Records {
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: r.MessageId})
		}
		log.Warn("lambda batch not started: another batch of this process ran until the deadline; every record is reported failed",
			"records", len(ev.Records))
		return resp, nil
	}
	if h.OnStart != nil {
		h.OnStart()
	}
	src := NewSource(ev, h.API, h.DLQURL)
	actions := map[string]int{}
	var outcomes []consumer.MessageOutcome
	c := &consumer.Consumer{Source: src, Handler: h.Handler, Logger: log, Concurrency: h.Concurrency, Grace: grace,
		RetryBackoff: h.RetryBackoff,
		OnOutcome: func(o consumer.MessageOutcome) {
			actions[o.Action]++
			outcomes = append(outcomes, o)
		}}
	runErr := c.Run(runCtx)
	resp := src.Response()
	attrs := []any{"records", len(ev.Records), "failed", len(resp.BatchItemFailures), "messages", actions}
	if h.Summary != nil {
		for _, a := range h.Summary(outcomes) {
			attrs = append(attrs, a)
		}
	}
	log.Info("lambda batch done", attrs...)
	halted := errors.As(runErr, new(*consumer.HaltError))
	var paused Paused
	if halted {
		paused = h.pause(ctx, log, src.sourceARN)
	}
	if h.OnDone != nil {
		done := BatchDone{Records: len(ev.Records), Failed: len(resp.BatchItemFailures), DeadLettered: src.DeadLettered(),
			Halted: halted, Paused: paused, Outcomes: outcomes}
		if runErr != nil && !halted {
			done.Failed = len(ev.Records) // a failed invocation hands the whole batch back
		}
		h.OnDone(done)
	}
	if runErr != nil {
		if halted {
			// resp lists every record not settled: they come back. Failing
			// the invocation would hand back the whole batch, the records
			// already acknowledged or dead-lettered too (dead-lettered
			// twice), so the halt is reported in the log and the response.
			log.Error("lambda batch halted: every record would fail the same way; the unfinished ones are reported failed",
				"failed", len(resp.BatchItemFailures), "err", runErr)
			return resp, nil
		}
		return events.SQSEventResponse{}, fmt.Errorf("lambda batch: %w", runErr)
	}
	return resp, nil
}

// pause stops the event source after a halt, when the handler can, and
// logs what it did: an operator must enable the mapping again once the
// cause (in the "lambda batch halted" line) is fixed.
func (h *Handler) pause(ctx context.Context, log *slog.Logger, sourceARN string) Paused {
	if h.Mappings == nil {
		log.Warn("lambda event source not paused: no Lambda API; the next batches meet the same halt and count receives towards maxReceiveCount")
		return Paused{}
	}
	p, err := pauseMappings(ctx, h.Mappings, h.FunctionName, sourceARN)
	ids := append(append(append([]string(nil), p.Disabled...), p.Off...), p.Busy...)
	if err != nil {
		log.Error("lambda event source not paused: the next batches meet the same halt and count receives towards maxReceiveCount",
			"function", h.FunctionName, "queue", sourceARN, "err", err)
		return p
	}
	if len(p.Disabled)+len(p.Off) == 0 {
		// Every mapping was held by another change (a deploy, or another
		// invocation's halt disabling it): this halt did not pause it.
		log.Error("lambda event source not paused: the mapping is being changed by another call; check it is disabled",
			"function", h.FunctionName, "queue", sourceARN, "busy", p.Busy,
			"disable_with", "aws lambda update-event-source-mapping --no-enabled --uuid "+ids[0])
		return p
	}
	log.Error("lambda event source paused: no batch is received until the mapping is enabled again; fix the cause, then enable it",
		"function", h.FunctionName, "queue", sourceARN, "disabled", p.Disabled, "already_disabled", p.Off, "busy", p.Busy,
		"enable_with", "aws lambda update-event-source-mapping --enabled --uuid "+ids[0])
	return p
}

// Source is a consumer.Source over the records of one Lambda invocation:
// finite (ErrDrained once every record is settled), and it redelivers
// nothing: a released record is reported in Response, for SQS to deliver
// again. API and DLQURL, both optional, dead-letter and delay records.
// A record is in flight from when Receive hands it out until one settle
// call takes it; its delivery does not expire here (the event source
// mapping's visibility timeout outlasts the invocation).
type Source struct {
	api    sqsqueue.API
	dlqURL string
	fifo   bool
	msgs   []*consumer.Message
	// sourceARN names the event source queue; url is its URL, found when
	// first needed.
	sourceARN string
	urlOnce   sync.Once
	url       string
	urlErr    error

	mu        sync.Mutex
	delivered int             // records handed out so far
	inFlight  map[string]bool // record key -> handed out and not taken by a settle call
	settled   int             // records whose settle call ended
	done      map[string]bool // record key -> its work is durable (or dead-lettered)
	dead      int             // records sent to the dead-letter queue
	changed   broadcast.Signal
}

// recordKey names m's record in the batch: its receipt handle, unique per
// record even when SQS delivered one message twice in a batch (a recorded
// or hand-made event may have none: then its message id).
func recordKey(m *consumer.Message) string {
	if m.Receipt != "" {
		return "receipt:" + m.Receipt
	}
	return "id:" + m.ID
}

var (
	_ consumer.Source  = (*Source)(nil)
	_ consumer.Delayer = (*Source)(nil)
)

// NewSource makes the source of one batch.
func NewSource(ev events.SQSEvent, api sqsqueue.API, dlqURL string) *Source {
	s := &Source{api: api, dlqURL: dlqURL, inFlight: map[string]bool{}, done: map[string]bool{}}
	for _, r := range ev.Records {
		s.sourceARN = r.EventSourceARN
		s.fifo = sqsqueue.IsFIFO(r.EventSourceARN)
		m := &consumer.Message{ID: r.MessageId, Body: []byte(r.Body), Receipt: r.ReceiptHandle, GroupID: r.Attributes["MessageGroupId"]}
		m.ReceiveCount, _ = strconv.Atoi(r.Attributes["ApproximateReceiveCount"])
		if ms, err := strconv.ParseInt(r.Attributes["SentTimestamp"], 10, 64); err == nil {
			m.SentAt = time.UnixMilli(ms).UTC()
		}
		s.msgs = append(s.msgs, m)
	}
	return s
}

// queueURL finds the event source queue's URL from its ARN
// (arn:PARTITION:sqs:REGION:ACCOUNT:NAME) once, by asking SQS.
func (s *Source) queueURL(ctx context.Context) (string, error) {
	s.urlOnce.Do(func() {
		parts := strings.SplitN(s.sourceARN, ":", 6)
		if len(parts) != 6 || parts[2] != "sqs" {
			s.urlErr = fmt.Errorf("event source %q is not an SQS queue ARN", s.sourceARN)
			return
		}
		out, err := s.api.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: &parts[5], QueueOwnerAWSAccountId: &parts[4]}, sqsqueue.OwnBody)
		if err != nil {
			s.urlErr = fmt.Errorf("queue URL of %s: %w", s.sourceARN, err)
			return
		}
		s.url = aws.ToString(out.QueueUrl)
	})
	return s.url, s.urlErr
}

// Receive implements consumer.Source.
func (s *Source) Receive(ctx context.Context, n int) ([]*consumer.Message, error) {
	for {
		s.mu.Lock()
		if s.delivered < len(s.msgs) {
			out := s.msgs[s.delivered:min(s.delivered+max(n, 1), len(s.msgs))]
			s.delivered += len(out)
			for _, m := range out {
				s.inFlight[recordKey(m)] = true
			}
			s.mu.Unlock()
			return out, nil
		}
		done, wake := s.settled == len(s.msgs), s.changed.C()
		s.mu.Unlock()
		if done {
			return nil, consumer.ErrDrained
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		}
	}
}

// take claims m's record for the one settle call that may settle it: it
// must be in flight (handed out, and not taken before). The caller then
// calls finish.
func (s *Source) take(m *consumer.Message, action string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := recordKey(m)
	if !s.inFlight[k] {
		return fmt.Errorf("%s message %s: %w: settled already, or not handed out by this batch", action, m.ID, consumer.ErrNotInFlight)
	}
	delete(s.inFlight, k)
	return nil
}

// finish settles the record take claimed: done (its work is durable, or
// it is in the dead-letter queue) or failed (reported in Response).
func (s *Source) finish(m *consumer.Message, done, dead bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settled++
	s.done[recordKey(m)] = done
	if dead {
		s.dead++
	}
	s.changed.Notify()
}

// Ack implements consumer.Source.
func (s *Source) Ack(_ context.Context, m *consumer.Message) error {
	if err := s.take(m, "ack"); err != nil {
		return err
	}
	s.finish(m, true, false)
	return nil
}

// Release implements consumer.Source.
func (s *Source) Release(_ context.Context, m *consumer.Message) error {
	if err := s.take(m, "release"); err != nil {
		return err
	}
	s.finish(m, false, false)
	return nil
}

// ReleaseAfter reports m failed and, when it can, keeps it invisible for
// d: Lambda leaves a failed record's visibility as it is, so without the
// change it would come back after the queue's visibility timeout.
func (s *Source) ReleaseAfter(ctx context.Context, m *consumer.Message, d time.Duration) error {
	if err := s.Release(ctx, m); err != nil {
		return err
	}
	if s.api == nil || m.Receipt == "" || d <= 0 {
		return nil
	}
	url, err := s.queueURL(ctx)
	if err != nil {
		return fmt.Errorf("delay message %s by %s: %w", m.ID, d, err)
	}
	secs := int32(min(d, 12*time.Hour) / time.Second)
	if _, err := s.api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: &url, ReceiptHandle: &m.Receipt, VisibilityTimeout: secs,
	}, sqsqueue.OwnBody); err != nil {
		return fmt.Errorf("delay message %s by %s: %w", m.ID, d, err)
	}
	return nil
}

// DeadLetter implements consumer.Source.
// A record not in flight is not sent.
func (s *Source) DeadLetter(ctx context.Context, m *consumer.Message, reason string, cause error) error {
	if err := s.take(m, "dead-letter"); err != nil {
		return err
	}
	if s.api == nil || s.dlqURL == "" {
		s.finish(m, false, false)
		return fmt.Errorf("dead-letter message %s (%s): %w: no dead-letter queue configured: it is reported failed", m.ID, reason, consumer.ErrNotDeadLettered)
	}
	if err := sqsqueue.SendDeadLetter(ctx, s.api, s.dlqURL, m, reason, cause, s.sourceARN); err != nil {
		s.finish(m, false, false)
		return fmt.Errorf("%w (%s), reported failed: %w", consumer.ErrNotDeadLettered, reason, err)
	}
	s.finish(m, true, true)
	return nil
}

// DeadLettered is how many records were sent to the dead-letter queue.
func (s *Source) DeadLettered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead
}

// Response lists the failed records: every record not settled as done.
// On a FIFO queue every record after a failed one in the same message
// group is reported failed too, so that SQS redelivers the group in order.
func (s *Source) Response() events.SQSEventResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	var resp events.SQSEventResponse
	failedGroup := map[string]bool{}
	for _, m := range s.msgs {
		fail := !s.done[recordKey(m)] || (s.fifo && failedGroup[m.GroupID])
		if fail {
			if s.fifo {
				failedGroup[m.GroupID] = true
			}
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: m.ID})
		}
	}
	return resp
}
