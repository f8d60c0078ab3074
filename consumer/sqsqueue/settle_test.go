package sqsqueue_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/sqsqueue"
	"github.com/socialdata/enricher/internal/sqstest"
)

// lagging is an SQS queue as the source sees it when the approximate
// counts lag (they do, in SQS, for up to a minute): it hands out the
// deliveries it is given, then nothing, its counts say it is empty, and
// like SQS it acknowledges a delete of any receipt handle. It counts the
// calls that settle.
type lagging struct {
	sqsqueue.API // nil: a call not faked here panics

	visibility string

	mu         sync.Mutex
	deliveries [][]types.Message
	deletes    []string
	changes    []string
	sends      int
}

func (l *lagging) ReceiveMessage(ctx context.Context, _ *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	l.mu.Lock()
	if len(l.deliveries) > 0 {
		out := l.deliveries[0]
		l.deliveries = l.deliveries[1:]
		l.mu.Unlock()
		return &sqs.ReceiveMessageOutput{Messages: out}, nil
	}
	l.mu.Unlock()
	select { // a short long-poll
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(20 * time.Millisecond):
		return &sqs.ReceiveMessageOutput{}, nil
	}
}

func (l *lagging) GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{
		string(types.QueueAttributeNameVisibilityTimeout):                     l.visibility,
		string(types.QueueAttributeNameMaximumMessageSize):                    "262144",
		string(types.QueueAttributeNameApproximateNumberOfMessages):           "0",
		string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible): "0",
		string(types.QueueAttributeNameApproximateNumberOfMessagesDelayed):    "0",
	}}, nil
}

func (l *lagging) DeleteMessage(_ context.Context, in *sqs.DeleteMessageInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deletes = append(l.deletes, aws.ToString(in.ReceiptHandle))
	return &sqs.DeleteMessageOutput{}, nil
}

func (l *lagging) ChangeMessageVisibility(_ context.Context, in *sqs.ChangeMessageVisibilityInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, aws.ToString(in.ReceiptHandle))
	return &sqs.ChangeMessageVisibilityOutput{}, nil
}

func (l *lagging) SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sends++
	return &sqs.SendMessageOutput{MessageId: aws.String("dlq-copy")}, nil
}

// calls are the receipt handles deleted and changed, and the sends.
func (l *lagging) calls() (deletes, changes []string, sends int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.deletes...), append([]string(nil), l.changes...), l.sends
}

func sqsMessage(id, receipt string) types.Message {
	return types.Message{MessageId: aws.String(id), ReceiptHandle: aws.String(receipt), Body: aws.String("body of " + id)}
}

func laggingSource(t *testing.T, l *lagging) *sqsqueue.Source {
	t.Helper()
	src, err := sqsqueue.NewSource(t.Context(), l, sqsqueue.Config{QueueURL: "https://sqs.test/000000000000/q", DLQURL: "https://sqs.test/000000000000/dlq",
		Drain: true, WaitTime: time.Second})
	require.NoError(t, err)
	return src
}

// requireNotDrained checks that Receive waits (a message is in flight)
// rather than report the queue drained.
func requireNotDrained(t *testing.T, src *sqsqueue.Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	msgs, err := src.Receive(ctx, 10)
	require.Empty(t, msgs)
	require.ErrorIs(t, err, context.DeadlineExceeded, "a message is still in flight: the queue is not drained")
}

// TestSettlingTwiceChangesNothing: a second settle of a delivery, by any
// of the four calls, is an error that says it is not in flight, calls
// SQS for nothing (which would acknowledge a second delete), and leaves
// the count of what is in flight as it was, so that a queue whose
// approximate counts lag is not reported drained while a message is held.
func TestSettlingTwiceChangesNothing(t *testing.T) {
	t.Parallel()
	l := &lagging{visibility: "30", deliveries: [][]types.Message{{sqsMessage("a", "ra"), sqsMessage("b", "rb")}}}
	src := laggingSource(t, l)
	msgs, err := src.Receive(t.Context(), 10)
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	a, b := msgs[0], msgs[1]

	require.NoError(t, src.Ack(t.Context(), a))
	errs := map[string]error{
		"Ack":          src.Ack(t.Context(), a),
		"Release":      src.Release(t.Context(), a),
		"ReleaseAfter": src.ReleaseAfter(t.Context(), a, time.Minute),
		"DeadLetter":   src.DeadLetter(t.Context(), a, consumer.ReasonBadMessage, errors.New("bad")),
		"Extend":       src.Extend(t.Context(), a),
	}
	requireNotDrained(t, src)
	for call, err := range errs {
		assert.ErrorIs(t, err, consumer.ErrNotInFlight, "%s of a settled message", call)
		assert.NotErrorIs(t, err, consumer.ErrNotDeadLettered, "%s: a message settled already does not come back", call)
	}
	deletes, changes, sends := l.calls()
	assert.Equal(t, []string{"ra"}, deletes, "one delete")
	assert.Empty(t, changes)
	assert.Zero(t, sends, "nothing sent to the dead-letter queue")

	require.NoError(t, src.Ack(t.Context(), b))
	_, err = src.Receive(t.Context(), 10)
	require.ErrorIs(t, err, consumer.ErrDrained)
}

