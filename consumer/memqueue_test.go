package consumer_test

import (
	"testing"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/sourcetest"
)

func TestMemQueueConformance(t *testing.T) {
	t.Parallel()
	sourcetest.Run(t, func(t *testing.T, bodies []string) sourcetest.Fixture {
		q := consumer.NewMemQueue()
		for _, b := range bodies {
			q.Publish([]byte(b))
		}
		q.Close()
		return sourcetest.Fixture{Source: q, Redelivers: true, Finite: true,
			DeadLetters: func(*testing.T) map[string][]string {
				out := map[string][]string{}
				for _, d := range q.Dead() {
					out[string(d.Body)] = append(out[string(d.Body)], d.Reason)
				}
				return out
			}}
	})
}
