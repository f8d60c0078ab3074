package sqsqueue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/socialdata/enricher/consumer"
)

// API is the subset of the SQS client the consumer, the publisher and
// the dead-letter tools call. *sqs.Client implements it.
type API interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, opts ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, opts ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, opts ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
	GetQueueUrl(ctx context.Context, in *sqs.GetQueueUrlInput, opts ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
}

var _ API = (*sqs.Client)(nil)

// consumer.Message attributes the consumer sets on a dead-lettered message.
const (
	AttrReason            = "enricher-reason"
	AttrError             = "enricher-error"
	AttrOriginalMessageID = "enricher-original-message-id"
	AttrReceiveCount      = "enricher-receive-count"
	AttrDeadLetteredAt    = "enricher-dead-lettered-at"
	AttrSourceQueue       = "enricher-source-queue"
)

// maxErrorAttr bounds the error text carried in a message attribute.
const maxErrorAttr = 2048

// Config says which queue an Source reads.
type Config struct {
	// QueueURL is the source queue.
	QueueURL string
	// DLQURL is the dead-letter queue; empty: found from the source queue's
	// RedrivePolicy.
	DLQURL string
	// WaitTime is the long-poll wait of one receive (default 20s).
	WaitTime time.Duration
	// Drain makes Receive return consumer.ErrDrained once the queue is empty and
	// nothing received is still in flight, for batch runs and tests.
	Drain bool
}

// Source is a Source on an Amazon SQS queue (standard or FIFO). Ack
// deletes, Release makes the message visible again at once, consumer.DeadLetter
// sends it to the dead-letter queue with the reason in its attributes and
// then deletes it. While a message is in flight, Extend keeps it invisible.
//
// The source keeps each delivery it made until one call settles it, by
// receipt handle, and when its visibility timeout ends. A delivery settled
// already, or expired (its time passed, or its message was received here
// again), is not in flight: a call that settles or extends it fails with
// consumer.ErrNotInFlight and sends SQS nothing, which would acknowledge a
// delete of a stale receipt handle and delete nothing.
type Source struct {
	api        API
	cfg        Config
	dlqURL     string
	fifo       bool
	visibility time.Duration // the queue's visibility timeout

	warnings []string

	mu sync.Mutex
	// inFlight holds the deliveries received here and not settled, by
	// receipt handle; latest is the receipt of each message's latest
	// delivery here, by message id.
	inFlight map[string]*delivery
	latest   map[string]string
}

// delivery is a message received here and not settled yet.
type delivery struct {
	id string
	// expires is when its visibility timeout ends unless extended, as seen
	// from here: counted from when the receive returned (SQS started it a
	// network trip earlier) and from when an Extend was sent.
	expires time.Time
	// again says the message was received again here since: SQS takes
	// only the latest receipt handle (it acknowledges a delete with an
	// older one, and does nothing).
	again bool
}

// expired says why d is no longer in flight at now ("" while it is).
func (d *delivery) expired(now time.Time) string {
	switch {
	case d.again:
		return "its delivery expired: the message was received again since"
	case !now.Before(d.expires):
		return fmt.Sprintf("its delivery expired %s ago (the visibility timeout ended)", now.Sub(d.expires).Round(time.Millisecond))
	}
	return ""
}

var (
	_ consumer.Source   = (*Source)(nil)
	_ consumer.Delayer  = (*Source)(nil)
	_ consumer.Extender = (*Source)(nil)
)

