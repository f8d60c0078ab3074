package lambdabatch_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/lambdabatch"
	"github.com/socialdata/enricher/consumer/sourcetest"
	"github.com/socialdata/enricher/consumer/sqsqueue"
	"github.com/socialdata/enricher/internal/sqstest"
	"github.com/socialdata/enricher/internal/testbed"
)

// lambdaEvent sends bodies to q, receives them as the Lambda service
// would, and returns them as an SQS event batch.
func lambdaEvent(t *testing.T, q *sqstest.Queues, bodies []string) events.SQSEvent {
	t.Helper()
	for _, b := range bodies {
		q.SendRaw(t, b)
	}
	arn, err := q.API.GetQueueAttributes(t.Context(), &sqs.GetQueueAttributesInput{QueueUrl: &q.URL,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
	require.NoError(t, err)
	var ev events.SQSEvent
	for len(ev.Records) < len(bodies) {
		r, err := q.API.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &q.URL, MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll}})
		require.NoError(t, err)
		for _, m := range r.Messages {
			ev.Records = append(ev.Records, events.SQSMessage{MessageId: aws.ToString(m.MessageId), ReceiptHandle: aws.ToString(m.ReceiptHandle),
				Body: aws.ToString(m.Body), Attributes: m.Attributes, EventSourceARN: arn.Attributes["QueueArn"]})
		}
	}
	return ev
}

// fifoLambdaEvent is the SQS event batch the Lambda service would make
// of bodies sent to the FIFO queue q, each in its group (see
// sourcetest.Fixture.FIFO). It is written here: the emulator hands out
// one message of a group at a time, where SQS gives Lambda several. Its
// records have no receipt handle, so ReleaseAfter reports a record failed
// without changing its visibility.
func fifoLambdaEvent(t *testing.T, q *sqstest.Queues, bodies []string) events.SQSEvent {
	t.Helper()
	arn, err := q.API.GetQueueAttributes(t.Context(), &sqs.GetQueueAttributesInput{QueueUrl: &q.URL,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
	require.NoError(t, err)
	sent := strconv.FormatInt(time.Now().UnixMilli(), 10)
	var ev events.SQSEvent
	for i, b := range bodies {
		group := "g-" + b
		if g, _, ok := strings.Cut(b, "/"); ok {
			group = g
		}
		ev.Records = append(ev.Records, events.SQSMessage{MessageId: fmt.Sprintf("fifo-%d", i), Body: b, EventSourceARN: arn.Attributes["QueueArn"],
			Attributes: map[string]string{"ApproximateReceiveCount": "1", "SentTimestamp": sent, "MessageGroupId": group}})
	}
	return ev
}

func lambdaFixture(t *testing.T, bodies []string, fifo bool) sourcetest.Fixture {
	api := sqstest.Client(t)
	q := sqstest.NewQueues(t, api, sqstest.Options{FIFO: fifo, Visibility: 30 * time.Second})
	var ev events.SQSEvent
	if fifo {
		ev = fifoLambdaEvent(t, q, bodies)
	} else {
		ev = lambdaEvent(t, q, bodies)
	}
	src := lambdabatch.NewSource(ev, api, q.DLQ)
	return sourcetest.Fixture{Source: src, Finite: true, FIFO: fifo,
		DeadLetters: func(t *testing.T) map[string][]string {
			out := map[string][]string{}
			for _, m := range sqstest.ReceiveAll(t, api, q.DLQ) {
				out[aws.ToString(m.Body)] = append(out[aws.ToString(m.Body)], aws.ToString(m.MessageAttributes[sqsqueue.AttrReason].StringValue))
			}
			return out
		},
		HandedBack: func(*testing.T) []string {
			var out []string
			for _, f := range src.Response().BatchItemFailures {
				for _, r := range ev.Records {
					if r.MessageId == f.ItemIdentifier {
						out = append(out, r.Body)
					}
				}
			}
			slices.Sort(out)
			return out
		}}
}

func TestLambdaSourceConformance(t *testing.T) {
	t.Parallel()
	sourcetest.Run(t, func(t *testing.T, bodies []string) sourcetest.Fixture { return lambdaFixture(t, bodies, false) })
}

func TestLambdaFIFOSourceConformance(t *testing.T) {
	t.Parallel()
	sourcetest.Run(t, func(t *testing.T, bodies []string) sourcetest.Fixture { return lambdaFixture(t, bodies, true) })
}

// TestLambdaRetryAfterKeepsTheRecordAway: a record released with a delay
// (a Retry-After) is reported failed and stays invisible that long in its
// queue, instead of coming back after the queue's visibility timeout.
func TestLambdaRetryAfterKeepsTheRecordAway(t *testing.T) {
	t.Parallel()
	api := sqstest.Client(t)
	q := sqstest.NewQueues(t, api, sqstest.Options{Visibility: 30 * time.Second})
	ev := lambdaEvent(t, q, []string{"later"})
	src := lambdabatch.NewSource(ev, api, q.DLQ)
	msgs, err := src.Receive(t.Context(), 10)
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, src.ReleaseAfter(t.Context(), msgs[0], 2*time.Second))
	require.Len(t, src.Response().BatchItemFailures, 1)
	back := firstBack(t, api, q.URL)
	require.Len(t, back, 1, "the record came back, after its delay rather than the 30s visibility timeout")
	require.GreaterOrEqual(t, time.Since(start), 1900*time.Millisecond)
}

// firstBack receives from url until a message comes (for at most 20s) and
// returns what came.
func firstBack(t *testing.T, api *sqs.Client, url string) []types.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		r, err := api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &url, WaitTimeSeconds: 1})
		if ctx.Err() == nil {
			require.NoError(t, err)
		}
		if err == nil && len(r.Messages) > 0 {
			return r.Messages
		}
	}
	return nil
}

// TestLambdaHandlerKeepsARetryAfterAway: a message whose handler fails
// with a known wait (a model's Retry-After) is reported failed and kept
// invisible for that wait, not the queue's visibility timeout nor the
// handler's backoff: the whole road from the error to the queue.
func TestLambdaHandlerKeepsARetryAfterAway(t *testing.T) {
	t.Parallel()
	api := sqstest.Client(t)
	q := sqstest.NewQueues(t, api, sqstest.Options{Visibility: 30 * time.Second})
	ev := lambdaEvent(t, q, []string{"throttled"})
	h := &lambdabatch.Handler{API: api, Logger: testbed.QuietLogger(), RetryBackoff: time.Minute,
		Handler: consumer.HandlerFunc(func(context.Context, *consumer.Message) (consumer.Report, error) {
			return nil, consumer.RetryAfter(2*time.Second, errors.New("429: every request of the chunk was throttled"))
		})}
	start := time.Now()
	resp, err := h.Handle(t.Context(), ev)
	require.NoError(t, err)
	require.Len(t, resp.BatchItemFailures, 1)
	back := firstBack(t, api, q.URL)
	require.Len(t, back, 1, "the record came back after its wait, not after the 30s visibility timeout or the minute of backoff")
	require.GreaterOrEqual(t, time.Since(start), 1900*time.Millisecond)
}
