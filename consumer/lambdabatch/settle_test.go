package lambdabatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/lambdabatch"
)

// TestLambdaSettlesOnlyRecordsInFlight: a record is in flight from when
// Receive hands it out until one settle call takes it. A record not handed
// out yet cannot be settled (counting it would drain the batch before its
// last record is worked on), and a message that SQS delivered twice in one
// batch (two records, one message id, two receipt handles) is settled once
// per record, so that the batch drains.
func TestLambdaSettlesOnlyRecordsInFlight(t *testing.T) {
	t.Parallel()
	rec := func(id, receipt string) events.SQSMessage {
		r := record(id, []byte("body of "+id), "")
		r.ReceiptHandle = receipt
		return r
	}
	src := lambdabatch.NewSource(events.SQSEvent{Records: []events.SQSMessage{rec("a", "ra1"), rec("a", "ra2"), rec("b", "rb")}}, nil, "")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	first, err := src.Receive(ctx, 2)
	require.NoError(t, err)
	require.Len(t, first, 2)

	notYet := &consumer.Message{ID: "b", Receipt: "rb"}
	require.ErrorIs(t, src.Ack(ctx, notYet), consumer.ErrNotInFlight, "b is not handed out yet")
	for _, m := range first {
		require.NoError(t, src.Ack(ctx, m), "the record of receipt %s", m.Receipt)
	}
	rest, err := src.Receive(ctx, 10)
	require.NoError(t, err)
	require.Len(t, rest, 1)
	require.NoError(t, src.Release(ctx, rest[0]))
	_, err = src.Receive(ctx, 10)
	require.ErrorIs(t, err, consumer.ErrDrained)
	assert.Equal(t, []string{"b"}, failedIDs(src.Response()))
}