// NewSource checks the queue and finds its dead-letter queue and
// visibility timeout.
func NewSource(ctx context.Context, api API, cfg Config) (*Source, error) {
	if cfg.QueueURL == "" {
		return nil, errors.New("sqs source: a queue URL is required")
	}
	if cfg.WaitTime <= 0 {
		cfg.WaitTime = 20 * time.Second
	}
	s := &Source{api: api, cfg: cfg, fifo: IsFIFO(cfg.QueueURL), inFlight: map[string]*delivery{}, latest: map[string]string{}}
	attrs, err := api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: &cfg.QueueURL,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameVisibilityTimeout, types.QueueAttributeNameRedrivePolicy,
			types.QueueAttributeNameMaximumMessageSize},
	})
	if err != nil {
		return nil, fmt.Errorf("sqs source: queue %s: %w", cfg.QueueURL, err)
	}
	secs, _ := strconv.Atoi(attrs.Attributes[string(types.QueueAttributeNameVisibilityTimeout)])
	s.visibility = time.Duration(max(secs, 1)) * time.Second
	s.dlqURL = cfg.DLQURL
	if s.dlqURL == "" {
		s.dlqURL, err = dlqFromRedrivePolicy(ctx, api, attrs.Attributes[string(types.QueueAttributeNameRedrivePolicy)])
		if err != nil {
			return nil, fmt.Errorf("sqs source: queue %s: %w", cfg.QueueURL, err)
		}
	}
	if s.dlqURL != "" {
		srcMax, err := strconv.Atoi(attrs.Attributes[string(types.QueueAttributeNameMaximumMessageSize)])
		if err != nil || srcMax <= 0 {
			srcMax = DefaultMaxMessageSize
		}
		switch dlqMax, err := maxMessageSize(ctx, api, s.dlqURL); {
		case err != nil:
			s.warnings = append(s.warnings, fmt.Sprintf("the dead-letter queue's size limit cannot be read (%v): a dead-letter send may fail", err))
		case dlqMax < srcMax:
			s.warnings = append(s.warnings, fmt.Sprintf("the dead-letter queue %s takes messages of up to %d bytes, the source queue up to %d: a larger message cannot be dead-lettered and comes back until the queue's own redrive takes it; give both the same MaximumMessageSize", s.dlqURL, dlqMax, srcMax))
		}
	}
	return s, nil
}

// Warnings are what NewSource found wrong with the queues that does not
// stop a consumer: say them at start.
func (s *Source) Warnings() []string { return s.warnings }

// RedrivePolicy is the JSON of an SQS queue's RedrivePolicy attribute.
type RedrivePolicy struct {
	DeadLetterTargetArn string `json:"deadLetterTargetArn"`
	MaxReceiveCount     any    `json:"maxReceiveCount"` // a number or a string, depending on who wrote it
}

// dlqFromRedrivePolicy returns the URL of the dead-letter queue a
// RedrivePolicy names ("" when there is none).
func dlqFromRedrivePolicy(ctx context.Context, api API, policy string) (string, error) {
	if policy == "" {
		return "", nil
	}
	var rp RedrivePolicy
	if err := json.Unmarshal([]byte(policy), &rp); err != nil {
		return "", fmt.Errorf("redrive policy %q: %w", policy, err)
	}
	name := rp.DeadLetterTargetArn[strings.LastIndexByte(rp.DeadLetterTargetArn, ':')+1:]
	in := &sqs.GetQueueUrlInput{QueueName: &name}
	if parts := strings.Split(rp.DeadLetterTargetArn, ":"); len(parts) == 6 {
		in.QueueOwnerAWSAccountId = &parts[4]
	}
	out, err := api.GetQueueUrl(ctx, in)
	if err != nil {
		return "", fmt.Errorf("dead-letter queue %s: %w", rp.DeadLetterTargetArn, err)
	}
	return aws.ToString(out.QueueUrl), nil
}

// DLQURL is the dead-letter queue in use ("" if the queue has none).
func (s *Source) DLQURL() string { return s.dlqURL }

