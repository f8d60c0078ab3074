package sqsqueue_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	smithy "github.com/aws/smithy-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/sqsqueue"
	"github.com/socialdata/enricher/internal/sqstest"
)

// dead is a message to put in a dead-letter queue. An empty reason sends
// it without enricher-* attributes, as the queue's redrive policy moves
// messages.
type dead struct {
	body, reason, err string
	at                time.Time
	group             string // FIFO only; default "g"
	attrs             map[string]types.MessageAttributeValue
}

var dedupSeq atomic.Int64

// sendDead sends messages to a queue (a DLQ) as the consumer's
// DeadLetter would.
func sendDead(t *testing.T, api *sqs.Client, url string, msgs ...dead) {
	t.Helper()
	for _, d := range msgs {
		in := &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(d.body), MessageAttributes: map[string]types.MessageAttributeValue{}}
		if d.reason != "" {
			at := d.at
			if at.IsZero() {
				at = time.Now()
			}
			in.MessageAttributes = sqsqueue.DeadLetterAttributes(d.reason, d.err, "orig-"+d.body, 3, "http://source", at)
		}
		for k, v := range d.attrs {
			in.MessageAttributes[k] = v
		}
		if strings.HasSuffix(url, ".fifo") {
			group := d.group
			if group == "" {
				group = "g"
			}
			in.MessageGroupId, in.MessageDeduplicationId = &group, aws.String(fmt.Sprint("d", dedupSeq.Add(1)))
		}
		_, err := api.SendMessage(t.Context(), in)
		require.NoError(t, err)
	}
}

func strAttr(v string) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
}

func bodiesOf(msgs []types.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = aws.ToString(m.Body)
	}
	slices.Sort(out)
	return out
}

// sentBodies is the bodies of msgs, sorted as bodiesOf and deadBodies
// sort theirs.
func sentBodies(msgs []dead) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.body
	}
	slices.Sort(out)
	return out
}

func deadBodies(dls []consumer.DeadLetter) []string {
	out := make([]string, len(dls))
	for i, d := range dls {
		out[i] = string(d.Body)
	}
	slices.Sort(out)
	return out
}

// requireSettled checks a queue's counts: n visible, none in flight.
func requireSettled(t *testing.T, api *sqs.Client, url string, n int) {
	t.Helper()
	d, err := sqsqueue.QueueDepth(t.Context(), api, url)
	require.NoError(t, err)
	require.Equal(t, sqsqueue.Depth{Visible: n}, d, "queue %s", url)
}

// dlqQueues is a source queue and its dead-letter queue on the emulator
// (both FIFO when fifo), with the client that made them.
func dlqQueues(t *testing.T, fifo bool) (*sqs.Client, *sqstest.Queues) {
	t.Helper()
	api := sqstest.Client(t)
	return api, sqstest.NewQueues(t, api, sqstest.Options{FIFO: fifo, MaxReceives: 10, Visibility: 30 * time.Second})
}

func numbered(prefix string, n int, reason string) []dead {
	out := make([]dead, n)
	for i := range out {
		out[i] = dead{body: fmt.Sprintf("%s-%02d", prefix, i), reason: reason}
	}
	return out
}

