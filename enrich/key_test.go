package enrich_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/fakellm"
	"github.com/socialdata/enricher/internal/testlog"
)

// leakKey holds every character class a key may have, so that each
// encoding of it differs from the key itself.
const leakKey = "sk-proj-Ab3dE/f+Gh1jK2lMn0pQ_rS-tUvWxYz~9"

// echoes are the forms in which the fake server echoes the key.
var echoes = map[string]func(string) string{
	"as sent":         func(k string) string { return k },
	"with bearer":     func(k string) string { return "Bearer " + k },
	"upper case":      strings.ToUpper,
	"base64 header":   func(k string) string { return base64.StdEncoding.EncodeToString([]byte("Authorization: Bearer " + k)) },
	"base64url":       func(k string) string { return base64.URLEncoding.EncodeToString([]byte(k)) },
	"hex":             func(k string) string { return hex.EncodeToString([]byte(k)) },
	"url-encoded":     func(k string) string { return percentEncode(k) },
	"json-escaped":    func(k string) string { return jsonEscape(k) },
	"newline split":   func(k string) string { return k[:11] + "\n" + k[11:] },
	"escaped \\n cut": func(k string) string { return k[:17] + `\n` + k[17:] },
}

func percentEncode(s string) string {
	var b strings.Builder
	for i := range len(s) {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

func jsonEscape(s string) string {
	var b strings.Builder
	for i := range len(s) {
		fmt.Fprintf(&b, `\u%04x`, s[i])
	}
	return b.String()
}

// freeTextSpec has only free-text outputs: whatever string the model
// answers is a valid value and is stored.
func freeTextSpec(t *testing.T, srv *fakellm.Server) *enrich.Spec {
	t.Helper()
	return specAt(t, srv, "free.yaml", `
name: summary
version: "1"
source: {table: social.posts, key: post_id, text: text}
target: {table: social.posts_summary}
model: {provider: openai, name: test-model, timeout: 2s}
prompt: {system: Summarise each post.}
outputs:
  - {name: summary, type: string}
  - {name: tags, type: list<string>}
`)
}

// postBatch is n posts with ids and texts.
func postBatch(t *testing.T, n int) arrow.RecordBatch {
	t.Helper()
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "post_id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "text", Type: arrow.BinaryTypes.String, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	for i, text := range texts(n) {
		b.Field(0).(*array.Int64Builder).Append(int64(i + 1))
		b.Field(1).(*array.StringBuilder).Append(text)
	}
	return b.NewRecordBatch()
}

// everyValue is every value of every column of rec, as text.
func everyValue(rec arrow.RecordBatch) string {
	var b strings.Builder
	for c, col := range rec.Columns() {
		for i := range col.Len() {
			fmt.Fprintf(&b, "%s=%s\n", rec.ColumnName(c), col.ValueStr(i))
		}
	}
	return b.String()
}

// TestTheKeyReachesNoRowErrorOrLog: a server that echoes the key it was
// sent, in any form, in any text it writes (a refusal, answer values, a
// finish reason, error bodies, the status line, a malformed answer, a 401)
// gets it into no stored value (the Arrow columns of the target rows,
// _error among them), no error and no log line.
func TestTheKeyReachesNoRowErrorOrLog(t *testing.T) {
	t.Parallel()
	paths := []struct {
		name  string
		fault fakellm.Fault
		free  bool // the free-text spec, whose values are stored
		stops bool // the run stops: an error, no rows
	}{
		{name: "refusal", fault: fakellm.EchoRefusal},
		{name: "enum values", fault: fakellm.EchoValues},
		{name: "stored values", fault: fakellm.EchoValues, free: true},
		{name: "finish reason", fault: fakellm.EchoFinishReason},
		{name: "500 body", fault: fakellm.EchoServerError},
		{name: "409 body", fault: fakellm.EchoClientError},
		{name: "400 body", fault: fakellm.EchoBadRequest, stops: true},
		{name: "401 body", fault: fakellm.Unauthorized, stops: true},
		{name: "status line", fault: fakellm.EchoStatusLine},
		{name: "malformed answer", fault: fakellm.EchoMalformed},
	}
	for _, p := range paths {
		for ename, echo := range echoes {
			t.Run(p.name+"/"+ename, func(t *testing.T) {
				t.Parallel()
				srv := startServer(t, &fakellm.Server{
					Key:   leakKey,
					Echo:  echo,
					Fault: func(*fakellm.Request) fakellm.Fault { return p.fault },
				})
				spec := chatSpec(t, srv, nil)
				if p.free {
					spec = freeTextSpec(t, srv)
				}
				spec.Model.MaxAttempts, spec.Model.MaxConcurrency, spec.Model.RowsPerRequest = 2, 1, 4
				require.NoError(t, spec.Validate())
				var logs testlog.Buffer
				chat, err := enrich.NewChat(spec, enrich.ChatOptions{
					APIKey: enrich.NewSecret(leakKey), RetryBase: time.Millisecond,
					Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
				})
				require.NoError(t, err)
				t.Cleanup(chat.Close)
				in := postBatch(t, 4)
				defer in.Release()
				enr, err := enrich.NewEnricher(spec, chat, in.Schema(), nil)
				require.NoError(t, err)

				out, _, err := enr.Enrich(context.Background(), in, 7)
				var seen string
				if p.stops {
					require.Error(t, err)
					require.ErrorIs(t, err, enrich.ErrModelUnusable)
					seen = err.Error()
				} else {
					require.NoError(t, err)
					defer out.Release()
					seen = everyValue(out)
					for _, s := range column[string](t, out, enrich.ColStatus) {
						if p.free {
							assert.Equal(t, "ok", s, "free text is stored, scrubbed")
						} else {
							assert.NotEqual(t, "ok", s)
						}
					}
				}
				seen += "\n" + logs.String()
				echoed := echo(leakKey)
				assert.NotContains(t, strings.ToLower(seen), strings.ToLower(leakKey))
				assert.NotContains(t, seen, echoed)
				if ename == "as sent" {
					assert.Contains(t, seen, "[redacted]", "the key was echoed and replaced:\n%s", seen)
				}
			})
		}
	}
}

// TestTheKeyGoesToBaseURLOnly: a server that redirects is not followed
// (Go would send the api-key header to wherever it points): the run stops,
// saying where the server points.
func TestTheKeyGoesToBaseURLOnly(t *testing.T) {
	t.Parallel()
	elsewhere := startServer(t, &fakellm.Server{Key: "another-servers-key-1234"})
	srv := startServer(t, &fakellm.Server{
		Key: leakKey, RedirectTo: elsewhere.URL(),
		Fault: func(*fakellm.Request) fakellm.Fault { return fakellm.Redirect },
	})
	spec := chatSpec(t, srv, func(m *enrich.ModelSettings) {
		m.Provider, m.Deployment, m.APIVersion = enrich.ProviderAzure, "gpt4o", enrich.DefaultAzureVersion
		m.BaseURL = srv.URL()
	})
	chat, err := enrich.NewChat(spec, enrich.ChatOptions{APIKey: enrich.NewSecret(leakKey), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(chat.Close)
	err = chat.Annotate(context.Background(), items(texts(3)), make([]enrich.Answer, 3))
	require.ErrorIs(t, err, enrich.ErrModelUnusable)
	assert.Contains(t, err.Error(), "HTTP 307")
	assert.Contains(t, err.Error(), elsewhere.URL())
	assert.Zero(t, elsewhere.Stats().Requests+elsewhere.Stats().Unauthorized, "nothing reached the other server")
}
