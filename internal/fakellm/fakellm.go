// Package fakellm is an OpenAI-compatible chat-completions server on
// loopback for tests and benchmarks. It speaks the OpenAI URL form
// (POST /v1/chat/completions, bearer token) and the Azure form
// (POST /openai/deployments/{name}/chat/completions?api-version=..., api-key
// header), answers the enricher's batch prompts with deterministic values
// derived from each post's text, in the columnar form the enricher asks for
// ({"id": [...], <one array per field>}), and can enforce requests- and
// tokens-per-minute quotas with 429 + Retry-After, add latency, report
// prompt-cache hits the way OpenAI does, and inject every fault a real
// provider produces: 5xx, hangs, malformed bodies, missing, extra and
// duplicated ids, arrays of unequal length, wrong types, refusals, content
// filters and cut-off answers. Like careless or hostile servers, it can echo
// the key it was sent back in every text it writes: refusals, answer values,
// finish reasons, error bodies, the status line, a malformed response; and
// it can redirect to another address.
package fakellm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is what the server does to one request instead of answering well.
type Fault int

// Faults.
const (
	None          Fault = iota
	ServerError         // 500 with a JSON error body
	Throttle            // 429 with Retry-After (Server.RetryAfter)
	Hang                // no answer until the client gives up
	MalformedBody       // 200 whose body is not JSON
	MalformedJSON       // 200 whose message content is not JSON
	DropRow             // the first row is not answered
	ExtraRow            // an answer for an id nobody asked about
	DuplicateRow        // the first row is answered twice
	WrongType           // the first row's first field has a wrong value
	Refusal             // message.refusal set, no content
	ContentFilter       // finish_reason content_filter
	PromptFilter        // 400 with code content_filter (Azure)
	CutOff              // finish_reason length, content cut in half
	Unauthorized        // 401 whatever the key, echoing it
	BadRequest          // 400: the server refuses a parameter
	Renumber            // answers with ids 0, 1, 2, ... instead of those asked

	// The echo faults write Server.Echo of the key the request carried
	// (the bearer token or the api-key header).
	EchoRefusal      // message.refusal quoting the key
	EchoValues       // every string answer value (and list item) is the key
	EchoFinishReason // finish_reason is the key, content is empty
	EchoServerError  // 500 whose error message quotes the key
	EchoClientError  // 409 whose error message quotes the key
	EchoBadRequest   // 400 whose error message quotes the key
	EchoStatusLine   // 500 whose status line's reason phrase is the key
	EchoMalformed    // not HTTP: the key and a blank line, then the connection closes
	Redirect         // 307 to Server.RedirectTo with the request's path

	RaggedColumns // the last field's array is one entry shorter than the ids
	ThrottleBare  // 429 without retry-after-ms or Retry-After
)

// Row is one post of a request's user message.
type Row struct {
	ID   string `json:"id"`
	Text string `json:"text"`
}

// Field is an output field read from a request's JSON schema.
type Field struct {
	Name string
	Type string // string, number, integer, boolean, array
	Enum []string
}

// Request is what the server understood of one request.
type Request struct {
	N          int // 1-based, in arrival order
	At         time.Time
	Azure      bool
	Deployment string
	APIVersion string
	Model      string
	System     string
	User       string
	Rows       []Row
	Fields     []Field
	Strict     bool
	MaxTokens  int
	// MaxTokensField is the request field that carried MaxTokens:
	// max_tokens or max_completion_tokens.
	MaxTokensField string
	// Temperature is the temperature sent (nil: none).
	Temperature *float64
	Cost        int // tokens charged to the TPM quota
	// SentKey is the key the request carried: the bearer token or the
	// api-key header.
	SentKey string
	// Batch is the id of the batch this request is a line of, and
	// CustomID that line's custom_id (both empty for a synchronous
	// request). See batch.go.
	Batch, CustomID string
}

