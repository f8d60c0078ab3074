package consumer

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// EventVersion is the version of the snapshot event contract this consumer
// reads and writes.
const EventVersion = 1

// EventSchema is the JSON Schema (draft 2020-12) of SnapshotEvent: the one
// source of truth of the contract. DecodeEvent validates every message
// against it, and producers in other languages can do the same.
//
//go:embed snapshot-event.schema.json
var EventSchema []byte

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

// eventSchema is EventSchema compiled, with formats asserted.
var eventSchema = sync.OnceValue(func() *jsonschema.Schema {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(EventSchema))
	if err != nil {
		panic(fmt.Sprintf("embedded event schema: %v", err))
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("snapshot-event.schema.json", doc); err != nil {
		panic(fmt.Sprintf("embedded event schema: %v", err))
	}
	return c.MustCompile("snapshot-event.schema.json")
})

// DecodeEvent validates a message body against EventSchema and decodes
// it. Anything wrong with it is a *PermanentError with reason
// ReasonBadMessage: the same bytes can never succeed, so they must not be
// retried. Unknown fields are ignored so that producers can add fields
// before consumers read them.
func DecodeEvent(body []byte) (SnapshotEvent, error) {
	bad := func(format string, args ...any) (SnapshotEvent, error) {
		return SnapshotEvent{}, Permanent(ReasonBadMessage, fmt.Errorf(format, args...))
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return bad("message body is not a JSON object")
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(trimmed))
	if err != nil {
		return bad("message body is not valid JSON: %v", err)
	}
	if err := eventSchema().Validate(inst); err != nil {
		return bad("%s", describe(err, inst))
	}
	// The schema holds: every field has its type and range.
	doc := inst.(map[string]any)
	id, ok := int64Of(doc["snapshot_id"].(json.Number))
	if !ok {
		return bad("snapshot_id %s is not a 64-bit integer", doc["snapshot_id"])
	}
	ev := SnapshotEvent{Version: EventVersion, Table: doc["table"].(string), SnapshotID: id}
	if job, ok := doc["job"].(string); ok {
		ev.Job = job
	}
	if at, ok := doc["published_at"].(string); ok {
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			// A leap second passes the schema's date-time and not Go's time.
			return bad("published_at %q is not an RFC 3339 time Go can read: %v", at, err)
		}
		ev.PublishedAt = &t
	}
	return ev, nil
}

// int64Of reads an integer JSON number, also one written with a fraction
// of zero or an exponent (1.0, 1e3: integers to JSON Schema).
func int64Of(n json.Number) (int64, bool) {
	if i, err := n.Int64(); err == nil {
		return i, true
	}
	r, ok := new(big.Rat).SetString(string(n))
	if !ok || !r.IsInt() || !r.Num().IsInt64() {
		return 0, false
	}
	return r.Num().Int64(), true
}

// describe turns a schema violation into one sentence about the field.
func describe(err error, inst any) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	field := strings.Join(ve.InstanceLocation, ".")
	var value any
	if doc, ok := inst.(map[string]any); ok && len(ve.InstanceLocation) == 1 {
		value = doc[field]
	}
	switch k := ve.ErrorKind.(type) {
	case *kind.Required:
		return fmt.Sprintf("field %s is missing", strings.Join(k.Missing, ", "))
	case *kind.Const:
		if field == "version" {
			return fmt.Sprintf("version %s is not supported (this consumer reads version %d)", jsonText(value), EventVersion)
		}
	case *kind.Pattern:
		if field == "table" {
			return fmt.Sprintf("table %q is not NAMESPACE.TABLE", value)
		}
	case *kind.Type:
		if value == nil {
			return fmt.Sprintf("field %s is missing (null)", field)
		}
		if field == "snapshot_id" {
			return fmt.Sprintf("snapshot_id %v is not a 64-bit integer", jsonText(value))
		}
	case *kind.Minimum:
		if field == "snapshot_id" {
			return fmt.Sprintf("snapshot_id %v must be positive", value)
		}
	case *kind.Maximum:
		if field == "snapshot_id" {
			return fmt.Sprintf("snapshot_id %v is not a 64-bit integer", value)
		}
	case *kind.Format:
		if field == "published_at" {
			return fmt.Sprintf("published_at %q is not an RFC 3339 time", value)
		}
	}
	if field == "" {
		return "message body: " + ve.ErrorKind.LocalizedString(english)
	}
	return fmt.Sprintf("field %s: %s", field, ve.ErrorKind.LocalizedString(english))
}

var english = message.NewPrinter(language.English)

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
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
