package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// LambdaHandler handles the SQS event batches of an AWS Lambda event source
// mapping with ReportBatchItemFailures. Every record is one message: those
// whose work is committed are reported done (Lambda deletes them), those
// that fail for a passing reason or are not finished before the deadline
// are reported as batch item failures (SQS redelivers them), and poison
// messages are sent to the dead-letter queue at once and reported done.
type LambdaHandler struct {
	Processor *Processor
	// API and DLQURL dead-letter poison messages. Without them a poison
	// message is reported failed, and the queue's redrive policy moves it
	// after maxReceiveCount receives.
	API    SQSAPI
	DLQURL string
	Logger *slog.Logger
	// Concurrency is how many records are worked on at once (default 1).
	Concurrency int
	// Margin is how long before the invocation's deadline the handler stops
	// starting work and cancels what runs (default: a tenth of the time
	// left, at least 3s). Half of it is the grace for work in flight.
	Margin time.Duration
}

// Handle processes one batch.
func (h *LambdaHandler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	log := h.Logger
	if log == nil {
		log = slog.Default()
	}
	src := newBatchSource(ev, h.API, h.DLQURL)
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
	// In Lambda the figures that run serves to Prometheus go out as one
	// structured log line per batch.
	actions := map[string]int{}
	rows := map[string]int64{}
	var conflicts, commits int
	c := &Consumer{Source: src, Processor: h.Processor, Logger: log, Concurrency: h.Concurrency, Grace: grace,
		OnOutcome: func(o MessageOutcome) {
			actions[o.Action]++
			for _, r := range o.Results {
				for st, n := range r.Counts {
					rows[r.Job+"/"+string(st)] += n
				}
				conflicts += r.Conflicts
				commits += r.Commits
			}
		}}
	if err := c.Run(runCtx); err != nil {
		return events.SQSEventResponse{}, fmt.Errorf("lambda batch: %w", err)
	}
	resp := src.response()
	log.Info("lambda batch done", "records", len(ev.Records), "failed", len(resp.BatchItemFailures),
		"messages", actions, "rows", rows, "commits", commits, "commit_conflicts", conflicts)
	return resp, nil
}

// batchSource is a Source over the records of one Lambda invocation.
type batchSource struct {
	api    SQSAPI
	dlqURL string
	fifo   bool
	msgs   []*Message
	// sourceARN is the event source queue, for the dead-letter attribute.
	sourceARN string

	mu        sync.Mutex
	delivered int // records handed out so far
	settled   int
	done      map[string]bool // message id -> its work is durable (or dead-lettered)
	wake      chan struct{}
}

var _ Source = (*batchSource)(nil)

func newBatchSource(ev events.SQSEvent, api SQSAPI, dlqURL string) *batchSource {
	s := &batchSource{api: api, dlqURL: dlqURL, done: map[string]bool{}, wake: make(chan struct{})}
	for _, r := range ev.Records {
		s.sourceARN = r.EventSourceARN
		if strings.HasSuffix(r.EventSourceARN, ".fifo") {
			s.fifo = true
		}
		m := &Message{ID: r.MessageId, Body: []byte(r.Body), handle: r.MessageId, GroupID: r.Attributes["MessageGroupId"]}
		m.ReceiveCount, _ = strconv.Atoi(r.Attributes["ApproximateReceiveCount"])
		if ms, err := strconv.ParseInt(r.Attributes["SentTimestamp"], 10, 64); err == nil {
			m.SentAt = time.UnixMilli(ms).UTC()
		}
		s.msgs = append(s.msgs, m)
	}
	return s
}

func (s *batchSource) Receive(ctx context.Context, n int) ([]*Message, error) {
	s.mu.Lock()
	if s.delivered < len(s.msgs) {
		out := s.msgs[s.delivered:min(s.delivered+max(n, 1), len(s.msgs))]
		s.delivered += len(out)
		s.mu.Unlock()
		return out, nil
	}
	s.mu.Unlock()
	for {
		s.mu.Lock()
		done, wake := s.settled == len(s.msgs), s.wake
		s.mu.Unlock()
		if done {
			return nil, ErrDrained
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		}
	}
}

func (s *batchSource) settle(m *Message, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settled++
	s.done[m.ID] = !failed
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *batchSource) Ack(_ context.Context, m *Message) error {
	s.settle(m, false)
	return nil
}

func (s *batchSource) Release(_ context.Context, m *Message) error {
	s.settle(m, true)
	return nil
}

func (s *batchSource) DeadLetter(ctx context.Context, m *Message, reason string, cause error) error {
	if s.api == nil || s.dlqURL == "" {
		s.settle(m, true)
		return fmt.Errorf("dead-letter message %s (%s): no dead-letter queue configured: it is reported failed", m.ID, reason)
	}
	errText := ""
	if cause != nil {
		errText = cause.Error()
	}
	in := &sqs.SendMessageInput{QueueUrl: &s.dlqURL, MessageBody: aws.String(string(m.Body)),
		MessageAttributes: DeadLetterAttributes(reason, errText, m.ID, m.ReceiveCount, s.sourceARN, time.Now())}
	if strings.HasSuffix(s.dlqURL, ".fifo") {
		group := m.GroupID
		if group == "" {
			group = "dead-letters"
		}
		in.MessageGroupId, in.MessageDeduplicationId = &group, aws.String(dedupID(m.ID))
	}
	if _, err := s.api.SendMessage(ctx, in); err != nil {
		s.settle(m, true)
		return fmt.Errorf("dead-letter message %s: %w", m.ID, err)
	}
	s.settle(m, false)
	return nil
}

// response lists the failed records: every record not settled as done.
// On a FIFO queue every record after a failed one in the same message
// group is reported failed too, so that SQS redelivers the group in order.
func (s *batchSource) response() events.SQSEventResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	var resp events.SQSEventResponse
	failedGroup := map[string]bool{}
	for _, m := range s.msgs {
		fail := !s.done[m.ID] || (s.fifo && failedGroup[m.GroupID])
		if fail {
			if s.fifo {
				failedGroup[m.GroupID] = true
			}
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: m.ID})
		}
	}
	return resp
}