// Server is the fake. Set its fields before Start; read results with
// Requests and Stats.
type Server struct {
	// Key is the API key expected (bearer or api-key); empty accepts any.
	Key string
	// Latency is added to every answer.
	Latency time.Duration
	// RPM and TPM are the enforced quotas (0: none), as token buckets
	// holding one second of quota.
	RPM, TPM int
	// RetryAfter is the hint sent with injected Throttle faults.
	RetryAfter time.Duration
	// Fault picks a fault for a request (nil: none).
	Fault func(r *Request) Fault
	// Answer computes a row's value of a field (default Deterministic).
	Answer func(text string, f Field) any
	// Echo is what the echo faults write of the key sent: the key as it
	// came (nil), or an encoding of it (base64, JSON escapes, ...).
	Echo func(key string) string
	// RedirectTo is the address the Redirect fault points to: the root of
	// another server (its URL()).
	RedirectTo string

	// BatchDelay is how long a batch takes from its creation to its end
	// (0: it ends at the first request about it after its creation).
	BatchDelay time.Duration
	// BatchLineFault picks what happens to one batch line before it is
	// answered (nil: it is answered). See batch.go.
	BatchLineFault func(customID string, body []byte) BatchLineFault
	// BatchEnd picks how a batch ends, asked once at its creation (nil:
	// completed).
	BatchEnd func(b BatchInfo) BatchEnd
	// Clock is the time batches progress by (nil: time.Now).
	Clock func() time.Time

	srv      *http.Server
	ln       net.Listener
	done     chan struct{}
	rpm, tpm *bucket

	mu       sync.Mutex
	requests []Request
	stats    Stats
	batch    batchStore
	prompts  []seenPrompt // for the prompt cache
}

// Stats counts what the server did.
type Stats struct {
	Requests      int // requests received (with a key it accepted)
	Unauthorized  int // requests refused for their key (401)
	Answered      int // 200 answers
	LimitThrottle int // 429s because a quota was exceeded
	Injected      int // faults injected
	RowsAnswered  int
	TokensCharged int
	Batches       int // batches created
	BatchLines    int // batch lines processed: answered, failed or skipped
	FilesUploaded int
}

// Start listens on a loopback port and serves until Close.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("fakellm: listen: %w", err)
	}
	if s.RPM > 0 {
		s.rpm = newBucket(s.RPM)
	}
	if s.TPM > 0 {
		s.tpm = newBucket(s.TPM)
	}
	if s.Answer == nil {
		s.Answer = Deterministic
	}
	s.ln, s.done = ln, make(chan struct{})
	s.srv = &http.Server{Handler: http.HandlerFunc(s.handle), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln) // returns http.ErrServerClosed on Close
	}()
	return nil
}

// StartTB starts s for a test or benchmark and closes it when tb ends.
func (s *Server) StartTB(tb testing.TB) *Server {
	tb.Helper()
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// URL is the server's root: the Azure endpoint. The OpenAI base URL is
// URL()+"/v1".
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the server and waits for its goroutines.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}

// Requests returns a copy of every request received.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// EstimateTokens is how the server counts tokens: one per four bytes,
// rounded up, plus four per message.
func EstimateTokens(s string) int { return (len(s) + 3) / 4 }

// Deterministic answers from a hash of the text and the field name, so a
// test can recompute what any row must hold: an enum value, a number in
// [-1, 1], an integer in [0, 100), a boolean, or a one-element list.
func Deterministic(text string, f Field) any {
	h := fnv.New64a()
	_, _ = h.Write([]byte(f.Name))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(text))
	x := h.Sum64()
	switch f.Type {
	case "number":
		return float64(x%2001)/1000 - 1
	case "integer":
		return int64(x % 100)
	case "boolean":
		return x%2 == 0
	case "array":
		if len(f.Enum) > 0 {
			return []string{f.Enum[x%uint64(len(f.Enum))]}
		}
		return []string{"tag"}
	default:
		if len(f.Enum) > 0 {
			return f.Enum[x%uint64(len(f.Enum))]
		}
		return fmt.Sprintf("v%d", x%1000)
	}
}