func TestDLQStatsCountsAndAge(t *testing.T) {
	t.Parallel()
	api, q := dlqQueues(t, false)

	empty, err := sqsqueue.DLQStats(t.Context(), api, q.DLQ)
	require.NoError(t, err)
	assert.Zero(t, empty.Sampled)
	assert.Zero(t, empty.OldestAge)
	assert.True(t, empty.OldestSentAt.IsZero())

	oldest := time.Now().Add(-2 * time.Hour).UTC()
	before := time.Now().Truncate(time.Millisecond)
	sendDead(t, api, q.DLQ,
		dead{body: "a", reason: consumer.ReasonBadMessage, at: oldest},
		dead{body: "b", reason: consumer.ReasonBadMessage, at: oldest.Add(time.Hour)},
		dead{body: "c"}, // moved by the redrive policy
	)
	after := time.Now()

	st, err := sqsqueue.DLQStats(t.Context(), api, q.DLQ)
	require.NoError(t, err)
	assert.Equal(t, sqsqueue.Depth{Visible: 3}, st.Depth)
	assert.Equal(t, 3, st.Sampled)
	assert.Equal(t, map[string]int{consumer.ReasonBadMessage: 2, consumer.ReasonMaxReceives: 1}, st.ByReason)
	assert.True(t, st.OldestDeadLetteredAt.Equal(oldest), "oldest dead-lettered: %v, want %v", st.OldestDeadLetteredAt, oldest)
	assert.False(t, st.OldestSentAt.Before(before), "sent at %v, before %v", st.OldestSentAt, before)
	assert.False(t, st.OldestSentAt.After(after))
	assert.GreaterOrEqual(t, st.OldestAge, time.Duration(0))
	assert.Less(t, st.OldestAge, time.Minute)
	assert.Positive(t, st.Retention)

	requireSettled(t, api, q.DLQ, 3)
	assert.Len(t, sqstest.ReceiveAll(t, api, q.DLQ), 3, "stats consumed nothing")
}

func TestPeekDLQReturnsReasonsWithoutConsuming(t *testing.T) {
	t.Parallel()
	api, q := dlqQueues(t, false)
	at := time.Now().Add(-time.Minute).UTC()
	sendDead(t, api, q.DLQ,
		dead{body: "not json", reason: consumer.ReasonBadMessage, err: "not a JSON object", at: at,
			attrs: map[string]types.MessageAttributeValue{"trace": strAttr("t-1")}},
		dead{body: `{"table":"social.nowhere"}`, reason: consumer.ReasonUnknownTable, err: "unknown table social.nowhere"},
		dead{body: "retried too often"},
	)

	got, err := sqsqueue.PeekDLQ(t.Context(), api, q.DLQ, 0, nil)
	require.NoError(t, err)
	require.Len(t, got, 3)
	by := map[string]consumer.DeadLetter{}
	for _, d := range got {
		by[string(d.Body)] = d
		assert.NotEmpty(t, d.ID)
		assert.False(t, d.SentAt.IsZero())
		assert.Equal(t, 1, d.ReceiveCount, "this look is the first receive")
	}
	bad := by["not json"]
	assert.Equal(t, consumer.ReasonBadMessage, bad.Reason)
	assert.Equal(t, "not a JSON object", bad.Error)
	assert.True(t, bad.At.Equal(at))
	assert.Equal(t, "t-1", bad.Attributes["trace"])
	assert.Equal(t, "orig-not json", bad.Attributes[sqsqueue.AttrOriginalMessageID])
	assert.Equal(t, consumer.ReasonUnknownTable, by[`{"table":"social.nowhere"}`].Reason)
	policy := by["retried too often"]
	assert.Equal(t, consumer.ReasonMaxReceives, policy.Reason, "no enricher-reason: the redrive policy moved it")
	assert.Empty(t, policy.Error)
	assert.True(t, policy.At.IsZero())

	requireSettled(t, api, q.DLQ, 3)

	// A filtered look, and a bounded one; each look counts as a receive.
	only, err := sqsqueue.PeekDLQ(t.Context(), api, q.DLQ, 0, []string{consumer.ReasonMaxReceives, "no_such_reason"})
	require.NoError(t, err)
	require.Len(t, only, 1)
	assert.Equal(t, "retried too often", string(only[0].Body))
	assert.Equal(t, 2, only[0].ReceiveCount)
	two, err := sqsqueue.PeekDLQ(t.Context(), api, q.DLQ, 2, nil)
	require.NoError(t, err)
	assert.Len(t, two, 2)

	requireSettled(t, api, q.DLQ, 3)
	assert.Equal(t, []string{"not json", "retried too often", `{"table":"social.nowhere"}`}, bodiesOf(sqstest.ReceiveAll(t, api, q.DLQ)),
		"peek consumed nothing")
}

