package sqsqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	smithy "github.com/aws/smithy-go"

	"github.com/socialdata/enricher/consumer"
)

// The dead-letter tools: statistics, a look at the messages, and a redrive
// back to the source queue. They read a DLQ by receiving from it, which is
// the only way SQS offers: every look increments the messages'
// ApproximateReceiveCount, and the messages are invisible to others while
// the tool holds them (never longer than a visibility timeout, should the
// tool die).

// DLQAPI is the subset of the SQS client the dead-letter tools call.
// *sqs.Client implements it.
type DLQAPI interface {
	API
	StartMessageMoveTask(ctx context.Context, in *sqs.StartMessageMoveTaskInput, opts ...func(*sqs.Options)) (*sqs.StartMessageMoveTaskOutput, error)
}

var _ DLQAPI = (*sqs.Client)(nil)

// attrPrefix starts the names of the message attributes the consumer sets
// when it dead-letters a message (AttrReason and the others).
const attrPrefix = "enricher-"

const (
	// peekVisibility hides the messages a look holds from other readers;
	// they are released as soon as the look ends, or come back on their
	// own after this long if the tool dies.
	peekVisibility = 30 * time.Second
	// redriveVisibility hides a redrive batch while it is sent back.
	redriveVisibility = 60 * time.Second
	// statsSample and statsReceives bound the sampling of DLQStats.
	statsSample   = 100
	statsReceives = 10
	// releaseTimeout bounds the final release of held messages, which
	// runs even when the caller's context is cancelled.
	releaseTimeout = 30 * time.Second
)

// DLQURLOf returns the dead-letter queue of a source queue, from its
// RedrivePolicy. A queue without one is an error.
func DLQURLOf(ctx context.Context, api API, queueURL string) (string, error) {
	policy, err := queueAttribute(ctx, api, queueURL, types.QueueAttributeNameRedrivePolicy)
	if err != nil {
		return "", fmt.Errorf("queue %s: %w", queueURL, err)
	}
	url, err := dlqFromRedrivePolicy(ctx, api, policy)
	if err != nil {
		return "", fmt.Errorf("queue %s: %w", queueURL, err)
	}
	if url == "" {
		return "", fmt.Errorf("queue %s has no RedrivePolicy, so no dead-letter queue: pass --dlq-url", queueURL)
	}
	return url, nil
}

// Stats describes a dead-letter queue.
type Stats struct {
	// Depth holds the approximate counts of the whole queue.
	Depth
	// Sampled is how many messages were looked at for the fields below: at
	// most 100, so on a larger queue they describe a sample.
	Sampled int
	// OldestSentAt is the earliest SentTimestamp among the sampled (zero
	// when none was). For a message the queue's redrive policy moved it is
	// when the message was first sent to the source queue (standard
	// queues), and the DLQ's retention period counts from it.
	OldestSentAt time.Time
	// OldestAge is how long ago OldestSentAt was.
	OldestAge time.Duration
	// OldestDeadLetteredAt is the earliest time a sampled message was
	// dead-lettered: its enricher-dead-lettered-at attribute, else (moved by
	// the redrive policy) its SentTimestamp.
	OldestDeadLetteredAt time.Time
	// ByReason counts the sampled messages by reason.
	ByReason map[string]int
	// Retention is the queue's MessageRetentionPeriod.
	Retention time.Duration
}