type chatRequest struct {
	Model               string   `json:"model"`
	MaxTokens           int      `json:"max_tokens"`
	MaxCompletionTokens int      `json:"max_completion_tokens"`
	Temperature         *float64 `json:"temperature"`
	Messages            []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	ResponseFormat *struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Strict bool            `json:"strict"`
			Schema json.RawMessage `json:"schema"`
		} `json:"json_schema"`
	} `json:"response_format"`
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	if s.batchRoute(w, r) {
		return
	}
	req := Request{At: time.Now()}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
		req.SentKey = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if s.Key != "" && r.Header.Get("Authorization") != "Bearer "+s.Key {
			s.unauthorized(w, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
			return
		}
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/openai/deployments/") && strings.HasSuffix(r.URL.Path, "/chat/completions"):
		req.Azure = true
		req.Deployment = strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/openai/deployments/"), "/chat/completions")
		req.APIVersion = r.URL.Query().Get("api-version")
		if req.APIVersion == "" {
			writeError(w, http.StatusBadRequest, "missing api-version", "invalid_request_error", "")
			return
		}
		req.SentKey = r.Header.Get("api-key")
		if s.Key != "" && r.Header.Get("api-key") != s.Key {
			s.unauthorized(w, r.Header.Get("api-key"))
			return
		}
	default:
		writeError(w, http.StatusNotFound, "no route "+r.URL.Path, "invalid_request_error", "")
		return
	}
	var body chatRequest
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "request body is not JSON: "+err.Error(), "invalid_request_error", "")
		return
	}
	if err := s.read(&req, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), "invalid_request_error", "")
		return
	}

	fault := s.take(&req)
	if fault == None {
		if wait, ok := s.admit(req.Cost); !ok {
			s.count(func(st *Stats) { st.LimitThrottle++ })
			throttle(w, wait)
			return
		}
	}

	if s.Latency > 0 || fault == Hang {
		d := s.Latency
		if fault == Hang {
			d = time.Hour
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	switch fault {
	case ServerError:
		writeError(w, http.StatusInternalServerError, "The server had an error while processing your request.", "server_error", "")
		return
	case Throttle:
		throttle(w, s.RetryAfter)
		return
	case ThrottleBare:
		writeError(w, http.StatusTooManyRequests, "Rate limit reached.", "rate_limit_exceeded", "429")
		return
	case PromptFilter:
		writeError(w, http.StatusBadRequest, "The response was filtered due to the prompt triggering content management policy.", "invalid_request_error", "content_filter")
		return
	case Unauthorized:
		s.unauthorized(w, req.SentKey)
		return
	case BadRequest:
		writeError(w, http.StatusBadRequest, "Unrecognized request argument supplied: max_completion_tokens", "invalid_request_error", "")
		return
	case MalformedBody:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id": "chatcmpl-1", "choices": [`))
		return
	case EchoServerError:
		writeError(w, http.StatusInternalServerError, "The server had an error processing a request with key "+s.echo(&req)+".", "server_error", "")
		return
	case EchoClientError:
		writeError(w, http.StatusConflict, "Another request with key "+s.echo(&req)+" is in progress.", "invalid_request_error", "")
		return
	case EchoBadRequest:
		writeError(w, http.StatusBadRequest, "Unrecognized request argument supplied by key "+s.echo(&req)+".", "invalid_request_error", "")
		return
	case EchoStatusLine:
		s.raw(w, "HTTP/1.1 500 "+s.echo(&req)+"\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")
		return
	case EchoMalformed:
		s.raw(w, s.echo(&req)+"\r\n\r\n")
		return
	case Redirect:
		http.Redirect(w, r, s.RedirectTo+r.URL.RequestURI(), http.StatusTemporaryRedirect)
		return
	}

	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.completion(&req, fault))
}

