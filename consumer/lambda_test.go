package consumer_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
)

func record(id string, body []byte, group string) events.SQSMessage {
	arn := "arn:aws:sqs:us-east-1:000000000000:snapshots"
	if group != "" {
		arn += ".fifo"
	}
	return events.SQSMessage{MessageId: id, Body: string(body), EventSourceARN: arn,
		Attributes: map[string]string{"ApproximateReceiveCount": "1", "MessageGroupId": group}}
}

func failedIDs(resp events.SQSEventResponse) []string {
	var ids []string
	for _, f := range resp.BatchItemFailures {
		ids = append(ids, f.ItemIdentifier)
	}
	return ids
}

func TestLambdaReportsPartialBatchFailures(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.appendPosts(40)
	s2 := b.appendPosts(40)
	h := &consumer.LambdaHandler{Processor: b.processor(nil), Logger: quietLogger()}
	ev := events.SQSEvent{Records: []events.SQSMessage{
		record("a", b.event(s1).Encode(), ""),
		record("b", []byte(`{"version": 1}`), ""), // poison; no DLQ configured: reported failed
		record("c", b.event(s2).Encode(), ""),
	}}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	resp, err := h.Handle(ctx, ev)
	require.NoError(t, err)
	assert.Equal(t, []string{"b"}, failedIDs(resp))
	b.requireExactlyOnce(80, nil)
}

func TestLambdaFIFOFailsTheRestOfAGroup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.appendPosts(10)
	h := &consumer.LambdaHandler{Processor: b.processor(nil), Logger: quietLogger()}
	ev := events.SQSEvent{Records: []events.SQSMessage{
		record("a", []byte("not json"), "social.posts"),
		record("b", b.event(s1).Encode(), "social.posts"),
		record("c", []byte(`{"version":1,"table":"other.t","snapshot_id":1}`), "other.t"),
	}}
	resp, err := h.Handle(t.Context(), ev)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "c"}, failedIDs(resp),
		"after a failure in a FIFO group, the rest of that group is reported failed too")
	// b was processed all the same; its redelivery will be a no-op.
	b.requireExactlyOnce(10, nil)
}

func TestLambdaStopsBeforeItsDeadlineAndTheNextInvocationResumes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.manyFiles()
	s1 := b.appendPostsBatched(2000, 250)

	// The model stalls after 12 batches of 50 rows: two chunks of 300 rows
	// are committed, then the deadline comes.
	g := newGate(t, b.spec, 12)
	h := &consumer.LambdaHandler{Logger: quietLogger(), Margin: 500 * time.Millisecond,
		Processor: b.processor(g, func(o *consumer.Options) { o.ChunkRows = 300; o.BatchRows = 50; o.Workers = 1 })}
	ev := events.SQSEvent{Records: []events.SQSMessage{record("a", b.event(s1).Encode(), "")}}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	resp, err := h.Handle(ctx, ev)
	require.NoError(t, err)
	require.NoError(t, ctx.Err(), "the handler returned before the invocation's deadline")
	assert.Equal(t, []string{"a"}, failedIDs(resp), "unfinished work is reported failed")
	wm := b.watermark()
	require.Equal(t, s1, wm.PartialSnapshotID, "some chunks were committed: %+v", wm)
	committed := len(b.targetRows())
	require.Equal(t, 600, committed, "two 300-row chunks were committed")

	h2 := &consumer.LambdaHandler{Logger: quietLogger(), Processor: b.processor(nil)}
	resp, err = h2.Handle(t.Context(), ev)
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	b.requireExactlyOnce(2000, nil)
}

// TestLambdaRecordedEvent feeds the handler an SQS event in the JSON shape
// the Lambda runtime delivers (testdata/sqs-event.json).
func TestLambdaRecordedEvent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.appendPosts(25)
	raw, err := os.ReadFile("testdata/sqs-event.json")
	require.NoError(t, err)
	var ev events.SQSEvent
	require.NoError(t, json.Unmarshal([]byte(strings.ReplaceAll(string(raw), "SNAPSHOT", strconv.FormatInt(s1, 10))), &ev))
	require.Len(t, ev.Records, 2)

	h := &consumer.LambdaHandler{Processor: b.processor(nil), Logger: quietLogger()}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resp, err := h.Handle(ctx, ev)
	require.NoError(t, err)
	// The second record misses snapshot_id: poison, and without a DLQ it is
	// reported failed (the queue's redrive policy will take it).
	assert.Equal(t, []string{"2e1424d4-f796-459a-8184-9c92662be6da"}, failedIDs(resp))
	b.requireExactlyOnce(25, nil)
}
