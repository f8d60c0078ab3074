package sqsqueue_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/consumer/sqsqueue"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/postdata"
	"github.com/socialdata/enricher/internal/sqstest"
	"github.com/socialdata/enricher/internal/testbed"
)

func TestMain(m *testing.M) { testbed.VerifyTestMain(m) }

// drainConsumer runs a consumer on the source queue until it is empty.
func drainConsumer(t *testing.T, q *sqstest.Queues, p *pipeline.Processor, onOutcome func(consumer.MessageOutcome)) {
	t.Helper()
	src, err := sqsqueue.NewSource(t.Context(), q.API, sqsqueue.Config{QueueURL: q.URL, Drain: true, WaitTime: time.Second})
	require.NoError(t, err)
	require.Equal(t, q.DLQ, src.DLQURL(), "the DLQ is found from the RedrivePolicy")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c := &consumer.Consumer{Source: src, Handler: p, Logger: testbed.QuietLogger(), Concurrency: 2, OnOutcome: onOutcome}
	require.NoError(t, c.Run(ctx))
	require.NoError(t, ctx.Err(), "the consumer drained the queue in time")
}

// report is the pipeline's report of a settled message.
func report(o consumer.MessageOutcome) *pipeline.Report {
	r, _ := o.Report.(*pipeline.Report)
	if r == nil {
		return &pipeline.Report{}
	}
	return r
}

func TestSQSHappyPathFromPublishToCommittedRows(t *testing.T) {
	t.Parallel()
	api, b, q := sqstest.Setup(t, sqstest.Options{MaxReceives: 5})
	s1 := b.AppendPosts(120)
	q.Publish(t, b.Event(s1))
	s2 := b.AppendPosts(80)
	q.Publish(t, b.Event(s2))
	q.Publish(t, b.Event(s2)) // a duplicate publish

	var acked atomic.Int64
	drainConsumer(t, q, b.Processor(nil), func(o consumer.MessageOutcome) {
		assert.NoError(t, o.Err)
		if o.Action == consumer.ActionAcked {
			acked.Add(1)
		}
	})
	assert.Equal(t, int64(3), acked.Load())
	b.RequireExactlyOnce(200, nil)
	assert.Empty(t, sqstest.ReceiveAll(t, api, q.URL), "every message was deleted")
	assert.Empty(t, sqstest.ReceiveAll(t, api, q.DLQ))
}

func TestSQSRedeliveryAfterACrashWritesNoDuplicates(t *testing.T) {
	t.Parallel()
	api, b, q := sqstest.Setup(t, sqstest.Options{MaxReceives: 5})
	s1 := b.AppendPosts(100)
	q.Publish(t, b.Event(s1))

	// A consumer receives the message, commits the work, and dies before
	// it deletes the message; the message becomes visible again.
	r, err := api.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &q.URL, WaitTimeSeconds: 2})
	require.NoError(t, err)
	require.Len(t, r.Messages, 1)
	_, err = b.Processor(nil).Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	_, err = api.ChangeMessageVisibility(t.Context(), &sqs.ChangeMessageVisibilityInput{QueueUrl: &q.URL,
		ReceiptHandle: r.Messages[0].ReceiptHandle, VisibilityTimeout: 0})
	require.NoError(t, err)

	var outcomes []consumer.MessageOutcome
	drainConsumer(t, q, b.Processor(nil), func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) })
	require.Len(t, outcomes, 1)
	assert.Equal(t, consumer.ActionAcked, outcomes[0].Action)
	assert.Equal(t, 2, outcomes[0].Message.ReceiveCount)
	assert.Equal(t, pipeline.OutcomeUpToDate, report(outcomes[0]).Results[0].Outcome)
	b.RequireExactlyOnce(100, nil)
}

func TestSQSPoisonMessagesGoToTheDLQAtOnceWithTheirReason(t *testing.T) {
	t.Parallel()
	api, b, q := sqstest.Setup(t, sqstest.Options{MaxReceives: 5})
	q.SendRaw(t, "this is not json")
	q.SendRaw(t, `{"version":1,"table":"social.nowhere","snapshot_id":5}`)
	drainConsumer(t, q, b.Processor(nil), nil)

	dead := sqstest.ReceiveAll(t, api, q.DLQ)
	require.Len(t, dead, 2)
	reasons := map[string]types.Message{}
	for _, m := range dead {
		reasons[aws.ToString(m.MessageAttributes[sqsqueue.AttrReason].StringValue)] = m
	}
	bad := reasons[consumer.ReasonBadMessage]
	require.NotNil(t, bad.Body, "a bad_message dead letter: %v", reasons)
	assert.Equal(t, "this is not json", aws.ToString(bad.Body))
	assert.Contains(t, aws.ToString(bad.MessageAttributes[sqsqueue.AttrError].StringValue), "not a JSON object")
	assert.Equal(t, "1", aws.ToString(bad.MessageAttributes[sqsqueue.AttrReceiveCount].StringValue), "not retried first")
	assert.NotEmpty(t, aws.ToString(bad.MessageAttributes[sqsqueue.AttrOriginalMessageID].StringValue))
	_, err := time.Parse(time.RFC3339Nano, aws.ToString(bad.MessageAttributes[sqsqueue.AttrDeadLetteredAt].StringValue))
	require.NoError(t, err)
	unknown := reasons[consumer.ReasonUnknownTable]
	require.NotNil(t, unknown.Body)
	assert.Contains(t, aws.ToString(unknown.MessageAttributes[sqsqueue.AttrError].StringValue), "social.nowhere")
	assert.Empty(t, sqstest.ReceiveAll(t, api, q.URL))
}