// completion answers req as a chat completion, counting it answered: the
// 200 body of the chat endpoint and of a batch line.
func (s *Server) completion(req *Request, fault Fault) map[string]any {
	content, finish, refusal := s.answer(req, fault)
	s.count(func(st *Stats) {
		st.Answered++
		st.RowsAnswered += len(req.Rows)
	})
	prompt, cached := s.promptTokens(req)
	return map[string]any{
		"id":      fmt.Sprintf("chatcmpl-%d", req.N),
		"object":  "chat.completion",
		"created": time.Now().Unix(),
		"model":   req.Model,
		"choices": []any{map[string]any{
			"index":         0,
			"finish_reason": finish,
			"message":       map[string]any{"role": "assistant", "content": content, "refusal": refusal},
		}},
		"usage": map[string]any{
			"prompt_tokens":         prompt,
			"completion_tokens":     EstimateTokens(content),
			"total_tokens":          prompt + EstimateTokens(content),
			"prompt_tokens_details": map[string]any{"cached_tokens": cached},
		},
	}
}

// Prompt caching as OpenAI does it: a prompt of at least 1024 tokens reuses
// the longest prefix it shares with a prompt seen in the last few minutes,
// counted in increments of 128 tokens from 1024.
const (
	cacheMinTokens = 1024
	cacheIncrement = 128
	cacheTTL       = 5 * time.Minute
	cacheKeep      = 64 // the recent prompts remembered
)

type seenPrompt struct {
	text string
	at   time.Time
}

// promptTokens is a request's prompt tokens (estimated as EstimateTokens
// does, plus four per message and four to prime the answer) and those of
// them read from the prompt cache, then remembers the prompt for later
// requests.
func (s *Server) promptTokens(req *Request) (prompt, cached int) {
	prompt = EstimateTokens(req.System) + EstimateTokens(req.User) + 12
	text := req.System + "\n" + req.User
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	longest := 0
	kept := s.prompts[:0]
	for _, p := range s.prompts {
		if now.Sub(p.at) > cacheTTL {
			continue
		}
		kept = append(kept, p)
		n := 0
		for n < len(text) && n < len(p.text) && text[n] == p.text[n] {
			n++
		}
		longest = max(longest, n)
	}
	s.prompts = append(kept, seenPrompt{text: text, at: now})
	if len(s.prompts) > cacheKeep {
		s.prompts = s.prompts[len(s.prompts)-cacheKeep:]
	}
	if shared := longest / 4; prompt >= cacheMinTokens && shared >= cacheMinTokens {
		cached = min(shared/cacheIncrement*cacheIncrement, prompt)
	}
	return prompt, cached
}

// read fills req from the body: rows from the user message, fields from
// the JSON schema.
func (s *Server) read(req *Request, body *chatRequest) error {
	req.Model = body.Model
	req.MaxTokens = max(body.MaxTokens, body.MaxCompletionTokens)
	req.MaxTokensField = "max_tokens"
	if body.MaxCompletionTokens > 0 {
		req.MaxTokensField = "max_completion_tokens"
	}
	req.Temperature = body.Temperature
	for _, m := range body.Messages {
		switch m.Role {
		case "system":
			req.System = m.Content
		case "user":
			req.User = m.Content
		}
	}
	if err := json.Unmarshal([]byte(req.User), &req.Rows); err != nil {
		return fmt.Errorf("the user message is not a JSON array of {id, text}: %v", err)
	}
	if body.ResponseFormat == nil || body.ResponseFormat.Type != "json_schema" || body.ResponseFormat.JSONSchema == nil {
		return fmt.Errorf("response_format json_schema is required")
	}
	req.Strict = body.ResponseFormat.JSONSchema.Strict
	// The columnar answer: {"id": [...], <field>: [<field's items>], ...}.
	type prop struct {
		Type  string   `json:"type"`
		Enum  []string `json:"enum"`
		Items *struct {
			Enum []string `json:"enum"`
		} `json:"items"`
	}
	var schema struct {
		Properties map[string]struct {
			Type  string `json:"type"`
			Items *prop  `json:"items"`
		} `json:"properties"`
		Required []string `json:"required"`
	}
	if err := json.Unmarshal(body.ResponseFormat.JSONSchema.Schema, &schema); err != nil {
		return fmt.Errorf("json_schema.schema: %v", err)
	}
	if id, ok := schema.Properties["id"]; !ok || id.Type != "array" || !slices.Contains(schema.Required, "id") {
		return fmt.Errorf("json_schema.schema: no required array property \"id\"")
	}
	for _, name := range schema.Required {
		if name == "id" {
			continue
		}
		p, ok := schema.Properties[name]
		if !ok {
			return fmt.Errorf("required %q has no property", name)
		}
		if p.Type != "array" || p.Items == nil {
			return fmt.Errorf("property %q is not an array with items", name)
		}
		f := Field{Name: name, Type: p.Items.Type, Enum: p.Items.Enum}
		if p.Items.Items != nil {
			f.Enum = p.Items.Items.Enum
		}
		req.Fields = append(req.Fields, f)
	}
	req.Cost = EstimateTokens(req.System) + EstimateTokens(req.User) + 12 + req.MaxTokens
	return nil
}

