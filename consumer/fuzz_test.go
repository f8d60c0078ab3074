package consumer_test

import (
	"testing"

	"github.com/socialdata/enricher/consumer"
)

// FuzzDecodeEvent: any bytes either decode to an event that survives a
// round trip, or fail with a permanent error (so they are dead-lettered,
// never retried); nothing panics. Seeds are the table cases plus the
// corpus in testdata/fuzz/FuzzDecodeEvent.
func FuzzDecodeEvent(f *testing.F) {
	for _, tt := range eventCases {
		f.Add([]byte(tt.give))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := consumer.DecodeEvent(body)
		if err != nil {
			if _, ok := consumer.IsPermanent(err); !ok {
				t.Fatalf("decode error is not permanent: %v", err)
			}
			return
		}
		again, err := consumer.DecodeEvent(ev.Encode())
		if err != nil {
			t.Fatalf("re-decode of %s: %v", ev.Encode(), err)
		}
		if again.Table != ev.Table || again.SnapshotID != ev.SnapshotID || again.Job != ev.Job || again.Version != ev.Version {
			t.Fatalf("round trip changed the event: %+v -> %+v", ev, again)
		}
		if (ev.PublishedAt == nil) != (again.PublishedAt == nil) || (ev.PublishedAt != nil && !ev.PublishedAt.Equal(*again.PublishedAt)) {
			t.Fatalf("round trip changed published_at: %v -> %v", ev.PublishedAt, again.PublishedAt)
		}
	})
}