// DLQStats counts the messages of a dead-letter queue and finds the age
// of the oldest. SQS only reports ages through CloudWatch, so DLQStats
// samples: it receives up to 100 messages (at most 10 receive calls), reads
// their timestamps and reasons, and releases them at once (visibility 0).
// The age is that of the oldest message among those sampled, exact when
// the queue holds at most 100 visible messages. Sampling increments the
// messages' ApproximateReceiveCount and hides them from other readers for
// the few milliseconds it takes.
func DLQStats(ctx context.Context, api API, dlqURL string) (st Stats, err error) {
	if st.Depth, err = QueueDepth(ctx, api, dlqURL); err != nil {
		return Stats{}, fmt.Errorf("dlq stats: %w", err)
	}
	retention, err := queueAttribute(ctx, api, dlqURL, types.QueueAttributeNameMessageRetentionPeriod)
	if err != nil {
		return Stats{}, fmt.Errorf("dlq stats: queue %s attributes: %w", dlqURL, err)
	}
	if secs, err := strconv.Atoi(retention); err == nil {
		st.Retention = time.Duration(secs) * time.Second
	}
	st.ByReason = map[string]int{}
	sc := newScan(api, dlqURL, peekVisibility)
	defer func() { err = errors.Join(err, sc.release(ctx, "dlq stats")) }()
	for range statsReceives {
		if st.Sampled >= statsSample {
			break
		}
		batch, done, err := sc.next(ctx, statsSample-st.Sampled)
		if err != nil {
			return st, fmt.Errorf("dlq stats: %w", err)
		}
		for _, m := range batch {
			dl := deadLetterFrom(m)
			st.Sampled++
			st.ByReason[dl.Reason]++
			if !dl.SentAt.IsZero() && (st.OldestSentAt.IsZero() || dl.SentAt.Before(st.OldestSentAt)) {
				st.OldestSentAt = dl.SentAt
			}
			at := dl.At
			if at.IsZero() {
				at = dl.SentAt
			}
			if !at.IsZero() && (st.OldestDeadLetteredAt.IsZero() || at.Before(st.OldestDeadLetteredAt)) {
				st.OldestDeadLetteredAt = at
			}
		}
		if done {
			break
		}
	}
	if !st.OldestSentAt.IsZero() {
		st.OldestAge = max(time.Since(st.OldestSentAt), 0)
	}
	return st, nil
}

// PeekDLQ returns up to limit messages of a dead-letter queue (0: all
// it can see) with why they are there, without consuming them: it receives
// them with a short visibility timeout and releases every one (visibility
// 0) once it has read them all, or when it fails or ctx is cancelled. It
// holds the messages until then so that the next receive brings new ones
// rather than the same again; should the process die, they come back on
// their own within 30 seconds. With reasons, only messages whose reason is
// one of them are returned. A message the queue's own redrive policy moved
// has no enricher-reason attribute: its reason is max_receives.
//
// Receiving increments each message's ApproximateReceiveCount (the
// ReceiveCount returned includes this look); if the DLQ itself has a
// redrive policy, repeated looks can push messages on to its DLQ. On a FIFO
// queue, a look sees at most the first ten messages of each message group.
func PeekDLQ(ctx context.Context, api API, dlqURL string, limit int, reasons []string) (out []consumer.DeadLetter, err error) {
	sc := newScan(api, dlqURL, peekVisibility)
	defer func() { err = errors.Join(err, sc.release(ctx, "peek")) }()
	for limit <= 0 || len(out) < limit {
		want := 10
		if limit > 0 && len(reasons) == 0 {
			want = limit - len(out)
		}
		batch, done, err := sc.next(ctx, want)
		if err != nil {
			return out, fmt.Errorf("peek: %w", err)
		}
		for _, m := range batch {
			dl := deadLetterFrom(m)
			if len(reasons) > 0 && !slices.Contains(reasons, dl.Reason) {
				continue
			}
			if limit > 0 && len(out) == limit {
				break
			}
			out = append(out, dl)
		}
		if done {
			break
		}
	}
	return out, nil
}

// deadLetterFrom reads a message received from a DLQ.
func deadLetterFrom(m types.Message) consumer.DeadLetter {
	dl := consumer.DeadLetter{Message: *fromSQS(m)}
	dl.Reason = dl.Attributes[AttrReason]
	if dl.Reason == "" {
		dl.Reason = consumer.ReasonMaxReceives
	}
	dl.Error = dl.Attributes[AttrError]
	if at, err := time.Parse(time.RFC3339Nano, dl.Attributes[AttrDeadLetteredAt]); err == nil {
		dl.At = at
	}
	return dl
}

