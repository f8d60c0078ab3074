package consumer

import _ "embed"

// EventSchema is the JSON Schema (draft 2020-12) of SnapshotEvent, for
// producers in other languages. DecodeEvent accepts exactly the documents
// it accepts.
//
//go:embed snapshot-event.schema.json
var EventSchema []byte