// failing is a model whose every call fails with a passing error.
type failing struct{ calls atomic.Int64 }

func (f *failing) Name() string { return "test/failing" }
func (f *failing) Annotate(context.Context, []enrich.Item, []enrich.Answer) error {
	f.calls.Add(1)
	return errors.New("upstream unavailable")
}

func TestSQSTransientFailuresReachTheDLQAfterMaxReceiveCount(t *testing.T) {
	t.Parallel()
	api, b, q := sqstest.Setup(t, sqstest.Options{MaxReceives: 2})
	s1 := b.AppendPosts(10)
	q.Publish(t, b.Event(s1))
	var released atomic.Int64
	drainConsumer(t, q, b.Processor(&failing{}), func(o consumer.MessageOutcome) {
		if o.Action == consumer.ActionReleased {
			released.Add(1)
		}
	})
	assert.Equal(t, int64(2), released.Load(), "released, and received again, until maxReceiveCount")
	dead := sqstest.ReceiveAll(t, api, q.DLQ)
	require.Len(t, dead, 1, "the queue's redrive policy moved it")
	assert.Empty(t, b.TargetRows())
}

func TestSQSRetryBackoffKeepsAFailedMessageAway(t *testing.T) {
	t.Parallel()
	api, b, q := sqstest.Setup(t, sqstest.Options{MaxReceives: 2})
	q.Publish(t, b.Event(b.AppendPosts(10)))
	src, err := sqsqueue.NewSource(t.Context(), api, sqsqueue.Config{QueueURL: q.URL, Drain: true, WaitTime: time.Second})
	require.NoError(t, err)
	var at []time.Time
	var retryIn []time.Duration
	c := &consumer.Consumer{Source: src, Handler: b.Processor(&failing{}), Logger: testbed.QuietLogger(), RetryBackoff: time.Second,
		OnOutcome: func(o consumer.MessageOutcome) {
			assert.Equal(t, consumer.ActionReleased, o.Action)
			at, retryIn = append(at, time.Now()), append(retryIn, o.RetryIn)
		}}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	require.NoError(t, c.Run(ctx))
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second}, retryIn, "doubled per receive")
	for i := 1; i < len(at); i++ {
		assert.GreaterOrEqual(t, at[i].Sub(at[i-1]), retryIn[i-1], "receive %d came back before its backoff", i+1)
	}
	require.Len(t, sqstest.ReceiveAll(t, api, q.DLQ), 1, "then maxReceiveCount moved it to the DLQ")
}

func TestSQSFIFOKeepsEachTablesOrder(t *testing.T) {
	t.Parallel()
	_, b, q := sqstest.Setup(t, sqstest.Options{FIFO: true, MaxReceives: 5})
	var snaps []int64
	for range 4 {
		s := b.AppendPosts(25)
		snaps = append(snaps, s)
		q.Publish(t, b.Event(s))
	}
	var got []int64
	drainConsumer(t, q, b.Processor(nil), func(o consumer.MessageOutcome) {
		require.NoError(t, o.Err)
		require.Equal(t, pipeline.OutcomeEnriched, report(o).Results[0].Outcome, "in order, no event finds its snapshot already done")
		got = append(got, report(o).Event.SnapshotID)
	})
	assert.Equal(t, snaps, got)
	b.RequireExactlyOnce(100, nil)
}

// slow is the lexicon model, slowed down per call. started is closed on
// the first call.
type slow struct {
	enrich.Model
	delay   time.Duration
	started chan struct{}
	once    atomic.Bool
}

func (s *slow) Annotate(ctx context.Context, items []enrich.Item, out []enrich.Answer) error {
	if s.once.CompareAndSwap(false, true) {
		close(s.started)
	}
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Model.Annotate(ctx, items, out)
}