// RedriveOptions say what Redrive moves where.
type RedriveOptions struct {
	// DLQURL is the dead-letter queue the messages are in.
	DLQURL string
	// QueueURL is the source queue they go back to.
	QueueURL string
	// Max bounds the messages moved (0: all).
	Max int
	// Reasons, if not empty, moves only the messages whose reason is one of
	// them; the others stay in the DLQ.
	Reasons []string
	// DryRun counts what would move and moves nothing.
	DryRun bool
	// Progress, if set, is called after each message moved or skipped,
	// with the totals so far.
	Progress func(moved, skipped int)
}

// RedriveResult says what Redrive did.
type RedriveResult struct {
	// Moved is how many messages were sent to the source queue and deleted
	// from the DLQ (with DryRun: how many would have been).
	Moved int
	// Skipped is how many messages were left in the DLQ because their
	// reason is not among RedriveOptions.Reasons.
	Skipped int
	// ByReason counts the messages moved by reason.
	ByReason map[string]int
	// MoveTask is set when SQS started a message move task instead: the
	// move is asynchronous and Moved is 0.
	MoveTask *MoveTask
}

// MoveTask is an SQS message move task that Redrive started.
type MoveTask struct {
	// Handle identifies the task (CancelMessageMoveTask takes it).
	Handle string
	// SourceArn is the DLQ, DestinationArn the source queue.
	SourceArn, DestinationArn string
}

// Redrive moves the messages of a dead-letter queue back to their source
// queue.
//
// When it is to move everything (no Max, no Reasons, not DryRun) it first
// asks SQS to do it with StartMessageMoveTask: SQS then moves the messages
// asynchronously, and Redrive returns the task at once in
// RedriveResult.MoveTask. The messages keep all their attributes, the
// enricher-* ones too (the consumer ignores them). If the server does not
// know the action (an emulator, or a region without it), Redrive falls back
// to moving the messages itself; any other error is returned.
//
// Itself, it receives a batch (hidden for 60 seconds), sends each message
// to the source queue with its body and message attributes, less the
// enricher-* ones, and deletes it from the DLQ only after the send
// succeeded. Into a FIFO queue the message group is the message's own, or
// else the table named in the body, and the deduplication id is derived
// from the DLQ message id, so that a message sent twice within five
// minutes arrives once. An interruption between a send and its delete
// leaves a copy in both queues, which is harmless since processing is
// idempotent: nothing is deleted before it was sent. Messages filtered out
// by reason are held until the run ends and then released (visibility 0),
// so that the following receives bring other messages; on a FIFO DLQ a
// held message keeps the rest of its group back for this run.
//
// It stops at Max, when a receive comes back empty or with messages it has
// already seen, or when ctx is cancelled: then it returns what it did so
// far with ctx.Err(). A DryRun receives and releases everything and moves
// nothing.
func Redrive(ctx context.Context, api DLQAPI, o RedriveOptions) (res RedriveResult, err error) {
	res.ByReason = map[string]int{}
	if o.DLQURL == "" || o.QueueURL == "" {
		return res, errors.New("redrive: both the dead-letter queue and the source queue URL are required")
	}
	if o.DLQURL == o.QueueURL {
		return res, fmt.Errorf("redrive: the dead-letter queue and the source queue are the same queue (%s)", o.DLQURL)
	}
	if o.Max < 0 {
		return res, fmt.Errorf("redrive: max must not be negative, got %d", o.Max)
	}
	if o.Max == 0 && len(o.Reasons) == 0 && !o.DryRun {
		task, err := startMoveTask(ctx, api, o.DLQURL, o.QueueURL)
		if err == nil {
			res.MoveTask = task
			return res, nil
		}
		if !errors.Is(err, errNoMoveTask) {
			return res, err
		}
	}

	sc := newScan(api, o.DLQURL, redriveVisibility)
	defer func() { err = errors.Join(err, sc.release(ctx, "redrive")) }()
	for o.Max == 0 || res.Moved < o.Max {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		want := 10
		if o.Max > 0 {
			want = o.Max - res.Moved
		}
		batch, done, err := sc.next(ctx, want)
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			return res, fmt.Errorf("redrive: %w", err)
		}
		for _, m := range batch {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			if o.Max > 0 && res.Moved >= o.Max {
				break // the rest of the batch is released
			}
			dl := deadLetterFrom(m)
			if len(o.Reasons) > 0 && !slices.Contains(o.Reasons, dl.Reason) {
				res.Skipped++
			} else {
				if !o.DryRun {
					if err := moveBack(ctx, api, o.QueueURL, m, dl); err != nil {
						return res, err
					}
					dctx, cancel := detached(ctx)
					_, err := api.DeleteMessage(dctx, &sqs.DeleteMessageInput{QueueUrl: &o.DLQURL, ReceiptHandle: m.ReceiptHandle}, OwnBody)
					cancel()
					if err != nil {
						return res, fmt.Errorf("redrive: delete message %s from %s (it is now in both queues): %w", dl.ID, o.DLQURL, err)
					}
					sc.forget(dl.ID)
				}
				res.Moved++
				res.ByReason[dl.Reason]++
			}
			if o.Progress != nil {
				o.Progress(res.Moved, res.Skipped)
			}
		}
		if done {
			break
		}
	}
	return res, nil
}

