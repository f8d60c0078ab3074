package consumer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"time"
)

// EventVersion is the version of the snapshot event contract this consumer
// reads and writes.
const EventVersion = 1

// SnapshotEvent is the message ingestion publishes after it commits a
// snapshot to a source table:
//
//	{"version": 1, "table": "social.posts", "snapshot_id": 6517612934501126211}
//
// It asks the consumer to bring every job that reads Table up to
// SnapshotID (and so also past every earlier snapshot not yet enriched).
type SnapshotEvent struct {
	Version    int    `json:"version"`
	Table      string `json:"table"`
	SnapshotID int64  `json:"snapshot_id"`
	// Job, when set, limits the event to the job of that name.
	Job string `json:"job,omitempty"`
	// PublishedAt is when the producer sent the event, for latency metrics.
	PublishedAt *time.Time `json:"published_at,omitempty"`
}

var eventTablePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$`)

// DecodeEvent parses and checks a message body. Anything wrong with it is
// a *PermanentError with reason ReasonBadMessage: the same bytes can never
// succeed, so they must not be retried. Unknown fields are ignored so that
// producers can add fields before consumers read them.
func DecodeEvent(body []byte) (SnapshotEvent, error) {
	var raw struct {
		Version    *int            `json:"version"`
		Table      *string         `json:"table"`
		SnapshotID json.RawMessage `json:"snapshot_id"`
		Job        string          `json:"job"`
		// PublishedAt is decoded leniently below.
		PublishedAt *string `json:"published_at"`
	}
	bad := func(format string, args ...any) (SnapshotEvent, error) {
		return SnapshotEvent{}, Permanent(ReasonBadMessage, fmt.Errorf(format, args...))
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return bad("message body is not a JSON object")
	}
	if err := json.Unmarshal(trimmed, &raw); err != nil {
		return bad("message body is not valid JSON: %v", err)
	}
	if raw.Version == nil {
		return bad("field version is missing")
	}
	if *raw.Version != EventVersion {
		return bad("version %d is not supported (this consumer reads version %d)", *raw.Version, EventVersion)
	}
	if raw.Table == nil || *raw.Table == "" {
		return bad("field table is missing")
	}
	if !eventTablePattern.MatchString(*raw.Table) {
		return bad("table %q is not NAMESPACE.TABLE", *raw.Table)
	}
	if len(raw.SnapshotID) == 0 || string(raw.SnapshotID) == "null" {
		return bad("field snapshot_id is missing")
	}
	var id int64
	if err := json.Unmarshal(raw.SnapshotID, &id); err != nil {
		return bad("snapshot_id %s is not a 64-bit integer", raw.SnapshotID)
	}
	if id <= 0 {
		return bad("snapshot_id %d must be positive", id)
	}
	ev := SnapshotEvent{Version: EventVersion, Table: *raw.Table, SnapshotID: id, Job: raw.Job}
	if raw.PublishedAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *raw.PublishedAt)
		if err != nil {
			return bad("published_at %q is not an RFC 3339 time", *raw.PublishedAt)
		}
		ev.PublishedAt = &t
	}
	return ev, nil
}

// Encode returns the JSON body of e.
func (e SnapshotEvent) Encode() []byte {
	if e.Version == 0 {
		e.Version = EventVersion
	}
	b, err := json.Marshal(e)
	if err != nil {
		// A struct of strings, ints and a time cannot fail to marshal.
		panic(fmt.Sprintf("encode snapshot event: %v", err))
	}
	return b
}
