package consumer_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
)

var eventCases = []struct {
	name string
	give string
	want consumer.SnapshotEvent
	err  string
}{
	{name: "minimal", give: `{"version":1,"table":"social.posts","snapshot_id":6517612934501126211}`,
		want: consumer.SnapshotEvent{Version: 1, Table: "social.posts", SnapshotID: 6517612934501126211}},
	{name: "with job and unknown field", give: `{"version":1,"table":"a.b.c","snapshot_id":7,"job":"sentiment","producer":"x"}`,
		want: consumer.SnapshotEvent{Version: 1, Table: "a.b.c", SnapshotID: 7, Job: "sentiment"}},
	{name: "not json", give: `hello`, err: "not a JSON object"},
	{name: "truncated json", give: `{"version":1,`, err: "not valid JSON"},
	{name: "empty", give: ``, err: "not a JSON object"},
	{name: "array", give: `[1]`, err: "not a JSON object"},
	{name: "missing version", give: `{"table":"a.b","snapshot_id":1}`, err: "version is missing"},
	{name: "future version", give: `{"version":2,"table":"a.b","snapshot_id":1}`, err: "version 2 is not supported"},
	{name: "missing table", give: `{"version":1,"snapshot_id":1}`, err: "table is missing"},
	{name: "table without namespace", give: `{"version":1,"table":"posts","snapshot_id":1}`, err: "not NAMESPACE.TABLE"},
	{name: "missing snapshot", give: `{"version":1,"table":"a.b"}`, err: "snapshot_id is missing"},
	{name: "null snapshot", give: `{"version":1,"table":"a.b","snapshot_id":null}`, err: "snapshot_id is missing"},
	{name: "string snapshot", give: `{"version":1,"table":"a.b","snapshot_id":"12"}`, err: "not a 64-bit integer"},
	{name: "float snapshot", give: `{"version":1,"table":"a.b","snapshot_id":1.5}`, err: "not a 64-bit integer"},
	{name: "overflowing snapshot", give: `{"version":1,"table":"a.b","snapshot_id":92233720368547758070}`, err: "not a 64-bit integer"},
	{name: "negative snapshot", give: `{"version":1,"table":"a.b","snapshot_id":-3}`, err: "must be positive"},
	{name: "null optional fields", give: `{"version":1,"table":"a.b","snapshot_id":3,"job":null,"published_at":null}`,
		want: consumer.SnapshotEvent{Version: 1, Table: "a.b", SnapshotID: 3}},
	{name: "bad published_at", give: `{"version":1,"table":"a.b","snapshot_id":3,"published_at":"yesterday"}`, err: "not an RFC 3339 time"},
}

func TestDecodeEvent(t *testing.T) {
	t.Parallel()
	tests := eventCases
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := consumer.DecodeEvent([]byte(tt.give))
			if tt.err != "" {
				reason, ok := consumer.IsPermanent(err)
				require.True(t, ok, "want a permanent error, got %v", err)
				assert.Equal(t, consumer.ReasonBadMessage, reason)
				assert.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestEventSchemaAgreesWithTheDecoder keeps the published JSON Schema and
// DecodeEvent in step: a document is valid for one exactly when it is for
// the other.
func TestEventSchemaAgreesWithTheDecoder(t *testing.T) {
	t.Parallel()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(consumer.EventSchema))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	require.NoError(t, c.AddResource("event.json", doc))
	sch, err := c.Compile("event.json")
	require.NoError(t, err)
	for _, tt := range eventCases {
		t.Run(tt.name, func(t *testing.T) {
			_, decodeErr := consumer.DecodeEvent([]byte(tt.give))
			inst, err := jsonschema.UnmarshalJSON(strings.NewReader(tt.give))
			schemaOK := err == nil && sch.Validate(inst) == nil
			assert.Equal(t, decodeErr == nil, schemaOK, "decoder error: %v", decodeErr)
		})
	}
}

func TestEventRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 25, 10, 0, 0, 123000000, time.UTC)
	ev := consumer.SnapshotEvent{Table: "social.posts", SnapshotID: 1<<62 + 1, Job: "sentiment", PublishedAt: &at}
	got, err := consumer.DecodeEvent(ev.Encode())
	require.NoError(t, err)
	ev.Version = 1
	assert.Equal(t, ev.SnapshotID, got.SnapshotID, "64-bit ids survive")
	assert.True(t, at.Equal(*got.PublishedAt))
	got.PublishedAt, ev.PublishedAt = nil, nil
	assert.Equal(t, ev, got)
}

func TestMemQueueMovesToDeadLettersAfterMaxReceives(t *testing.T) {
	t.Parallel()
	q := consumer.NewMemQueue()
	q.MaxReceives = 2
	q.Publish([]byte("x"))
	for range 2 {
		msgs, err := q.Receive(t.Context(), 10)
		require.NoError(t, err)
		require.Len(t, msgs, 1)
		require.NoError(t, q.Release(t.Context(), msgs[0]))
	}
	require.Len(t, q.Dead(), 1)
	assert.Equal(t, consumer.ReasonMaxReceives, q.Dead()[0].Reason)
	q.Close()
	_, err := q.Receive(t.Context(), 10)
	require.ErrorIs(t, err, consumer.ErrDrained)
}