func TestPeekDLQSeesPastTheFirstBatch(t *testing.T) {
	t.Parallel()
	api, q := dlqQueues(t, false)
	msgs := numbered("m", 23, consumer.ReasonBadMessage)
	sendDead(t, api, q.DLQ, msgs...)

	got, err := sqsqueue.PeekDLQ(t.Context(), api, q.DLQ, 0, nil)
	require.NoError(t, err)
	assert.Equal(t, sentBodies(msgs), deadBodies(got), "every message once")
	got, err = sqsqueue.PeekDLQ(t.Context(), api, q.DLQ, 15, nil)
	require.NoError(t, err)
	assert.Len(t, got, 15)
	requireSettled(t, api, q.DLQ, 23)
}

func TestRedriveMovesEverythingBack(t *testing.T) {
	t.Parallel()
	api, q := dlqQueues(t, false)
	msgs := numbered("bad", 9, consumer.ReasonBadMessage)
	msgs = append(msgs, numbered("policy", 4, "")...)
	msgs[0].attrs = map[string]types.MessageAttributeValue{
		"trace": strAttr("t-1"),
		"blob":  {DataType: aws.String("Binary"), BinaryValue: []byte{1, 2, 3}},
		"n":     {DataType: aws.String("Number"), StringValue: aws.String("42")},
	}
	sendDead(t, api, q.DLQ, msgs...)

	var calls [][2]int
	res, err := sqsqueue.Redrive(t.Context(), api, sqsqueue.RedriveOptions{
		DLQURL: q.DLQ, QueueURL: q.URL,
		Progress: func(moved, skipped int) { calls = append(calls, [2]int{moved, skipped}) },
	})
	require.NoError(t, err)
	assert.Nil(t, res.MoveTask, "the emulator has no StartMessageMoveTask: moved by receive-send-delete")
	assert.Equal(t, 13, res.Moved)
	assert.Zero(t, res.Skipped)
	assert.Equal(t, map[string]int{consumer.ReasonBadMessage: 9, consumer.ReasonMaxReceives: 4}, res.ByReason)
	require.Len(t, calls, 13)
	assert.Equal(t, [2]int{1, 0}, calls[0])
	assert.Equal(t, [2]int{13, 0}, calls[12])

	requireSettled(t, api, q.DLQ, 0)
	back := sqstest.ReceiveAll(t, api, q.URL)
	assert.Equal(t, sentBodies(msgs), bodiesOf(back))
	for _, m := range back {
		for k := range m.MessageAttributes {
			assert.False(t, strings.HasPrefix(k, "enricher-"), "message %s still has %s", aws.ToString(m.Body), k)
		}
		if aws.ToString(m.Body) == msgs[0].body {
			assert.Equal(t, "t-1", aws.ToString(m.MessageAttributes["trace"].StringValue))
			assert.Equal(t, []byte{1, 2, 3}, m.MessageAttributes["blob"].BinaryValue)
			assert.Equal(t, "Number", aws.ToString(m.MessageAttributes["n"].DataType))
			assert.Equal(t, "42", aws.ToString(m.MessageAttributes["n"].StringValue))
		}
	}
	assert.Empty(t, sqstest.ReceiveAll(t, api, q.DLQ))
}

func TestRedriveStopsAtMax(t *testing.T) {
	t.Parallel()
	api, q := dlqQueues(t, false)
	sendDead(t, api, q.DLQ, numbered("m", 5, consumer.ReasonBadMessage)...)

	res, err := sqsqueue.Redrive(t.Context(), api, sqsqueue.RedriveOptions{DLQURL: q.DLQ, QueueURL: q.URL, Max: 2})
	require.NoError(t, err)
	assert.Equal(t, 2, res.Moved)
	requireSettled(t, api, q.DLQ, 3)
	requireSettled(t, api, q.URL, 2)

	_, err = sqsqueue.Redrive(t.Context(), api, sqsqueue.RedriveOptions{DLQURL: q.DLQ, QueueURL: q.URL, Max: -1})
	require.ErrorContains(t, err, "max must not be negative")
}