// TestSettlingAnExpiredDeliveryIsAnError: a delivery whose message was
// received again (its visibility timeout ended), or whose visibility
// timeout has passed, is not in flight: SQS would acknowledge a delete of
// its stale receipt handle and delete nothing, so the source settles
// nothing in SQS and says the message comes back. The latest delivery
// settles as usual, and an extended delivery does not expire.
func TestSettlingAnExpiredDeliveryIsAnError(t *testing.T) {
	t.Parallel()
	l := &lagging{visibility: "1", deliveries: [][]types.Message{
		{sqsMessage("a", "ra1"), sqsMessage("b", "rb1"), sqsMessage("c", "rc1")},
		{sqsMessage("a", "ra2")},
	}}
	src := laggingSource(t, l)
	first := receiveAll(t, src, 3)
	again := receiveAll(t, src, 1)[0]
	require.Equal(t, "a", again.ID)

	err := src.Ack(t.Context(), first[0])
	require.ErrorIs(t, err, consumer.ErrNotInFlight, "a was received again: its first delivery expired")
	assert.ErrorContains(t, err, "received again")
	require.NoError(t, src.Ack(t.Context(), again))

	// c is extended; b is not, and its visibility timeout of 1s passes.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(src.HeartbeatInterval()):
				assert.NoError(t, src.Extend(context.Background(), first[2]))
			}
		}
	})
	time.Sleep(1200 * time.Millisecond)
	close(stop)
	wg.Wait()
	err = src.DeadLetter(t.Context(), first[1], consumer.ReasonBadMessage, errors.New("bad"))
	require.ErrorIs(t, err, consumer.ErrNotInFlight, "b's visibility timeout passed")
	require.ErrorIs(t, err, consumer.ErrNotDeadLettered, "b comes back")
	assert.ErrorContains(t, err, "visibility timeout ended")
	require.NoError(t, src.Ack(t.Context(), first[2]), "c was extended")

	deletes, _, sends := l.calls()
	assert.Equal(t, []string{"ra2", "rc1"}, deletes, "only the deliveries in flight are deleted")
	assert.Zero(t, sends, "nothing sent to the dead-letter queue")
	_, err = src.Receive(t.Context(), 10)
	require.ErrorIs(t, err, consumer.ErrDrained)
}

func receiveAll(t *testing.T, src *sqsqueue.Source, n int) []*consumer.Message {
	t.Helper()
	msgs, err := src.Receive(t.Context(), 10)
	require.NoError(t, err)
	require.Len(t, msgs, n)
	return msgs
}

// TestDeadLetterWithoutADLQOfASettledMessageIsNotDeadLettered: on a queue
// with no dead-letter queue, dead-lettering a message that is no longer in
// flight is refused, and the error says it is not in a dead-letter queue,
// so that the consumer counts it released, not dead-lettered.
func TestDeadLetterWithoutADLQOfASettledMessageIsNotDeadLettered(t *testing.T) {
	t.Parallel()
	api := sqstest.Client(t)
	url := sqstest.NewQueue(t, api, nil)
	_, err := api.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("poison")})
	require.NoError(t, err)
	src, err := sqsqueue.NewSource(t.Context(), api, sqsqueue.Config{QueueURL: url, WaitTime: time.Second})
	require.NoError(t, err)
	msgs := receiveAll(t, src, 1)
	require.NoError(t, src.Ack(t.Context(), msgs[0]))
	err = src.DeadLetter(t.Context(), msgs[0], consumer.ReasonBadMessage, errors.New("not a JSON object"))
	require.ErrorIs(t, err, consumer.ErrNotDeadLettered)
	require.ErrorIs(t, err, consumer.ErrNotInFlight)
}