// Receive implements Source: it long-polls until messages arrive.
func (s *Source) Receive(ctx context.Context, n int) ([]*consumer.Message, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		wait := s.cfg.WaitTime
		if s.cfg.Drain {
			wait = min(wait, 2*time.Second)
		}
		out, err := s.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl:            &s.cfg.QueueURL,
			MaxNumberOfMessages: int32(min(max(n, 1), 10)),
			WaitTimeSeconds:     int32(wait / time.Second),
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{
				types.MessageSystemAttributeNameApproximateReceiveCount,
				types.MessageSystemAttributeNameSentTimestamp,
				types.MessageSystemAttributeNameMessageGroupId,
			},
			MessageAttributeNames: []string{"All"},
		}, OwnBody) // see OwnBody: a lost response would hide a batch for a visibility timeout
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("receive from %s: %w", s.cfg.QueueURL, err)
		}
		if len(out.Messages) > 0 {
			expires := time.Now().Add(s.visibility)
			msgs := make([]*consumer.Message, len(out.Messages))
			s.mu.Lock()
			for i, m := range out.Messages {
				msgs[i] = fromSQS(m)
				if old, ok := s.latest[msgs[i].ID]; ok && s.inFlight[old] != nil {
					s.inFlight[old].again = true // SQS takes only the latest receipt
				}
				s.inFlight[msgs[i].Receipt] = &delivery{id: msgs[i].ID, expires: expires}
				s.latest[msgs[i].ID] = msgs[i].Receipt
			}
			s.mu.Unlock()
			return msgs, nil
		}
		if s.cfg.Drain {
			drained, err := s.drained(ctx)
			if err != nil {
				return nil, err
			}
			if drained {
				return nil, consumer.ErrDrained
			}
		}
	}
}

func fromSQS(m types.Message) *consumer.Message {
	msg := &consumer.Message{ID: aws.ToString(m.MessageId), Body: []byte(aws.ToString(m.Body)), Receipt: aws.ToString(m.ReceiptHandle)}
	msg.ReceiveCount, _ = strconv.Atoi(m.Attributes[string(types.MessageSystemAttributeNameApproximateReceiveCount)])
	if ms, err := strconv.ParseInt(m.Attributes[string(types.MessageSystemAttributeNameSentTimestamp)], 10, 64); err == nil {
		msg.SentAt = time.UnixMilli(ms).UTC()
	}
	msg.GroupID = m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)]
	if len(m.MessageAttributes) > 0 {
		msg.Attributes = make(map[string]string, len(m.MessageAttributes))
		for k, v := range m.MessageAttributes {
			msg.Attributes[k] = aws.ToString(v.StringValue)
		}
	}
	return msg
}

// drained reports whether nothing is left: none in flight here and none
// visible, in flight elsewhere or delayed in the queue.
func (s *Source) drained(ctx context.Context) (bool, error) {
	s.mu.Lock()
	busy := len(s.inFlight) > 0
	s.mu.Unlock()
	if busy {
		return false, nil
	}
	n, err := QueueDepth(ctx, s.api, s.cfg.QueueURL)
	if err != nil {
		return false, err
	}
	return n.Visible+n.InFlight+n.Delayed == 0, nil
}

// take settles m's delivery here, whatever comes of the call that then
// settles it in SQS, so that only one caller takes a delivery. Its error
// (which names action) wraps consumer.ErrNotInFlight when m was not in
// flight: settled already or not received here, or its delivery expired
// (expired: m comes back, and the caller must not touch it in SQS).
func (s *Source) take(m *consumer.Message, action string) (expired bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.inFlight[m.Receipt]
	if !ok {
		return false, fmt.Errorf("%s message %s: %w: settled already, or not received from this source", action, m.ID, consumer.ErrNotInFlight)
	}
	delete(s.inFlight, m.Receipt)
	if s.latest[d.id] == m.Receipt {
		delete(s.latest, d.id)
	}
	if why := d.expired(time.Now()); why != "" {
		return true, fmt.Errorf("%s message %s: %w: %s; it comes back", action, m.ID, consumer.ErrNotInFlight, why)
	}
	return false, nil
}

// Ack implements Source.
func (s *Source) Ack(ctx context.Context, m *consumer.Message) error {
	if _, err := s.take(m, "ack"); err != nil {
		return err
	}
	if _, err := s.api.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &s.cfg.QueueURL, ReceiptHandle: &m.Receipt}); err != nil {
		return fmt.Errorf("delete message %s: %w", m.ID, err)
	}
	return nil
}

// Release implements Source: the message is visible again at once.
func (s *Source) Release(ctx context.Context, m *consumer.Message) error {
	return s.ReleaseAfter(ctx, m, 0)
}