func TestRedriveReasonFilterLeavesTheOthers(t *testing.T) {
	t.Parallel()
	api, q := dlqQueues(t, false)
	sendDead(t, api, q.DLQ,
		dead{body: "bad-1", reason: consumer.ReasonBadMessage},
		dead{body: "table-1", reason: consumer.ReasonUnknownTable},
		dead{body: "bad-2", reason: consumer.ReasonBadMessage},
		dead{body: "policy-1"},
		dead{body: "table-2", reason: consumer.ReasonUnknownTable},
	)
	var last [2]int
	res, err := sqsqueue.Redrive(t.Context(), api, sqsqueue.RedriveOptions{
		DLQURL: q.DLQ, QueueURL: q.URL, Reasons: []string{consumer.ReasonBadMessage, consumer.ReasonMaxReceives},
		Progress: func(moved, skipped int) { last = [2]int{moved, skipped} },
	})
	require.NoError(t, err)
	assert.Nil(t, res.MoveTask)
	assert.Equal(t, 3, res.Moved)
	assert.Equal(t, 2, res.Skipped)
	assert.Equal(t, [2]int{3, 2}, last)
	requireSettled(t, api, q.DLQ, 2)

	// The DLQ now holds filtered-out messages only: the run still ends.
	res, err = sqsqueue.Redrive(t.Context(), api, sqsqueue.RedriveOptions{DLQURL: q.DLQ, QueueURL: q.URL, Reasons: []string{consumer.ReasonBadMessage}})
	require.NoError(t, err)
	assert.Equal(t, 0, res.Moved)
	assert.Equal(t, 2, res.Skipped)
	requireSettled(t, api, q.DLQ, 2)

	assert.Equal(t, []string{"bad-1", "bad-2", "policy-1"}, bodiesOf(sqstest.ReceiveAll(t, api, q.URL)))
	left := sqstest.ReceiveAll(t, api, q.DLQ)
	assert.Equal(t, []string{"table-1", "table-2"}, bodiesOf(left))
	for _, m := range left {
		assert.Equal(t, consumer.ReasonUnknownTable, aws.ToString(m.MessageAttributes[sqsqueue.AttrReason].StringValue), "left untouched")
	}
}

func TestRedriveDryRunMovesNothing(t *testing.T) {
	t.Parallel()
	api, q := dlqQueues(t, false)
	sendDead(t, api, q.DLQ, numbered("bad", 11, consumer.ReasonBadMessage)...)
	sendDead(t, api, q.DLQ, numbered("table", 2, consumer.ReasonUnknownTable)...)

	res, err := sqsqueue.Redrive(t.Context(), api, sqsqueue.RedriveOptions{DLQURL: q.DLQ, QueueURL: q.URL, DryRun: true})
	require.NoError(t, err)
	assert.Nil(t, res.MoveTask, "a dry run never starts a move task")
	assert.Equal(t, 13, res.Moved, "would move")
	res, err = sqsqueue.Redrive(t.Context(), api, sqsqueue.RedriveOptions{DLQURL: q.DLQ, QueueURL: q.URL, DryRun: true,
		Reasons: []string{consumer.ReasonUnknownTable}})
	require.NoError(t, err)
	assert.Equal(t, 2, res.Moved)
	assert.Equal(t, 11, res.Skipped)

	requireSettled(t, api, q.DLQ, 13)
	requireSettled(t, api, q.URL, 0)
	assert.Len(t, sqstest.ReceiveAll(t, api, q.DLQ), 13)
}

