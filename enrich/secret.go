package enrich

import (
	"fmt"
	"log/slog"
	"strings"
)

// Secret holds an API key. Every way of printing it (fmt verbs, slog, JSON,
// YAML) writes "[redacted]"; only Reveal gives the key, for the request
// header.
// The key sits behind a pointer: printing a struct that holds a Secret in
// an unexported field (where fmt cannot call String) shows an address.
type Secret struct{ p *string }

// NewSecret wraps a key.
func NewSecret(key string) Secret {
	k := strings.TrimSpace(key)
	return Secret{p: &k}
}

const redacted = "[redacted]"

// Reveal returns the key itself.
func (s Secret) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// Empty reports whether no key was given.
func (s Secret) Empty() bool { return s.Reveal() == "" }

func (s Secret) String() string               { return redacted }
func (s Secret) GoString() string             { return redacted }
func (s Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (s Secret) MarshalYAML() (any, error)    { return redacted, nil }
func (s Secret) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(redacted)) }

// scrub removes the key from text (an error message that echoes it).
func (s Secret) scrub(text string) string {
	v := s.Reveal()
	if len(v) < 4 { // too short to search for without mangling text
		return text
	}
	return strings.ReplaceAll(text, v, redacted)
}