// ReleaseAfter implements consumer.Delayer: the message becomes visible again after
// d (whole seconds, at most SQS's 12 hours).
func (s *Source) ReleaseAfter(ctx context.Context, m *consumer.Message, d time.Duration) error {
	if _, err := s.take(m, "release"); err != nil {
		return err
	}
	secs := int32(min(max(d, 0), 12*time.Hour) / time.Second)
	if _, err := s.api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: &s.cfg.QueueURL, ReceiptHandle: &m.Receipt, VisibilityTimeout: secs,
	}); err != nil {
		return fmt.Errorf("release message %s: %w", m.ID, err)
	}
	return nil
}

// consumer.DeadLetter implements Source: it sends the body to the dead-letter queue
// with the reason in message attributes, then deletes the original. If the
// delete fails the message comes back and is dead-lettered again: a
// duplicate in the DLQ, never a loss. Without a DLQ the message is
// released, and the queue's own redrive (if any) takes over.
func (s *Source) DeadLetter(ctx context.Context, m *consumer.Message, reason string, cause error) error {
	if s.dlqURL == "" {
		if err := s.Release(ctx, m); err != nil {
			// Not in the DLQ either way (there is none): the message
			// comes back, as the consumer must count it.
			return fmt.Errorf("dead-letter message %s (%s): %w: no dead-letter queue, and the release failed: %w", m.ID, reason, consumer.ErrNotDeadLettered, err)
		}
		return fmt.Errorf("dead-letter message %s (%s): %w: the queue has no dead-letter queue (pass --dlq-url or set a RedrivePolicy); released", m.ID, reason, consumer.ErrNotDeadLettered)
	}
	if expired, err := s.take(m, "dead-letter"); err != nil {
		if expired {
			return fmt.Errorf("%w: %w", consumer.ErrNotDeadLettered, err)
		}
		return err
	}
	if err := SendDeadLetter(ctx, s.api, s.dlqURL, m, reason, cause, s.cfg.QueueURL); err != nil {
		return fmt.Errorf("%w (%s), back after its visibility timeout: %w", consumer.ErrNotDeadLettered, reason, err)
	}
	if _, err := s.api.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &s.cfg.QueueURL, ReceiptHandle: &m.Receipt}); err != nil {
		return fmt.Errorf("dead-letter message %s: delete from source: %w", m.ID, err)
	}
	return nil
}

// SendDeadLetter sends m's body to the dead-letter queue dlqURL with
// why it is there in message attributes (see DeadLetterAttributes);
// sourceQueue names where it came from. Into a FIFO DLQ the message keeps
// its group and its id is the deduplication id, so that a message
// dead-lettered twice (a delete that failed after the send) arrives once.
func SendDeadLetter(ctx context.Context, api API, dlqURL string, m *consumer.Message, reason string, cause error, sourceQueue string) error {
	errText := ""
	if cause != nil {
		errText = cause.Error()
	}
	attrs := DeadLetterAttributes(reason, errText, m.ID, m.ReceiveCount, sourceQueue, time.Now())
	limit, err := maxMessageSize(ctx, api, dlqURL)
	if err != nil {
		return fmt.Errorf("dead-letter message %s: %w", m.ID, err)
	}
	fitAttributes(string(m.Body), attrs, limit)
	if err := send(ctx, api, dlqURL, string(m.Body), attrs, m.GroupID, m.ID); err != nil {
		return fmt.Errorf("dead-letter message %s: %w", m.ID, err)
	}
	return nil
}

// DefaultMaxMessageSize is SQS's message size limit when a queue does not
// say (the body and its attributes count toward it).
const DefaultMaxMessageSize = 256 << 10

// maxSizes caches each queue's MaximumMessageSize: it does not change
// while a consumer runs, and a dead-letter should not cost two calls.
var maxSizes sync.Map // queue URL -> int

// maxMessageSize reads a queue's MaximumMessageSize attribute (once).
func maxMessageSize(ctx context.Context, api API, url string) (int, error) {
	if v, ok := maxSizes.Load(url); ok {
		return v.(int), nil
	}
	size, err := queueAttribute(ctx, api, url, types.QueueAttributeNameMaximumMessageSize)
	if err != nil {
		return 0, fmt.Errorf("queue %s: maximum message size: %w", url, err)
	}
	n, err := strconv.Atoi(size)
	if err != nil || n <= 0 {
		n = DefaultMaxMessageSize
	}
	maxSizes.Store(url, n)
	return n, nil
}

