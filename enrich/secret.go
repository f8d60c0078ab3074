package enrich

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
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

// scrubber removes an API key from the texts a model server sends back:
// every answer body, status line, header and transport error passes
// through its scrub before any of it is parsed, so that no refusal, answer
// value, finish reason or error text can carry the key into a row, a log
// or an error. It finds the key as it was sent and as a careless or
// hostile server may echo it: in any letter case, with "Bearer " before
// it, percent-encoded (%73%6B...), JSON-escaped (\u0073..., \/),
// base64-encoded (either alphabet, alone or inside a longer encoded text,
// wrapped or not) or hex-encoded, and split by white space or escaped
// newlines.
type scrubber struct {
	key    string
	folded []string // searched in the lower-cased canonical text: the key, its hex form
	exact  []string // searched in the canonical text as it is: base64 forms
}

// minScrubKey is the shortest key searched for in every form; a shorter
// one (no provider issues such keys) only as it is, and one shorter than
// four not at all: it would match ordinary words.
const minScrubKey = 8

func newScrubber(key Secret) *scrubber {
	k := key.Reveal()
	s := &scrubber{key: k}
	if len(k) < minScrubKey {
		return s
	}
	s.folded = []string{strings.ToLower(k), hex.EncodeToString([]byte(k))}
	// The text is searched with its escapes decoded once: a key that
	// holds one itself ("%41", a backslash) is found as it was sent by its
	// own decoded form, and encoded by the form above.
	if ck, _, _ := canonical(k); string(ck) != k {
		s.folded = append(s.folded, strings.ToLower(string(ck)))
	}
	// Base64 of a text holding the key depends on where the key starts
	// modulo 3: for each start, the part of the encoding that only the
	// key's own bytes decide.
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for shift := range 3 {
			b := strings.TrimRight(enc.EncodeToString(append(make([]byte, shift), k...)), "=")
			head := (shift*8 + 5) / 6 // characters holding bits of what precedes
			tail := 0
			if (shift+len(k))%3 != 0 {
				tail = 1 // the last character holds bits of what follows
			}
			if core := b[head : len(b)-tail]; len(core) >= minScrubKey {
				s.exact = append(s.exact, core)
			}
		}
	}
	return s
}

// scrub is the one function every text from a model server goes through
// before it is kept: it replaces each form of the key in text, with what
// separates its characters, by "[redacted]".
func (s *scrubber) scrub(text string) string {
	switch {
	case s == nil || len(s.key) < 4:
		return text
	case len(s.key) < minScrubKey:
		return strings.ReplaceAll(text, s.key, redacted)
	}
	canon, from, to := canonical(text)
	var spans [][2]int
	find := func(hay []byte, needle string) {
		for off := 0; off < len(hay); {
			i := bytes.Index(hay[off:], []byte(needle))
			if i < 0 {
				return
			}
			i += off
			spans = append(spans, [2]int{from[i], to[i+len(needle)-1]})
			off = i + 1
		}
	}
	for _, n := range s.exact {
		find(canon, n)
	}
	for i, c := range canon {
		if c >= 'A' && c <= 'Z' {
			canon[i] = c + 'a' - 'A'
		}
	}
	for _, n := range s.folded {
		find(canon, n)
	}
	if len(spans) == 0 {
		return text
	}
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	var out strings.Builder
	last := 0
	for _, sp := range spans {
		if sp[0] < last { // overlaps the previous span
			if sp[1] > last {
				last = sp[1]
			}
			continue
		}
		out.WriteString(text[last:sp[0]])
		out.WriteString(redacted)
		last = sp[1]
	}
	out.WriteString(text[last:])
	return out.String()
}

// canonical is text with its escapes decoded (%XX; \uXXXX; \/, with any
// number of backslashes, as JSON inside JSON has; a run of backslashes
// before anything else is one backslash; HTML's &#NNN; and &#xHH;) and
// what separates characters without being one removed: white space, the
// control characters (also escaped: \n, \f, \b, %0A, \u0020, ...), the
// Unicode spaces (no-break, em, ...) and the invisible format characters
// (zero-width space and joiners, soft hyphen, BOM), as they are or
// escaped, and &nbsp;. A character beyond ASCII that is none of those is
// one byte that matches no key's. This is what the key is searched in;
// canon[i] came from text[from[i]:to[i]].
func canonical(text string) (canon []byte, from, to []int) {
	canon = make([]byte, 0, len(text))
	from = make([]int, 0, len(text))
	to = make([]int, 0, len(text))
	for i := 0; i < len(text); {
		c, n := text[i], 1
		r := rune(-1) // a character beyond ASCII, when not -1
		switch {
		case c == '%' && i+2 < len(text) && isHex(text[i+1]) && isHex(text[i+2]):
			c, n = unhex(text[i+1])<<4|unhex(text[i+2]), 3
		case c == '\\':
			j := i
			for j < len(text) && text[j] == '\\' {
				j++
			}
			n = j - i // a run of backslashes is one, however often escaped
			switch {
			case j == len(text):
			case strings.IndexByte("nrtfbv0", text[j]) >= 0:
				c, n = ' ', j+1-i
			case text[j] == '/':
				c, n = '/', j+1-i
			case text[j] == 'u' && j+4 < len(text) && isHex(text[j+1]) && isHex(text[j+2]) && isHex(text[j+3]) && isHex(text[j+4]):
				v := rune(unhex(text[j+1]))<<12 | rune(unhex(text[j+2]))<<8 | rune(unhex(text[j+3]))<<4 | rune(unhex(text[j+4]))
				n = j + 5 - i
				if v < utf8.RuneSelf {
					c = byte(v)
				} else {
					r = v
				}
			}
		case c == '&':
			if v, m, ok := htmlEntity(text[i:]); ok {
				n = m
				if v < utf8.RuneSelf {
					c = byte(v)
				} else {
					r = v
				}
			}
		case c >= utf8.RuneSelf:
			r, n = utf8.DecodeRuneInString(text[i:])
		}
		if r >= 0 {
			if unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) {
				i += n
				continue
			}
			c = 0x80 // one byte for the character: no key has it
		}
		if c > ' ' && c != 0x7f {
			canon = append(canon, c)
			from = append(from, i)
			to = append(to, i+n)
		}
		i += n
	}
	return canon, from, to
}

// htmlEntity decodes the character reference at the start of s: &#NNN;,
// &#xHH; or &nbsp;, with its length.
func htmlEntity(s string) (r rune, n int, ok bool) {
	if strings.HasPrefix(s, "&nbsp;") {
		return '\u00a0', len("&nbsp;"), true
	}
	if len(s) < 4 || s[1] != '#' {
		return 0, 0, false
	}
	digits, base := s[2:], 10
	if digits[0] == 'x' || digits[0] == 'X' {
		digits, base = digits[1:], 16
	}
	end := strings.IndexByte(digits[:min(len(digits), 8)], ';') // never further: a text of "&#" would be quadratic
	if end < 1 {
		return 0, 0, false
	}
	v, err := strconv.ParseUint(digits[:end], base, 32)
	if err != nil || v > unicode.MaxRune {
		return 0, 0, false
	}
	return rune(v), len(s) - len(digits) + end + 1, true
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
