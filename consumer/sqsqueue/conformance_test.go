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

// sqsFixture is a source on fresh queues of the emulator, holding bodies,
// whose visibility timeout is visibility.
func sqsFixture(t *testing.T, bodies []string, fifo bool, visibility time.Duration) sourcetest.Fixture {
	api := sqstest.Client(t)
	q := sqstest.NewQueues(t, api, sqstest.Options{FIFO: fifo, Visibility: visibility})
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
	return sourcetest.Fixture{Source: src, Redelivers: true, Finite: true, FIFO: fifo, Visibility: visibility,
		DeadLetters: func(t *testing.T) map[string][]string {
			out := map[string][]string{}
			for _, m := range sqstest.ReceiveAll(t, api, q.DLQ) {
				out[aws.ToString(m.Body)] = append(out[aws.ToString(m.Body)], aws.ToString(m.MessageAttributes[sqsqueue.AttrReason].StringValue))
			}
			return out
		}}
}

// run runs the suite on queues with a 30s visibility timeout (long enough
// that nothing comes back unasked) and, for the clauses on expiry and
// Extend, on queues with a 2s one.
func run(t *testing.T, fifo bool) {
	sourcetest.Run(t, func(t *testing.T, bodies []string) sourcetest.Fixture {
		return sqsFixture(t, bodies, fifo, 30*time.Second)
	}, sourcetest.Expiring(func(t *testing.T, bodies []string) sourcetest.Fixture {
		return sqsFixture(t, bodies, fifo, 2*time.Second)
	}))
}

func TestSQSSourceConformance(t *testing.T) {
	t.Parallel()
	run(t, false)
}

func TestSQSFIFOSourceConformance(t *testing.T) {
	t.Parallel()
	run(t, true)
}