func TestSQSHeartbeatKeepsLongWorkInvisible(t *testing.T) {
	t.Parallel()
	api := sqstest.Client(t)
	b := testbed.Setup(t)
	q := sqstest.NewQueues(t, api, sqstest.Options{MaxReceives: 5, Visibility: 1 * time.Second}) // a one-second visibility timeout
	s1 := b.AppendPosts(600)
	q.Publish(t, b.Event(s1))
	lex, err := enrich.NewLexicon(b.Spec)
	require.NoError(t, err)
	// 600 rows in batches of 64 at 300 ms each: about 3 s, three times the
	// visibility timeout.
	model := &slow{Model: lex, delay: 300 * time.Millisecond, started: make(chan struct{})}
	p := b.Processor(model, func(o *pipeline.Options) { o.Workers = 1 })

	// Once the work has started, a rival consumer polls the queue until it
	// ends: it must see nothing.
	stop := make(chan struct{})
	rival := make(chan int, 1)
	go func() {
		testbed.WaitClosed(t, model.started)
		seen := 0
		for {
			select {
			case <-stop:
				rival <- seen
				return
			default:
			}
			r, err := api.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: &q.URL, WaitTimeSeconds: 1, VisibilityTimeout: 1})
			if err == nil {
				seen += len(r.Messages)
			}
		}
	}()
	var outcomes []consumer.MessageOutcome
	drainConsumer(t, q, p, func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) })
	close(stop)
	assert.Zero(t, <-rival, "the message was redelivered while in flight")
	require.Len(t, outcomes, 1)
	assert.Equal(t, consumer.ActionAcked, outcomes[0].Action)
	assert.Greater(t, outcomes[0].Duration, 2*time.Second, "the work outlasted the visibility timeout")
	b.RequireExactlyOnce(600, nil)
}

// TestMissingSnapshotsAreDeadLettered: an event naming a snapshot the
// table does not have (expired, or one of another table) goes to the DLQ
// at once with reason snapshot_not_found.
func TestMissingSnapshotsAreDeadLettered(t *testing.T) {
	t.Parallel()
	api := sqstest.Client(t)
	b := testbed.Setup(t)
	b.AppendPosts(10)
	other, err := b.Cat.CreateIcebergTable(t.Context(), "social.other", postdata.Schema(), nil)
	require.NoError(t, err)
	other, _, err = postdata.Append(t.Context(), other, postdata.Sample(3, 1, 1))
	require.NoError(t, err)

	q := sqstest.NewQueues(t, api, sqstest.Options{MaxReceives: 5})
	q.Publish(t, consumer.SnapshotEvent{Table: b.Spec.Source.Table, SnapshotID: 4242})
	q.Publish(t, consumer.SnapshotEvent{Table: b.Spec.Source.Table, SnapshotID: other.CurrentSnapshot().SnapshotID})
	drainConsumer(t, q, b.Processor(nil), nil)

	dead := sqstest.ReceiveAll(t, api, q.DLQ)
	require.Len(t, dead, 2)
	for _, m := range dead {
		assert.Equal(t, consumer.ReasonSnapshotNotFound, aws.ToString(m.MessageAttributes[sqsqueue.AttrReason].StringValue))
		assert.Contains(t, aws.ToString(m.MessageAttributes[sqsqueue.AttrError].StringValue), "snapshot not found")
	}
	assert.Empty(t, sqstest.ReceiveAll(t, api, q.URL))
}

// TestDeadLetterOfABodyNearTheSizeLimit: SQS counts attributes toward a
// message's size limit, so a body near it plus the enricher-* attributes
// would not fit and the message would cycle instead of reaching the DLQ.
// The error text is cut to fit (the reason is kept).
func TestDeadLetterOfABodyNearTheSizeLimit(t *testing.T) {
	t.Parallel()
	const limit = 256 << 10
	api, b, q := sqstest.Setup(t, sqstest.Options{MaxReceives: 5,
		Attributes: map[string]string{"MaximumMessageSize": strconv.Itoa(limit)}})
	_, err := api.SetQueueAttributes(t.Context(), &sqs.SetQueueAttributesInput{QueueUrl: &q.DLQ,
		Attributes: map[string]string{"MaximumMessageSize": strconv.Itoa(limit)}})
	require.NoError(t, err)
	src, err := sqsqueue.NewSource(t.Context(), q.API, sqsqueue.Config{QueueURL: q.URL})
	require.NoError(t, err)
	assert.Empty(t, src.Warnings(), "the same limits")
	body := strings.Repeat("x", limit-64) // not JSON: bad_message
	q.SendRaw(t, body)
	var outcomes []consumer.MessageOutcome
	drainConsumer(t, q, b.Processor(nil), func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) })
	require.Len(t, outcomes, 1)
	assert.Equal(t, consumer.ActionDeadLettered, outcomes[0].Action)
	assert.NotContains(t, outcomes[0].Err.Error(), "dead_lettered message", "the dead-letter send went through")
	dead := sqstest.ReceiveAll(t, api, q.DLQ)
	require.Len(t, dead, 1)
	assert.Equal(t, body, aws.ToString(dead[0].Body))
	assert.Equal(t, consumer.ReasonBadMessage, aws.ToString(dead[0].MessageAttributes[sqsqueue.AttrReason].StringValue))
	assert.Empty(t, sqstest.ReceiveAll(t, api, q.URL))
}

