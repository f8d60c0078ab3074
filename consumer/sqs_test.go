package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/enrich"
)

// sqsClient connects to the SQS emulator that scripts/sqs-emulator.sh
// started (ENRICHER_SQS_ENDPOINT). Without one, the test is skipped loudly,
// except in CI, where it fails.
func sqsClient(t *testing.T) *sqs.Client {
	t.Helper()
	endpoint := os.Getenv("ENRICHER_SQS_ENDPOINT")
	if endpoint == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("ENRICHER_SQS_ENDPOINT is not set: CI must start the SQS emulator (scripts/sqs-emulator.sh start)")
		}
		t.Skip("SKIPPED: no SQS emulator; run `eval \"$(scripts/sqs-emulator.sh start)\"` first")
	}
	cfg, err := config.LoadDefaultConfig(t.Context(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		})))
	require.NoError(t, err)
	return sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

var queueSeq atomic.Int64

type queues struct {
	api       *sqs.Client
	url, dlq  string
	fifo      bool
	visiblity int
}

// newQueues creates a fresh source queue and its dead-letter queue.
func newQueues(t *testing.T, api *sqs.Client, fifo bool, maxReceives, visibility int) *queues {
	t.Helper()
	name := fmt.Sprintf("t%d-%d-%s", time.Now().UnixNano(), queueSeq.Add(1), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(name) > 60 {
		name = name[:60]
	}
	suffix := ""
	attrs := map[string]string{}
	if fifo {
		suffix = ".fifo"
		attrs["FifoQueue"] = "true"
	}
	dlq, err := api.CreateQueue(t.Context(), &sqs.CreateQueueInput{QueueName: aws.String(name + "-dlq" + suffix), Attributes: attrs})
	require.NoError(t, err)
	arn, err := api.GetQueueAttributes(t.Context(), &sqs.GetQueueAttributesInput{QueueUrl: dlq.QueueUrl,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
	require.NoError(t, err)
	src := map[string]string{
		"VisibilityTimeout": strconv.Itoa(visibility),
		"RedrivePolicy":     fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":"%d"}`, arn.Attributes["QueueArn"], maxReceives),
	}
	for k, v := range attrs {
		src[k] = v
	}
	q, err := api.CreateQueue(t.Context(), &sqs.CreateQueueInput{QueueName: aws.String(name + suffix), Attributes: src})
	require.NoError(t, err)
	return &queues{api: api, url: aws.ToString(q.QueueUrl), dlq: aws.ToString(dlq.QueueUrl), fifo: fifo, visiblity: visibility}
}

func (q *queues) publish(t *testing.T, ev consumer.SnapshotEvent) {
	t.Helper()
	_, err := (&consumer.Publisher{API: q.api, QueueURL: q.url}).Publish(t.Context(), ev)
	require.NoError(t, err)
}

func (q *queues) sendRaw(t *testing.T, body string) {
	t.Helper()
	in := &sqs.SendMessageInput{QueueUrl: &q.url, MessageBody: &body}
	if q.fifo {
		in.MessageGroupId, in.MessageDeduplicationId = aws.String("raw"), aws.String(strconv.FormatInt(time.Now().UnixNano(), 10))
	}
	_, err := q.api.SendMessage(t.Context(), in)
	require.NoError(t, err)
}

// drainConsumer runs a consumer on the source queue until it is empty.
func (q *queues) drainConsumer(t *testing.T, p *consumer.Processor, onOutcome func(consumer.MessageOutcome)) {
	t.Helper()
	src, err := consumer.NewSQSSource(t.Context(), q.api, consumer.SQSConfig{QueueURL: q.url, Drain: true, WaitTime: time.Second})
	require.NoError(t, err)
	require.Equal(t, q.dlq, src.DLQURL(), "the DLQ is found from the RedrivePolicy")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c := &consumer.Consumer{Source: src, Processor: p, Logger: quietLogger(), Concurrency: 2, OnOutcome: onOutcome}
	require.NoError(t, c.Run(ctx))
	require.NoError(t, ctx.Err(), "the consumer drained the queue in time")
}

// receiveAll reads every message of a queue (and deletes it).
func receiveAll(t *testing.T, api *sqs.Client, url string) []types.Message {
	t.Helper()
	var out []types.Message
	for {
		r, err := api.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url, MaxNumberOfMessages: 10,
			WaitTimeSeconds: 1, MessageAttributeNames: []string{"All"},
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll}})
		require.NoError(t, err)
		if len(r.Messages) == 0 {
			return out
		}
		for _, m := range r.Messages {
			out = append(out, m)
			_, err := api.DeleteMessage(t.Context(), &sqs.DeleteMessageInput{QueueUrl: &url, ReceiptHandle: m.ReceiptHandle})
			require.NoError(t, err)
		}
	}
}