// messageSize is what SQS counts of a message toward its size limit: the
// body and, per attribute, its name, data type and value.
func messageSize(body string, attrs map[string]types.MessageAttributeValue) int {
	n := len(body)
	for k, v := range attrs {
		n += len(k) + len(aws.ToString(v.DataType)) + len(aws.ToString(v.StringValue)) + len(v.BinaryValue)
	}
	return n
}

// fitAttributes shrinks the dead-letter attributes of a message until body
// and attributes fit in limit bytes: first the error text is cut (a body
// near the limit must still reach the DLQ, not cycle), then the other
// attributes go, the reason last.
func fitAttributes(body string, attrs map[string]types.MessageAttributeValue, limit int) {
	over := messageSize(body, attrs) - limit
	if over <= 0 {
		return
	}
	if e, ok := attrs[AttrError]; ok {
		text := aws.ToString(e.StringValue)
		if keep := len(text) - over - len("…"); keep > 0 {
			cut := keep
			for cut > 0 && !utf8.RuneStart(text[cut]) {
				cut-- // never split a character
			}
			attrs[AttrError] = types.MessageAttributeValue{DataType: e.DataType, StringValue: aws.String(text[:cut] + "…")}
			return
		}
		delete(attrs, AttrError)
	}
	for _, k := range []string{AttrSourceQueue, AttrDeadLetteredAt, AttrOriginalMessageID, AttrReceiveCount, AttrReason} {
		if messageSize(body, attrs) <= limit {
			return
		}
		delete(attrs, k)
	}
}

// send sends one message. Into a FIFO queue it goes in group (or
// "dead-letters" when there is none) with a deduplication id derived from
// dedupKey.
func send(ctx context.Context, api API, queueURL, body string, attrs map[string]types.MessageAttributeValue, group, dedupKey string) error {
	in := &sqs.SendMessageInput{QueueUrl: &queueURL, MessageBody: &body, MessageAttributes: attrs}
	if IsFIFO(queueURL) {
		if group == "" {
			group = "dead-letters"
		}
		in.MessageGroupId, in.MessageDeduplicationId = &group, aws.String(dedupID(dedupKey))
	}
	if _, err := api.SendMessage(ctx, in, OwnBody); err != nil {
		return fmt.Errorf("send to %s: %w", queueURL, err)
	}
	return nil
}

// IsFIFO reports whether a queue URL or ARN names a FIFO queue.
func IsFIFO(queue string) bool { return strings.HasSuffix(queue, ".fifo") }

// DeadLetterAttributes are the message attributes of a dead-lettered
// message.
func DeadLetterAttributes(reason, errText, originalID string, receiveCount int, sourceQueue string, at time.Time) map[string]types.MessageAttributeValue {
	errText = SQSText(errText)
	if len(errText) > maxErrorAttr {
		cut := maxErrorAttr
		for cut > 0 && !utf8.RuneStart(errText[cut]) {
			cut-- // never split a character: SQS would store U+FFFD
		}
		errText = errText[:cut] + "…"
	}
	str := func(v string) types.MessageAttributeValue {
		return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(SQSText(v))}
	}
	attrs := map[string]types.MessageAttributeValue{
		AttrReason:            str(reason),
		AttrOriginalMessageID: str(originalID),
		AttrReceiveCount:      {DataType: aws.String("Number"), StringValue: aws.String(strconv.Itoa(receiveCount))},
		AttrDeadLetteredAt:    str(at.UTC().Format(time.RFC3339Nano)),
		AttrSourceQueue:       str(sourceQueue),
	}
	if errText != "" {
		attrs[AttrError] = str(errText)
	}
	return attrs
}