// moveBack sends a dead-lettered message to the source queue, without the
// enricher-* attributes. Into a FIFO queue it goes in its own group, or
// else the group of the table its body names.
func moveBack(ctx context.Context, api API, queueURL string, m types.Message, dl consumer.DeadLetter) error {
	var attrs map[string]types.MessageAttributeValue
	for k, v := range m.MessageAttributes {
		if strings.HasPrefix(k, attrPrefix) {
			continue
		}
		if attrs == nil {
			attrs = map[string]types.MessageAttributeValue{}
		}
		attrs[k] = types.MessageAttributeValue{DataType: v.DataType, StringValue: v.StringValue, BinaryValue: v.BinaryValue}
	}
	group := dl.GroupID
	if group == "" {
		// Leniently: a body that is not a valid event may still name its table.
		var ev struct {
			Table string `json:"table"`
		}
		if json.Unmarshal(dl.Body, &ev) == nil {
			group = ev.Table
		}
	}
	ctx, cancel := detached(ctx)
	defer cancel()
	if err := send(ctx, api, queueURL, aws.ToString(m.Body), attrs, group, dl.ID); err != nil {
		return fmt.Errorf("redrive: message %s: %w", dl.ID, err)
	}
	return nil
}

// detached is ctx without its cancellation, for a send and the delete that
// follows it: once a message is on its way, a cancellation lets both
// finish, so that an interrupted redrive leaves as few copies behind as it
// can. They are bounded by their own timeout instead.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
}

// errNoMoveTask says that the server does not support message move tasks.
var errNoMoveTask = errors.New("message move tasks are not supported")

// startMoveTask asks SQS to move every message of the DLQ to the queue.
func startMoveTask(ctx context.Context, api DLQAPI, dlqURL, queueURL string) (*MoveTask, error) {
	src, err := queueArn(ctx, api, dlqURL)
	if err != nil {
		return nil, fmt.Errorf("redrive: %w", err)
	}
	dst, err := queueArn(ctx, api, queueURL)
	if err != nil {
		return nil, fmt.Errorf("redrive: %w", err)
	}
	out, err := api.StartMessageMoveTask(ctx, &sqs.StartMessageMoveTaskInput{SourceArn: &src, DestinationArn: &dst}, OwnBody)
	if err != nil {
		if unknownAction(err) {
			return nil, fmt.Errorf("redrive: %w: %w", errNoMoveTask, err)
		}
		return nil, fmt.Errorf("redrive: start message move task from %s to %s: %w", src, dst, err)
	}
	return &MoveTask{Handle: aws.ToString(out.TaskHandle), SourceArn: src, DestinationArn: dst}, nil
}

