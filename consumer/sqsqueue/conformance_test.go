package sqsqueue_test

import (
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer/sourcetest"
	"github.com/socialdata/enricher/consumer/sqsqueue"
	"github.com/socialdata/enricher/internal/sqstest"
)

// sqsFixture is a source on fresh queues of the emulator, holding bodies.
func sqsFixture(t *testing.T, bodies []string, fifo bool) sourcetest.Fixture {
	api := sqstest.Client(t)
	q := sqstest.NewQueues(t, api, sqstest.Options{FIFO: fifo, Visibility: 30 * time.Second})
	for _, b := range bodies {
		// A FIFO queue hands out one message of a group at a time: each
		// body in a group of its own, so that the suite can hold several,
		// unless it names its group (see Fixture.FIFO).
		group := "g-" + b
		if g, _, ok := strings.Cut(b, "/"); ok {
			group = g
		}
		q.SendInGroup(t, b, group)
	}
	src, err := sqsqueue.NewSource(t.Context(), api, sqsqueue.Config{QueueURL: q.URL, Drain: true, WaitTime: time.Second})
	require.NoError(t, err)
	return sourcetest.Fixture{Source: src, Redelivers: true, Finite: true, FIFO: fifo,
		DeadLetters: func(t *testing.T) map[string][]string {
			out := map[string][]string{}
			for _, m := range sqstest.ReceiveAll(t, api, q.DLQ) {
				out[aws.ToString(m.Body)] = append(out[aws.ToString(m.Body)], aws.ToString(m.MessageAttributes[sqsqueue.AttrReason].StringValue))
			}
			return out
		}}
}

func TestSQSSourceConformance(t *testing.T) {
	t.Parallel()
	sourcetest.Run(t, func(t *testing.T, bodies []string) sourcetest.Fixture { return sqsFixture(t, bodies, false) })
}

func TestSQSFIFOSourceConformance(t *testing.T) {
	t.Parallel()
	sourcetest.Run(t, func(t *testing.T, bodies []string) sourcetest.Fixture { return sqsFixture(t, bodies, true) })
}