func TestSQSHappyPathFromPublishToCommittedRows(t *testing.T) {
	t.Parallel()
	api := sqsClient(t)
	b := setup(t)
	q := newQueues(t, api, false, 5, 30)
	s1 := b.appendPosts(120)
	q.publish(t, b.event(s1))
	s2 := b.appendPosts(80)
	q.publish(t, b.event(s2))
	q.publish(t, b.event(s2)) // a duplicate publish

	var acked atomic.Int64
	q.drainConsumer(t, b.processor(nil), func(o consumer.MessageOutcome) {
		assert.NoError(t, o.Err)
		if o.Action == consumer.ActionAcked {
			acked.Add(1)
		}
	})
	assert.Equal(t, int64(3), acked.Load())
	b.requireExactlyOnce(200, nil)
	assert.Empty(t, receiveAll(t, api, q.url), "every message was deleted")
	assert.Empty(t, receiveAll(t, api, q.dlq))
}

func TestSQSRedeliveryAfterACrashWritesNoDuplicates(t *testing.T) {
	t.Parallel()
	api := sqsClient(t)
	b := setup(t)
	q := newQueues(t, api, false, 5, 30)
	s1 := b.appendPosts(100)
	q.publish(t, b.event(s1))

	// A consumer receives the message, commits the work, and dies before
	// it deletes the message; the message becomes visible again.
	r, err := api.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &q.url, WaitTimeSeconds: 2})
	require.NoError(t, err)
	require.Len(t, r.Messages, 1)
	_, err = b.processor(nil).Process(t.Context(), b.event(s1))
	require.NoError(t, err)
	_, err = api.ChangeMessageVisibility(t.Context(), &sqs.ChangeMessageVisibilityInput{QueueUrl: &q.url,
		ReceiptHandle: r.Messages[0].ReceiptHandle, VisibilityTimeout: 0})
	require.NoError(t, err)

	var outcomes []consumer.MessageOutcome
	q.drainConsumer(t, b.processor(nil), func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) })
	require.Len(t, outcomes, 1)
	assert.Equal(t, consumer.ActionAcked, outcomes[0].Action)
	assert.Equal(t, 2, outcomes[0].Message.ReceiveCount)
	assert.Equal(t, consumer.OutcomeUpToDate, outcomes[0].Results[0].Outcome)
	b.requireExactlyOnce(100, nil)
}

func TestSQSPoisonMessagesGoToTheDLQAtOnceWithTheirReason(t *testing.T) {
	t.Parallel()
	api := sqsClient(t)
	b := setup(t)
	q := newQueues(t, api, false, 5, 30)
	q.sendRaw(t, "this is not json")
	q.sendRaw(t, `{"version":1,"table":"social.nowhere","snapshot_id":5}`)
	q.drainConsumer(t, b.processor(nil), nil)

	dead := receiveAll(t, api, q.dlq)
	require.Len(t, dead, 2)
	reasons := map[string]types.Message{}
	for _, m := range dead {
		reasons[aws.ToString(m.MessageAttributes[consumer.AttrReason].StringValue)] = m
	}
	bad := reasons[consumer.ReasonBadMessage]
	require.NotNil(t, bad.Body, "a bad_message dead letter: %v", reasons)
	assert.Equal(t, "this is not json", aws.ToString(bad.Body))
	assert.Contains(t, aws.ToString(bad.MessageAttributes[consumer.AttrError].StringValue), "not a JSON object")
	assert.Equal(t, "1", aws.ToString(bad.MessageAttributes[consumer.AttrReceiveCount].StringValue), "not retried first")
	assert.NotEmpty(t, aws.ToString(bad.MessageAttributes[consumer.AttrOriginalMessageID].StringValue))
	_, err := time.Parse(time.RFC3339Nano, aws.ToString(bad.MessageAttributes[consumer.AttrDeadLetteredAt].StringValue))
	require.NoError(t, err)
	unknown := reasons[consumer.ReasonUnknownTable]
	require.NotNil(t, unknown.Body)
	assert.Contains(t, aws.ToString(unknown.MessageAttributes[consumer.AttrError].StringValue), "social.nowhere")
	assert.Empty(t, receiveAll(t, api, q.url))
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
	api := sqsClient(t)
	b := setup(t)
	q := newQueues(t, api, false, 2, 30)
	s1 := b.appendPosts(10)
	q.publish(t, b.event(s1))
	var released atomic.Int64
	q.drainConsumer(t, b.processor(&failing{}), func(o consumer.MessageOutcome) {
		if o.Action == consumer.ActionReleased {
			released.Add(1)
		}
	})
	assert.Equal(t, int64(2), released.Load(), "released, and received again, until maxReceiveCount")
	dead := receiveAll(t, api, q.dlq)
	require.Len(t, dead, 1, "the queue's redrive policy moved it")
	assert.Empty(t, b.targetRows())
}

