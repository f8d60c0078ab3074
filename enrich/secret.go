package enrich

import (
	"fmt"
	"log/slog"
	"strings"
)

// Secret holds an API key. Every way of printing it (fmt verbs, slog, JSON,
// YAML) writes "[redacted]"; only Reveal gives the key, for the request
// header.
type Secret struct{ v string }

// NewSecret wraps a key.
func NewSecret(key string) Secret { return Secret{v: strings.TrimSpace(key)} }

const redacted = "[redacted]"

// Reveal returns the key itself.
func (s Secret) Reveal() string { return s.v }

// Empty reports whether no key was given.
func (s Secret) Empty() bool { return s.v == "" }

func (s Secret) String() string               { return redacted }
func (s Secret) GoString() string             { return redacted }
func (s Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (s Secret) MarshalYAML() (any, error)    { return redacted, nil }
func (s Secret) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(redacted)) }

// scrub removes the key from text (an error message that echoes it).
func (s Secret) scrub(text string) string {
	if len(s.v) < 4 { // too short to search for without mangling text
		return text
	}
	return strings.ReplaceAll(text, s.v, redacted)
}