// admit charges a request to the quotas; when one is exceeded it says how
// long until it would not be.
func (s *Server) admit(cost int) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var wait time.Duration
	for _, b := range []*bucket{s.rpm, s.tpm} {
		if b != nil {
			wait = max(wait, b.wait(now, cost, b == s.rpm))
		}
	}
	if wait > 0 {
		return wait, false
	}
	for _, b := range []*bucket{s.rpm, s.tpm} {
		if b != nil {
			n := float64(cost)
			if b == s.rpm {
				n = 1
			}
			b.level -= n
		}
	}
	s.stats.TokensCharged += cost
	return 0, true
}

// bucket is a per-minute quota enforced as a token bucket refilled at the
// quota's rate and holding one second of it. A request is admitted when the
// bucket holds its cost, or is full; a cost above a full bucket leaves it in
// debt, which later requests wait out.
type bucket struct {
	perSec, capacity, level float64
	last                    time.Time
}

func newBucket(perMinute int) *bucket {
	ps := float64(perMinute) / 60
	c := max(1, math.Ceil(ps))
	return &bucket{perSec: ps, capacity: c, level: c, last: time.Now()}
}

func (b *bucket) wait(now time.Time, cost int, perRequest bool) time.Duration {
	b.level = min(b.capacity, b.level+now.Sub(b.last).Seconds()*b.perSec)
	b.last = now
	need := float64(cost)
	if perRequest {
		need = 1
	}
	need = min(need, b.capacity)
	if b.level >= need {
		return 0
	}
	return time.Duration((need - b.level) / b.perSec * float64(time.Second))
}