// SQSText is s with every character SQS refuses in a message body or
// attribute value written as an escape (\u001b for ESC, \xff for a byte
// that is not UTF-8): SQS takes only tab, newline, carriage return and
// the Unicode characters from U+0020 to U+D7FF, U+E000 to U+FFFD and
// U+10000 to U+10FFFF, and refuses the whole send otherwise. Error texts
// quote what a message held, so a hostile body could make its own
// dead-lettering fail.
func SQSText(s string) string {
	ok := func(r rune) bool {
		return r == '\t' || r == '\n' || r == '\r' || (r >= 0x20 && r <= 0xD7FF) ||
			(r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
	}
	clean := true
	for i, r := range s {
		if !ok(r) || (r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD")) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case !ok(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// HeartbeatInterval implements consumer.Extender: a third of the visibility timeout.
func (s *Source) HeartbeatInterval() time.Duration {
	return max(s.visibility/3, 200*time.Millisecond)
}

// Extend implements consumer.Extender: the message stays invisible for another
// visibility timeout. A delivery settled, or expired, is not extended.
func (s *Source) Extend(ctx context.Context, m *consumer.Message) error {
	start := time.Now()
	s.mu.Lock()
	d, ok := s.inFlight[m.Receipt]
	why := "settled already, or not received from this source"
	if ok {
		why = d.expired(start)
	}
	s.mu.Unlock()
	if why != "" {
		return fmt.Errorf("extend visibility of message %s: %w: %s", m.ID, consumer.ErrNotInFlight, why)
	}
	if _, err := s.api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl: &s.cfg.QueueURL, ReceiptHandle: &m.Receipt, VisibilityTimeout: int32(s.visibility / time.Second),
	}); err != nil {
		return fmt.Errorf("extend visibility of message %s: %w", m.ID, err)
	}
	s.mu.Lock()
	d.expires = start.Add(s.visibility) // SQS counts from when it got the call
	s.mu.Unlock()
	return nil
}

// Depth counts the messages of a queue.
type Depth struct {
	Visible, InFlight, Delayed int
}

// QueueDepth reads the approximate message counts of a queue.
func QueueDepth(ctx context.Context, api API, url string) (Depth, error) {
	out, err := api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: &url,
		AttributeNames: []types.QueueAttributeName{
			types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
			types.QueueAttributeNameApproximateNumberOfMessagesDelayed,
		},
	})
	if err != nil {
		return Depth{}, fmt.Errorf("queue %s attributes: %w", url, err)
	}
	n := func(k types.QueueAttributeName) int {
		v, _ := strconv.Atoi(out.Attributes[string(k)])
		return v
	}
	return Depth{
		Visible:  n(types.QueueAttributeNameApproximateNumberOfMessages),
		InFlight: n(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible),
		Delayed:  n(types.QueueAttributeNameApproximateNumberOfMessagesDelayed),
	}, nil
}

// dedupID is a FIFO deduplication id (at most 128 characters) for s.
func dedupID(s string) string {
	if len(s) <= 128 {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Publisher sends snapshot events to an SQS queue: the Go API for
// producers. On a FIFO queue the message group is the table (events of one
// table stay in order) and the deduplication id is table and snapshot, so
// a retried publish within SQS's five-minute window is sent once.
type Publisher struct {
	API      API
	QueueURL string
}

// Publish sends ev (version and published_at are filled in when unset) and
// returns the message id.
func (p *Publisher) Publish(ctx context.Context, ev consumer.SnapshotEvent) (string, error) {
	if ev.Version == 0 {
		ev.Version = consumer.EventVersion
	}
	if ev.PublishedAt == nil {
		now := time.Now().UTC()
		ev.PublishedAt = &now
	}
	if _, err := consumer.DecodeEvent(ev.Encode()); err != nil {
		return "", fmt.Errorf("publish: %w", err)
	}
	in := &sqs.SendMessageInput{QueueUrl: &p.QueueURL, MessageBody: aws.String(string(ev.Encode()))}
	if IsFIFO(p.QueueURL) {
		in.MessageGroupId = aws.String(ev.Table)
		in.MessageDeduplicationId = aws.String(dedupID(ev.Table + ":" + strconv.FormatInt(ev.SnapshotID, 10) + ":" + ev.Job))
	}
	out, err := p.API.SendMessage(ctx, in)
	if err != nil {
		return "", fmt.Errorf("publish %s snapshot %d to %s: %w", ev.Table, ev.SnapshotID, p.QueueURL, err)
	}
	return aws.ToString(out.MessageId), nil
}
