package sourcetest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
)

// fifoOrder checks that the messages of each group ("a/1", "a/2", ...)
// are received in the order of their numbers: next is the number each
// group's next delivery must have.
type fifoOrder struct {
	next map[string]int
}

func groupOf(t *testing.T, body string) (string, int) {
	t.Helper()
	g, num, ok := strings.Cut(body, "/")
	require.True(t, ok, "body %q", body)
	n, err := strconv.Atoi(num)
	require.NoError(t, err)
	return g, n
}

func (o *fifoOrder) received(t *testing.T, m *consumer.Message) {
	t.Helper()
	g, n := groupOf(t, string(m.Body))
	want, ok := o.next[g]
	if !ok {
		want = 1
	}
	require.Equal(t, g+"/"+strconv.Itoa(want), string(m.Body), "the next message of group %s", g)
	o.next[g] = n + 1
}

// released says m comes back: its group starts again from it.
func (o *fifoOrder) released(t *testing.T, m *consumer.Message) {
	g, n := groupOf(t, string(m.Body))
	o.next[g] = min(o.next[g], n)
}

// fifoFixture is h's fixture of sent, skipping t where the source has no
// FIFO groups (the clause does not apply), with a context bounded by the
// suite's timeout and an empty order book.
func fifoFixture(t *testing.T, h Harness, sent []string) (Fixture, context.Context, *fifoOrder) {
	t.Helper()
	f := h(t, sent)
	if !f.FIFO {
		t.Skip("the source has no FIFO groups")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return f, ctx, &fifoOrder{next: map[string]int{}}
}

// testFIFOOrder: the messages of a group come in the order they were
// sent, in a receive and across receives.
func testFIFOOrder(t *testing.T, h Harness) {
	sent := []string{"a/1", "b/1", "c/1", "a/2", "b/2", "c/2", "a/3", "b/3", "c/3"}
	f, ctx, order := fifoFixture(t, h, sent)
	for got := 0; got < len(sent); {
		msgs, err := f.Source.Receive(ctx, 10)
		require.NoError(t, err, "received %d of %d", got, len(sent))
		for _, m := range msgs {
			order.received(t, m)
		}
		for _, m := range msgs {
			require.NoError(t, f.Source.Ack(ctx, m))
		}
		got += len(msgs)
	}
	requireDrained(t, f, 2*time.Second)
	if !f.Redelivers {
		assert.Empty(t, f.HandedBack(t))
	}
}

// testFIFORelease: a released message comes back before the messages of
// its group that follow it; a source that does not redeliver hands them
// back with it, those acknowledged since included (their work is done
// again, after it).
func testFIFORelease(t *testing.T, h Harness) {
	sent := []string{"a/1", "b/1", "a/2", "b/2", "a/3", "b/3"}
	f, ctx, order := fifoFixture(t, h, sent)
	released := false
	for acked, received := 0, 0; acked < len(sent) && (f.Redelivers || received < len(sent)); {
		// One at a time: the next of a group is not held while the one
		// before it is released.
		msgs, err := f.Source.Receive(ctx, 1)
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		m := msgs[0]
		received++
		order.received(t, m)
		if string(m.Body) == "a/2" && !released {
			released = true
			require.NoError(t, f.Source.Release(ctx, m))
			if f.Redelivers {
				order.released(t, m)
			}
			continue
		}
		require.NoError(t, f.Source.Ack(ctx, m))
		acked++
	}
	require.True(t, released)
	requireDrained(t, f, 2*time.Second)
	if !f.Redelivers {
		assert.Equal(t, []string{"a/2", "a/3"}, f.HandedBack(t), "a/3 comes back after a/2")
	}
}