func TestRedriveInterruptedLosesNothing(t *testing.T) {
	t.Parallel()
	api, q := dlqQueues(t, false)
	msgs := numbered("m", 8, consumer.ReasonBadMessage)
	sendDead(t, api, q.DLQ, msgs...)
	want := sentBodies(msgs)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res, err := sqsqueue.Redrive(ctx, api, sqsqueue.RedriveOptions{DLQURL: q.DLQ, QueueURL: q.URL,
		Progress: func(moved, _ int) {
			if moved == 1 {
				cancel()
			}
		}})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, res.Moved, "what was done before the interruption")

	// Every body is in one queue or the other, none in flight.
	inDLQ, err := sqsqueue.PeekDLQ(t.Context(), api, q.DLQ, 0, nil)
	require.NoError(t, err)
	inSource, err := sqsqueue.PeekDLQ(t.Context(), api, q.URL, 0, nil)
	require.NoError(t, err)
	all := append(deadBodies(inDLQ), deadBodies(inSource)...)
	assert.GreaterOrEqual(t, len(all), len(msgs))
	assert.Subset(t, all, want)
	assert.NotEmpty(t, inDLQ, "the interruption stopped the run")
	requireSettled(t, api, q.DLQ, len(inDLQ))

	// A second run finishes the job.
	res, err = sqsqueue.Redrive(t.Context(), api, sqsqueue.RedriveOptions{DLQURL: q.DLQ, QueueURL: q.URL})
	require.NoError(t, err)
	assert.Equal(t, len(inDLQ), res.Moved)
	requireSettled(t, api, q.DLQ, 0)
	back := bodiesOf(sqstest.ReceiveAll(t, api, q.URL))
	assert.GreaterOrEqual(t, len(back), len(msgs))
	assert.Equal(t, want, slices.Compact(back))
}

func TestRedriveIntoFIFOKeepsTheGroup(t *testing.T) {
	t.Parallel()
	api, q := dlqQueues(t, true)
	sendDead(t, api, q.DLQ,
		dead{body: "posts-1", reason: consumer.ReasonSnapshotNotFound, group: "social.posts"},
		dead{body: "users-1", reason: consumer.ReasonSnapshotNotFound, group: "social.users"},
		dead{body: "posts-2", group: "social.posts"},
		dead{body: "posts-3", reason: consumer.ReasonSnapshotNotFound, group: "social.posts"},
		dead{body: "users-2", reason: consumer.ReasonSnapshotNotFound, group: "social.users"},
	)
	res, err := sqsqueue.Redrive(t.Context(), api, sqsqueue.RedriveOptions{DLQURL: q.DLQ, QueueURL: q.URL})
	require.NoError(t, err)
	assert.Equal(t, 5, res.Moved)
	requireSettled(t, api, q.DLQ, 0)

	groups := map[string][]string{}
	for _, m := range sqstest.ReceiveAll(t, api, q.URL) {
		g := m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)]
		groups[g] = append(groups[g], aws.ToString(m.Body))
	}
	assert.Equal(t, map[string][]string{
		"social.posts": {"posts-1", "posts-2", "posts-3"},
		"social.users": {"users-1", "users-2"},
	}, groups, "each group kept, in order")

	// From a standard queue (no group) into the FIFO queue: the group is
	// the table the event names.
	std, err := api.CreateQueue(t.Context(), &sqs.CreateQueueInput{QueueName: aws.String(sqstest.Name(t) + "-std-dlq")})
	require.NoError(t, err)
	sendDead(t, api, aws.ToString(std.QueueUrl),
		dead{body: `{"version":1,"table":"social.posts","snapshot_id":7}`, reason: consumer.ReasonSnapshotNotFound},
		dead{body: "garbage", reason: consumer.ReasonBadMessage},
	)
	res, err = sqsqueue.Redrive(t.Context(), api, sqsqueue.RedriveOptions{DLQURL: aws.ToString(std.QueueUrl), QueueURL: q.URL})
	require.NoError(t, err)
	assert.Equal(t, 2, res.Moved)
	groups = map[string][]string{}
	for _, m := range sqstest.ReceiveAll(t, api, q.URL) {
		g := m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)]
		groups[g] = append(groups[g], aws.ToString(m.Body))
	}
	assert.Equal(t, map[string][]string{
		"social.posts": {`{"version":1,"table":"social.posts","snapshot_id":7}`},
		"dead-letters": {"garbage"},
	}, groups)
}