// unknownAction reports whether err says the server does not implement
// the action called: an API error whose code is InvalidAction (what SQS
// answers for an action it does not know, and what the fauxqs emulator
// answers with HTTP 400), UnsupportedOperation or the like, or whose message
// says the action or operation is unknown.
func unknownAction(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "InvalidAction", "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation",
		"UnknownOperationException", "NotImplemented":
		return true
	}
	msg := strings.ToLower(ae.ErrorMessage())
	return strings.Contains(msg, "unknown action") || strings.Contains(msg, "unknown operation")
}

// queueAttribute reads one attribute of a queue ("" if the queue has
// none).
func queueAttribute(ctx context.Context, api API, url string, name types.QueueAttributeName) (string, error) {
	out, err := api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       &url,
		AttributeNames: []types.QueueAttributeName{name},
	}, OwnBody)
	if err != nil {
		return "", err
	}
	return out.Attributes[string(name)], nil
}

// queueArn reads the ARN of a queue.
func queueArn(ctx context.Context, api API, url string) (string, error) {
	arn, err := queueAttribute(ctx, api, url, types.QueueAttributeNameQueueArn)
	if err != nil {
		return "", fmt.Errorf("queue %s ARN: %w", url, err)
	}
	if arn == "" {
		return "", fmt.Errorf("queue %s has no QueueArn attribute", url)
	}
	return arn, nil
}

// scan receives a queue's messages batch after batch, each message once,
// and holds what it received until release.
type scan struct {
	api        API
	url        string
	visibility int32
	seen       map[string]bool
	held       map[string]string // message id -> receipt handle of its latest delivery
}

func newScan(api API, url string, visibility time.Duration) *scan {
	return &scan{api: api, url: url, visibility: int32(visibility / time.Second), seen: map[string]bool{}, held: map[string]string{}}
}

// next receives up to n messages (1 to 10) and returns those not seen
// before. done says there is nothing more to see: the receive came back
// empty or with messages already seen only.
func (s *scan) next(ctx context.Context, n int) (fresh []types.Message, done bool, err error) {
	out, err := s.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:            &s.url,
		MaxNumberOfMessages: int32(min(max(n, 1), 10)),
		VisibilityTimeout:   s.visibility,
		WaitTimeSeconds:     1,
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{
			types.MessageSystemAttributeNameApproximateReceiveCount,
			types.MessageSystemAttributeNameSentTimestamp,
			types.MessageSystemAttributeNameMessageGroupId,
		},
		MessageAttributeNames: []string{"All"},
	}, OwnBody)
	if err != nil {
		return nil, false, fmt.Errorf("receive from %s: %w", s.url, err)
	}
	for _, m := range out.Messages {
		id := aws.ToString(m.MessageId)
		s.held[id] = aws.ToString(m.ReceiptHandle)
		if !s.seen[id] {
			s.seen[id] = true
			fresh = append(fresh, m)
		}
	}
	return fresh, len(fresh) == 0, nil
}

// forget drops a message that is gone (deleted) from those held.
func (s *scan) forget(id string) { delete(s.held, id) }

// release makes every held message visible again. It runs even when ctx
// is cancelled. A message whose hold has run out already is fine.
func (s *scan) release(ctx context.Context, what string) error {
	if len(s.held) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	var errs []error
	for id, handle := range s.held {
		_, err := s.api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: &s.url, ReceiptHandle: &handle, VisibilityTimeout: 0}, OwnBody)
		var ae smithy.APIError
		if err != nil && !(errors.As(err, &ae) && strings.HasSuffix(ae.ErrorCode(), "MessageNotInflight")) {
			errs = append(errs, fmt.Errorf("%s: release message %s (it becomes visible again within %ds): %w", what, id, s.visibility, err))
		}
		delete(s.held, id)
	}
	return errors.Join(errs...)
}
