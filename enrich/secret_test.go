package enrich

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// keyEncodings are the forms in which a server may echo a key: each must
// be scrubbed wherever it appears in a longer text.
func keyEncodings(key string) map[string]string {
	percent := func(s string) string {
		var b strings.Builder
		for i := range len(s) {
			fmt.Fprintf(&b, "%%%02X", s[i])
		}
		return b.String()
	}
	jsonEscaped := func(s string) string {
		var b strings.Builder
		for i := range len(s) {
			fmt.Fprintf(&b, `\u%04x`, s[i])
		}
		return b.String()
	}
	quoted, _ := json.Marshal("key=" + key)
	forms := map[string]string{
		"as sent":                                  key,
		"bearer":                                   "Bearer " + key,
		"upper case":                               strings.ToUpper(key),
		"percent-encoded":                          percent(key),
		"query-escaped":                            url.QueryEscape("Bearer " + key),
		"JSON-escaped":                             jsonEscaped(key),
		"JSON string":                              string(quoted),
		"JSON string in JSON":                      strings.ReplaceAll(string(quoted), `\`, `\\`),
		"split by a newline":                       key[:9] + "\n" + key[9:],
		"split by CRLF and tabs":                   key[:5] + "\r\n\t" + key[5:],
		"split by an escaped \\n":                  key[:12] + `\n` + key[12:],
		"split by an escaped \\f":                  key[:4] + `\f` + key[4:],
		"split by an escaped \\b":                  key[:6] + `\b` + key[6:],
		"split by \\u000c":                         key[:7] + `\u000c` + key[7:],
		"split by a no-break space":                key[:4] + "\u00a0" + key[4:],
		"split by an em space":                     key[:5] + "\u2003" + key[5:],
		"split by a zero-width space and a joiner": key[:3] + "\u200b" + key[3:8] + "\u200d" + key[8:],
		"split by a soft hyphen and a BOM":         key[:6] + "\u00ad" + key[6:10] + "\ufeff" + key[10:],
		"split by escaped invisible characters":    key[:4] + `\u00a0` + key[4:9] + `\u200B` + key[9:],
		"split by &nbsp;":                          key[:4] + "&nbsp;" + key[4:],
		"HTML decimal references":                  htmlRefs(key, "&#%d;"),
		"HTML hex references":                      htmlRefs(key, "&#x%x;"),
		"hex":                                      hex.EncodeToString([]byte(key)),
		"HEX":                                      strings.ToUpper(hex.EncodeToString([]byte(key))),
	}
	// Base64 of the key alone and inside longer texts, at each alignment,
	// in both alphabets, with and without padding, and wrapped.
	for _, prefix := range []string{"", "x", "xy", "Bearer ", "api-key: "} {
		for name, enc := range map[string]*base64.Encoding{"std": base64.StdEncoding, "url": base64.URLEncoding, "raw": base64.RawStdEncoding} {
			forms[fmt.Sprintf("base64 %s of %q+key", name, prefix)] = enc.EncodeToString([]byte(prefix + key + " trailing"))
			forms[fmt.Sprintf("base64 %s of %q+key alone", name, prefix)] = enc.EncodeToString([]byte(prefix + key))
		}
	}
	b := base64.StdEncoding.EncodeToString([]byte("Authorization: Bearer " + key))
	forms["base64 wrapped at 20"] = b[:20] + "\n" + b[20:40] + "\n" + b[40:]
	return forms
}

// htmlRefs writes each byte of s as an HTML character reference.
func htmlRefs(s, format string) string {
	var b strings.Builder
	for i := range len(s) {
		fmt.Fprintf(&b, format, s[i])
	}
	return b.String()
}

// leaks reports whether text still holds key in a form a reader could
// use: the key itself in any case, or the encoded form echoed.
func leaks(text, key, echoed string) bool {
	return strings.Contains(strings.ToLower(text), strings.ToLower(key)) || strings.Contains(text, echoed)
}

func TestScrubberFindsTheKeyInEveryEncoding(t *testing.T) {
	t.Parallel()
	for _, key := range []string{
		"sk-test-0123456789abcdef",
		"sk-proj-Ab3dE/f+Gh1jK2lMn0pQ_rS-tUvWxYz~9", // every character class a key may hold
		"0123456789abcdef0123456789abcdef",          // an Azure key: hex digits
		`oddkey-0123456789abc-%41-\x`,               // a percent escape and a backslash in the key itself
	} {
		s := newScrubber(NewSecret(key))
		for name, form := range keyEncodings(key) {
			text := `{"error": {"message": "Incorrect API key provided: ` + form + `. See the docs."}}`
			got := s.scrub(text)
			assert.False(t, leaks(got, key, form), "key %s, %s: %s", key, name, got)
			assert.Contains(t, got, redacted, "key %s, %s", key, name)
			assert.True(t, strings.HasPrefix(got, `{"error": {"message": "Incorrect API key provided: `), "the text around is kept: %s", got)
			assert.True(t, strings.HasSuffix(got, `. See the docs."}}`), "the text around is kept: %s", got)
		}
	}
}

func TestScrubberLeavesOtherTextAlone(t *testing.T) {
	t.Parallel()
	s := newScrubber(NewSecret("sk-test-0123456789abcdef"))
	for _, text := range []string{
		"",
		`{"id": ["k2", "x9"], "sentiment": ["positive", "neutral"], "score": [50, 0]}`,
		"sk-test-0123456789abcdeX is another key",
		"sk-test-01234 56789abcdef is split by a space, but in its middle: also scrubbed",
	} {
		if strings.Contains(text, "also scrubbed") {
			assert.NotContains(t, s.scrub(text), "56789abcdef")
			continue
		}
		assert.Equal(t, text, s.scrub(text))
	}
	// A short key is searched for only as it is; an empty one not at all.
	assert.Equal(t, "a [redacted] b", newScrubber(NewSecret("abcde")).scrub("a abcde b"))
	assert.Equal(t, "a ABCDE b", newScrubber(NewSecret("abcde")).scrub("a ABCDE b"))
	assert.Equal(t, "text", newScrubber(Secret{}).scrub("text"))
}

func BenchmarkScrubAnswerBody(b *testing.B) {
	s := newScrubber(NewSecret("sk-proj-" + strings.Repeat("Ab3dE-f_Gh1jK2lMn0pQ", 8)))
	var body strings.Builder
	for i := range 500 {
		fmt.Fprintf(&body, `{\"id\": \"k%03d\", \"sentiment\": \"positive\", \"score\": 0.25}, `, i)
	}
	text := body.String()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		_ = s.scrub(text)
	}
}

// BenchmarkScrubHostileBody: a body that is all escape starts ("&#",
// "\u00", "%") is scrubbed at about the speed of an answer body (each
// start looks a few bytes ahead, never to the end).
func BenchmarkScrubHostileBody(b *testing.B) {
	s := newScrubber(NewSecret("sk-proj-" + strings.Repeat("Ab3dE-f_Gh1jK2lMn0pQ", 8)))
	for name, start := range map[string]string{"html": "&#", "json": `\u00`, "percent": "%"} {
		text := strings.Repeat(start, (1<<20)/len(start))
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				_ = s.scrub(text)
			}
		})
	}
}