// fakeDLQ answers GetQueueAttributes (QueueArn), StartMessageMoveTask and
// an empty ReceiveMessage; any other call panics on the nil DLQAPI.
type fakeDLQ struct {
	sqsqueue.DLQAPI
	moveErr  error
	started  []*sqs.StartMessageMoveTaskInput
	receives int
}

func (f *fakeDLQ) GetQueueAttributes(_ context.Context, in *sqs.GetQueueAttributesInput, _ ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	name := aws.ToString(in.QueueUrl)
	name = name[strings.LastIndexByte(name, '/')+1:]
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{"QueueArn": "arn:aws:sqs:eu-west-1:123456789012:" + name}}, nil
}

func (f *fakeDLQ) StartMessageMoveTask(_ context.Context, in *sqs.StartMessageMoveTaskInput, _ ...func(*sqs.Options)) (*sqs.StartMessageMoveTaskOutput, error) {
	f.started = append(f.started, in)
	if f.moveErr != nil {
		return nil, &smithy.OperationError{ServiceID: "SQS", OperationName: "StartMessageMoveTask", Err: f.moveErr}
	}
	return &sqs.StartMessageMoveTaskOutput{TaskHandle: aws.String("task-1")}, nil
}

func (f *fakeDLQ) ReceiveMessage(context.Context, *sqs.ReceiveMessageInput, ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	f.receives++
	return &sqs.ReceiveMessageOutput{}, nil
}

func TestRedriveUsesAMoveTaskWhereSQSHasOne(t *testing.T) {
	t.Parallel()
	opts := sqsqueue.RedriveOptions{DLQURL: "https://sqs/123456789012/q-dlq", QueueURL: "https://sqs/123456789012/q"}

	f := &fakeDLQ{}
	res, err := sqsqueue.Redrive(t.Context(), f, opts)
	require.NoError(t, err)
	assert.Equal(t, &sqsqueue.MoveTask{Handle: "task-1",
		SourceArn: "arn:aws:sqs:eu-west-1:123456789012:q-dlq", DestinationArn: "arn:aws:sqs:eu-west-1:123456789012:q"}, res.MoveTask)
	assert.Zero(t, res.Moved)
	require.Len(t, f.started, 1)
	assert.Nil(t, f.started[0].MaxNumberOfMessagesPerSecond)
	assert.Zero(t, f.receives)

	// Unknown action (the emulator's answer, as on the wire): fall back.
	f = &fakeDLQ{moveErr: &smithy.GenericAPIError{Code: "InvalidAction", Message: "Unknown action: StartMessageMoveTask"}}
	_, err = sqsqueue.Redrive(t.Context(), f, opts)
	require.NoError(t, err)
	assert.Equal(t, 1, f.receives, "fell back to receive-send-delete")

	// Any other error is the caller's.
	f = &fakeDLQ{moveErr: &smithy.GenericAPIError{Code: "AccessDenied", Message: "not allowed"}}
	_, err = sqsqueue.Redrive(t.Context(), f, opts)
	require.ErrorContains(t, err, "start message move task")
	require.ErrorContains(t, err, "not allowed")
	assert.Zero(t, f.receives)

	// Partial moves, filters and dry runs never start a task.
	for _, o := range []sqsqueue.RedriveOptions{{Max: 3}, {Reasons: []string{"bad_message"}}, {DryRun: true}} {
		f = &fakeDLQ{}
		o.DLQURL, o.QueueURL = opts.DLQURL, opts.QueueURL
		_, err = sqsqueue.Redrive(t.Context(), f, o)
		require.NoError(t, err)
		assert.Empty(t, f.started, "%+v", o)
		assert.Equal(t, 1, f.receives)
	}
}