func (s *Server) answer(req *Request, fault Fault) (content string, finish string, refusal string) {
	switch fault {
	case Refusal:
		return "", "stop", "I can't help with that."
	case EchoRefusal:
		return "", "stop", "I can't help the holder of key " + s.echo(req) + " with that."
	case EchoFinishReason:
		return "", s.echo(req), ""
	case ContentFilter:
		return "", "content_filter", ""
	case MalformedJSON:
		return `{"id": ["` + firstID(req) + `", oops`, "stop", ""
	}
	// The columnar answer: the ids, then one array per field, the i-th
	// entry of each about the i-th id.
	ids := make([]any, 0, len(req.Rows)+1)
	cols := make([][]any, len(req.Fields))
	for _, row := range req.Rows {
		ids = append(ids, row.ID)
		for k, f := range req.Fields {
			v := s.Answer(row.Text, f)
			if fault == EchoValues {
				switch f.Type {
				case "string":
					v = s.echo(req)
				case "array":
					v = []string{s.echo(req)}
				}
			}
			cols[k] = append(cols[k], v)
		}
	}
	if len(ids) > 0 {
		switch fault {
		case DropRow:
			ids = ids[1:]
			for k := range cols {
				cols[k] = cols[k][1:]
			}
		case DuplicateRow:
			ids = append(ids, ids[0])
			for k := range cols {
				cols[k] = append(cols[k], cols[k][0])
			}
		case ExtraRow:
			ids = append(ids, "no-such-id")
			for k := range cols {
				cols[k] = append(cols[k], cols[k][0])
			}
		case Renumber:
			for i := range ids {
				ids[i] = strconv.Itoa(i)
			}
		case WrongType:
			if len(req.Fields) > 0 {
				cols[0][0] = wrongValue(req.Fields[0])
			}
		case RaggedColumns:
			if len(cols) > 0 {
				last := len(cols) - 1
				cols[last] = cols[last][:len(cols[last])-1]
			}
		}
	}
	var b bytes.Buffer
	b.WriteString(`{"id":`)
	appendJSON(&b, ids)
	for k, f := range req.Fields {
		b.WriteByte(',')
		appendJSON(&b, f.Name)
		b.WriteByte(':')
		if cols[k] == nil {
			cols[k] = []any{}
		}
		appendJSON(&b, cols[k])
	}
	b.WriteByte('}')
	content = b.String()
	if fault == CutOff {
		return content[:len(content)/2], "length", ""
	}
	return content, "stop", ""
}

// appendJSON writes v as JSON: the values of an answer are strings,
// numbers, booleans and lists of strings, which always marshal.
func appendJSON(b *bytes.Buffer, v any) {
	raw, _ := json.Marshal(v)
	b.Write(raw)
}

func wrongValue(f Field) any {
	switch f.Type {
	case "string":
		if len(f.Enum) > 0 {
			return "not-" + f.Enum[0]
		}
		return 42
	case "number", "integer":
		return 1e9
	default:
		return "wrong"
	}
}

func firstID(req *Request) string {
	if len(req.Rows) == 0 {
		return ""
	}
	return req.Rows[0].ID
}

// echo is what the echo faults write of the request's key.
func (s *Server) echo(req *Request) string {
	if s.Echo != nil {
		return s.Echo(req.SentKey)
	}
	return req.SentKey
}

// raw writes text on the connection as it is, bypassing HTTP, and closes
// it.
func (s *Server) raw(w http.ResponseWriter, text string) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "cannot hijack: "+err.Error(), "server_error", "")
		return
	}
	defer conn.Close()
	_, _ = buf.WriteString(text)
	_ = buf.Flush()
}

// take records req as the server's next request (numbering it) and
// returns the fault the test injects into it, None for a plain answer;
// an injected fault is counted.
func (s *Server) take(req *Request) Fault {
	s.mu.Lock()
	s.stats.Requests++
	req.N = s.stats.Requests
	s.requests = append(s.requests, *req)
	s.mu.Unlock()
	fault := None
	if s.Fault != nil {
		fault = s.Fault(req)
	}
	if fault != None {
		s.count(func(st *Stats) { st.Injected++ })
	}
	return fault
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// unauthorized answers 401 and, like careless servers do, echoes the key it
// was given (through Echo when set): the client must never let it reach a
// log.
func (s *Server) unauthorized(w http.ResponseWriter, got string) {
	s.count(func(st *Stats) { st.Unauthorized++ })
	if s.Echo != nil {
		got = s.Echo(got)
	}
	writeError(w, http.StatusUnauthorized, "Incorrect API key provided: "+got+".", "invalid_request_error", "invalid_api_key")
}

func throttle(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("retry-after-ms", strconv.FormatInt(max(1, wait.Milliseconds()), 10))
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
	writeError(w, http.StatusTooManyRequests, "Rate limit reached. Please retry after the time in Retry-After.", "rate_limit_exceeded", "429")
}

func writeError(w http.ResponseWriter, status int, msg, typ, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	e := map[string]any{"message": msg, "type": typ}
	if code != "" {
		e["code"] = code
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"error": e})
}
