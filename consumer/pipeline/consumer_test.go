package pipeline_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
)

func TestConsumerSettlesEveryMessage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(30)
	s2 := b.AppendPosts(30)
	q := consumer.NewMemQueue()
	q.Publish(b.Event(s1).Encode())
	q.Publish([]byte("not json"))
	q.Publish(consumer.SnapshotEvent{Table: "social.unknown", SnapshotID: s1}.Encode())
	q.Publish(b.Event(s2).Encode())
	q.Publish(b.Event(s1).Encode()) // redelivery of an old event
	q.Close()

	var outcomes []consumer.MessageOutcome
	c := &consumer.Consumer{Source: q, Handler: b.Processor(nil), Logger: quietLogger(),
		OnOutcome: func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) }}
	require.NoError(t, c.Run(t.Context()))

	require.Len(t, outcomes, 5)
	actions := map[string]string{}
	var tableOrder []int64
	for _, o := range outcomes {
		actions[o.Message.ID] = o.Action
		if rep, ok := o.Report.(*pipeline.Report); ok && rep.Event.Table == "social.posts" {
			tableOrder = append(tableOrder, rep.Event.SnapshotID)
		}
	}
	assert.Equal(t, map[string]string{"m1": consumer.ActionAcked, "m2": consumer.ActionDeadLettered,
		"m3": consumer.ActionDeadLettered, "m4": consumer.ActionAcked, "m5": consumer.ActionAcked}, actions)
	assert.Equal(t, []int64{s1, s2, s1}, tableOrder, "one table's messages are handled in the order received")
	assert.Equal(t, 3, q.Acked())
	dead := q.Dead()
	require.Len(t, dead, 2)
	slices.SortFunc(dead, func(a, b consumer.DeadLetter) int { return strings.Compare(a.ID, b.ID) })
	assert.Equal(t, consumer.ReasonBadMessage, dead[0].Reason)
	assert.Equal(t, "not json", string(dead[0].Body))
	assert.Equal(t, consumer.ReasonUnknownTable, dead[1].Reason)
	assert.Contains(t, dead[1].Error, "social.unknown")
	assert.Equal(t, 1, dead[0].ReceiveCount, "dead-lettered at once, not after retries")
	b.RequireExactlyOnce(60, nil)
}

func TestShutdownReleasesWorkInFlightAndLeaksNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(500)
	q := consumer.NewMemQueue()
	q.Publish(b.Event(s1).Encode())

	g := newGate(t, b.Spec, 1) // the model stalls on its second batch
	ctx, cancel := context.WithCancel(t.Context())
	var outcomes []consumer.MessageOutcome
	c := &consumer.Consumer{Source: q, Handler: b.Processor(g), Logger: quietLogger(), Grace: 50 * time.Millisecond,
		OnOutcome: func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) }}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitClosed(t, g.Held)
	cancel() // SIGTERM: stop receiving, give the work its grace, then cancel it
	select {
	case err := <-done:
		require.NoError(t, err, "shutdown is not an error")
	case <-time.After(30 * time.Second):
		t.Fatal("consumer did not stop")
	}
	require.Len(t, outcomes, 1)
	assert.Equal(t, consumer.ActionReleased, outcomes[0].Action)
	assert.ErrorIs(t, outcomes[0].Err, context.Canceled)
	assert.Empty(t, q.Dead())
	assert.Zero(t, q.Acked())

	// The released message comes back and completes the work exactly once.
	q.Close()
	c2 := &consumer.Consumer{Source: q, Handler: b.Processor(nil), Logger: quietLogger()}
	require.NoError(t, c2.Run(t.Context()))
	assert.Equal(t, 1, q.Acked())
	b.RequireExactlyOnce(500, nil)
}