// TestDeadLetterThatTheDLQRefusesIsNotCountedDeadLettered: a body the
// source queue takes (1 MiB) but its DLQ does not (256 KiB) cannot be
// dead-lettered. The outcome says released, with why, instead of
// dead_lettered while the message cycles.
func TestDeadLetterThatTheDLQRefusesIsNotCountedDeadLettered(t *testing.T) {
	t.Parallel()
	api, b, q := sqstest.Setup(t, sqstest.Options{MaxReceives: 2, Visibility: time.Second,
		Attributes: map[string]string{"MaximumMessageSize": strconv.Itoa(1 << 20)}})
	_, err := api.SetQueueAttributes(t.Context(), &sqs.SetQueueAttributesInput{QueueUrl: &q.DLQ,
		Attributes: map[string]string{"MaximumMessageSize": strconv.Itoa(256 << 10)}})
	require.NoError(t, err)
	src, err := sqsqueue.NewSource(t.Context(), q.API, sqsqueue.Config{QueueURL: q.URL})
	require.NoError(t, err)
	require.Len(t, src.Warnings(), 1)
	assert.Contains(t, src.Warnings()[0], "takes messages of up to 262144 bytes, the source queue up to 1048576")
	q.SendRaw(t, strings.Repeat("x", 300_000)) // not JSON: bad_message
	var outcomes []consumer.MessageOutcome
	drainConsumer(t, q, b.Processor(nil), func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) })
	require.NotEmpty(t, outcomes)
	for _, o := range outcomes {
		assert.Equal(t, consumer.ActionReleased, o.Action)
		assert.Equal(t, consumer.ReasonBadMessage, o.Reason)
		require.Error(t, o.Err)
		assert.ErrorIs(t, o.Err, consumer.ErrNotDeadLettered)
		assert.Contains(t, o.Err.Error(), "not dead-lettered (bad_message), back after its visibility timeout")
	}
}

// TestDeadLetterAttributesHoldOnlyTextSQSTakes: an error text that quotes
// control characters, bytes that are not UTF-8 or noncharacters from a
// hostile body is escaped, so that SQS does not refuse the dead letter;
// text SQS takes is left as it is.
func TestDeadLetterAttributesHoldOnlyTextSQSTakes(t *testing.T) {
	t.Parallel()
	sqsTakes := func(s string) bool {
		for i, r := range s {
			if r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD") {
				return false
			}
			if !(r == '\t' || r == '\n' || r == '\r' || (r >= 0x20 && r <= 0xD7FF) ||
				(r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)) {
				return false
			}
		}
		return true
	}
	hostile := "version \x1b[31m\x00 is not supported \xff\xfe \uFFFE\uFFFF"
	attrs := sqsqueue.DeadLetterAttributes("bad\x07reason", hostile, "id\x01", 3, "arn:aws:sqs:q\x7f", time.Now())
	for name, v := range attrs {
		assert.True(t, sqsTakes(aws.ToString(v.StringValue)), "%s = %q", name, aws.ToString(v.StringValue))
	}
	assert.Equal(t, `version \u001b[31m\u0000 is not supported \xff\xfe \ufffe\uffff`, aws.ToString(attrs[sqsqueue.AttrError].StringValue))
	assert.Equal(t, `bad\u0007reason`, aws.ToString(attrs[sqsqueue.AttrReason].StringValue))

	fine := "tab\there, line\nand é, 漢字, 😀, \uFFFD"
	assert.Equal(t, fine, sqsqueue.SQSText(fine))
}

// TestEventWithControlCharactersIsDeadLetteredWithAnEscapedReason: the
// bad event's error text names what it held, escaped.
func TestEventWithControlCharactersIsDeadLetteredWithAnEscapedReason(t *testing.T) {
	t.Parallel()
	api, b, q := sqstest.Setup(t, sqstest.Options{MaxReceives: 5})
	q.SendRaw(t, `{"version":"\u001b[31m","table":"social.posts","snapshot_id":1}`)
	drainConsumer(t, q, b.Processor(nil), nil)
	dead := sqstest.ReceiveAll(t, api, q.DLQ)
	require.Len(t, dead, 1)
	assert.Equal(t, consumer.ReasonBadMessage, aws.ToString(dead[0].MessageAttributes[sqsqueue.AttrReason].StringValue))
	assert.Contains(t, aws.ToString(dead[0].MessageAttributes[sqsqueue.AttrError].StringValue), `version "\u001b[31m" is not supported`)
}