func TestSQSRetryBackoffKeepsAFailedMessageAway(t *testing.T) {
	t.Parallel()
	api := sqsClient(t)
	b := setup(t)
	q := newQueues(t, api, false, 2, 30)
	q.publish(t, b.event(b.appendPosts(10)))
	src, err := consumer.NewSQSSource(t.Context(), api, consumer.SQSConfig{QueueURL: q.url, Drain: true, WaitTime: time.Second})
	require.NoError(t, err)
	var at []time.Time
	var retryIn []time.Duration
	c := &consumer.Consumer{Source: src, Processor: b.processor(&failing{}), Logger: quietLogger(), RetryBackoff: time.Second,
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
	require.Len(t, receiveAll(t, api, q.dlq), 1, "then maxReceiveCount moved it to the DLQ")
}

func TestSQSFIFOKeepsEachTablesOrder(t *testing.T) {
	t.Parallel()
	api := sqsClient(t)
	b := setup(t)
	q := newQueues(t, api, true, 5, 30)
	var snaps []int64
	for range 4 {
		s := b.appendPosts(25)
		snaps = append(snaps, s)
		q.publish(t, b.event(s))
	}
	var got []int64
	q.drainConsumer(t, b.processor(nil), func(o consumer.MessageOutcome) {
		require.NoError(t, o.Err)
		require.Equal(t, consumer.OutcomeEnriched, o.Results[0].Outcome, "in order, no event finds its snapshot already done")
		got = append(got, o.Event.SnapshotID)
	})
	assert.Equal(t, snaps, got)
	b.requireExactlyOnce(100, nil)
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
	api := sqsClient(t)
	b := setup(t)
	q := newQueues(t, api, false, 5, 1) // a one-second visibility timeout
	s1 := b.appendPosts(600)
	q.publish(t, b.event(s1))
	lex, err := enrich.NewLexicon(b.spec)
	require.NoError(t, err)
	// 600 rows in batches of 64 at 300 ms each: about 3 s, three times the
	// visibility timeout.
	model := &slow{Model: lex, delay: 300 * time.Millisecond, started: make(chan struct{})}
	p := b.processor(model, func(o *consumer.Options) { o.Workers = 1 })

	// Once the work has started, a rival consumer polls the queue until it
	// ends: it must see nothing.
	stop := make(chan struct{})
	rival := make(chan int, 1)
	go func() {
		waitClosed(t, model.started)
		seen := 0
		for {
			select {
			case <-stop:
				rival <- seen
				return
			default:
			}
			r, err := api.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: &q.url, WaitTimeSeconds: 1, VisibilityTimeout: 1})
			if err == nil {
				seen += len(r.Messages)
			}
		}
	}()
	var outcomes []consumer.MessageOutcome
	q.drainConsumer(t, p, func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) })
	close(stop)
	assert.Zero(t, <-rival, "the message was redelivered while in flight")
	require.Len(t, outcomes, 1)
	assert.Equal(t, consumer.ActionAcked, outcomes[0].Action)
	assert.Greater(t, outcomes[0].Duration, 2*time.Second, "the work outlasted the visibility timeout")
	b.requireExactlyOnce(600, nil)
}

func TestLambdaDeadLettersPoisonRecordsAtOnce(t *testing.T) {
	t.Parallel()
	api := sqsClient(t)
	b := setup(t)
	q := newQueues(t, api, false, 5, 30)
	s1 := b.appendPosts(10)
	h := &consumer.LambdaHandler{Processor: b.processor(nil), API: api, DLQURL: q.dlq, Logger: quietLogger()}
	resp, err := h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{
		record("a", b.event(s1).Encode(), ""),
		record("b", []byte("garbage"), ""),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures, "the poison record is dead-lettered, so Lambda may delete it")
	dead := receiveAll(t, api, q.dlq)
	require.Len(t, dead, 1)
	assert.Equal(t, "garbage", aws.ToString(dead[0].Body))
	assert.Equal(t, consumer.ReasonBadMessage, aws.ToString(dead[0].MessageAttributes[consumer.AttrReason].StringValue))
	b.requireExactlyOnce(10, nil)
}
