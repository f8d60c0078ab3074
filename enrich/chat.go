package enrich

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sashabaranov/go-openai"
	"github.com/sethvargo/go-retry"
	"golang.org/x/sync/errgroup"
)

// ChatOptions are the runtime parts of a chat model that do not belong in a
// job spec.
type ChatOptions struct {
	// APIKey is sent as the api-key header (azure) or bearer token (openai).
	APIKey Secret
	// HTTPClient defaults to a client whose pool keeps one idle connection
	// per allowed concurrent request. Per-request timeouts come from the
	// spec, not from the client.
	HTTPClient *http.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// CacheSize bounds the distinct texts whose answers are remembered to
	// answer identical texts later in the run (default 100,000; about 200
	// bytes each). Negative disables the cache.
	CacheSize int
	// BatchCreateTimeout bounds one creation of a Batch API batch (default
	// DefaultBatchCreateTimeout): a creation is never retried blindly.
	BatchCreateTimeout time.Duration
	// RetryBase is the first backoff step (default 500ms); each retry
	// doubles it, with 20% jitter, up to 30s, and never shorter than the
	// server's Retry-After.
	RetryBase time.Duration
}

// Defaults of every chat provider.
const (
	DefaultMaxConcurrency = 16
	DefaultTimeout        = "60s"
	DefaultMaxAttempts    = 6
)

// chatDefaults fills the settings every chat provider shares.
func (m *ModelSettings) chatDefaults() {
	m.MaxConcurrency = cmp.Or(m.MaxConcurrency, DefaultMaxConcurrency)
	m.Timeout = cmp.Or(m.Timeout, DefaultTimeout)
	m.MaxAttempts = cmp.Or(m.MaxAttempts, DefaultMaxAttempts)
}

// validateChat checks the settings every chat provider shares.
func (s *Spec) validateChat(bad func(field, format string, args ...any)) {
	m := s.Model
	if strings.TrimSpace(s.Prompt.System) == "" {
		bad("prompt.system", "is required for provider %s", m.Provider)
	}
	if m.BaseURL != "" {
		u, err := url.Parse(m.BaseURL)
		switch {
		case err != nil && strings.Contains(m.BaseURL, "@"):
			bad("model.base_url", "is not an http(s) URL (not quoted: it may hold credentials)")
		case err != nil:
			bad("model.base_url", "%q is not an http(s) URL", m.BaseURL)
		case u.User != nil:
			// Never quoted: what is before the @ may be a key, and
			// errors end in logs. The HTTP client would not hide a user
			// name in its errors either.
			u.User = nil
			bad("model.base_url", "%q holds credentials (user:password@): give the key through the provider's variable or --api-key-secret", u.String())
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
			bad("model.base_url", "%q is not an http(s) URL", m.BaseURL)
		case u.RawQuery != "" || u.Fragment != "":
			u.RawQuery, u.Fragment = "", ""
			bad("model.base_url", "%q has a query or fragment (not quoted: it may hold a key, which would reach logs): give the endpoint only", u.String())
		}
	}
	if m.RPM < 0 {
		bad("model.rpm", "must not be negative, got %d (0 means no limit)", m.RPM)
	}
	if m.TPM < 0 {
		bad("model.tpm", "must not be negative, got %d (0 means no limit)", m.TPM)
	}
	if m.MaxConcurrency < 1 || m.MaxConcurrency > 1024 {
		bad("model.max_concurrency", "must be from 1 to 1024, got %d", m.MaxConcurrency)
	}
	if d, err := time.ParseDuration(m.Timeout); err != nil || d <= 0 {
		bad("model.timeout", "%q is not a positive duration such as 60s", m.Timeout)
	}
	if m.MaxAttempts < 1 || m.MaxAttempts > 100 {
		bad("model.max_attempts", "must be from 1 to 100, got %d", m.MaxAttempts)
	}
	if m.MaxTokensPerRow < 0 || m.MaxTokensPerRow > maxTokensPerRow {
		bad("model.max_tokens_per_row", "must be from 0 to %d, got %d (0 derives it from the outputs)", maxTokensPerRow, m.MaxTokensPerRow)
	} else if n := int64(m.MaxTokensPerRow) * int64(max(m.RowsPerRequest, 1)); n > maxAnswerTokens {
		bad("model.max_tokens_per_row", "%d tokens a row for %d rows a request is an answer of %d tokens, more than any model writes (%d): lower it or model.rows_per_request",
			m.MaxTokensPerRow, m.RowsPerRequest, n, maxAnswerTokens)
	}
	if m.MaxTokensTotal < 0 {
		bad("model.max_tokens_total", "must not be negative, got %d (0 means no budget)", m.MaxTokensTotal)
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"input_per_million", m.Prices.InputPerMillion}, {"cached_input_per_million", m.Prices.CachedInputPerMillion}, {"output_per_million", m.Prices.OutputPerMillion}} {
		if p.v < 0 || p.v > maxPricePerMillion {
			bad("model.prices."+p.name, "must be from 0 to %g (USD per million tokens), got %g", float64(maxPricePerMillion), p.v)
		}
	}
	if m.Temperature < 0 || m.Temperature > 2 {
		bad("model.temperature", "must be from 0 to 2, got %g", m.Temperature)
	}
}

// Bounds of the model settings that reach arithmetic: far above any real
// model (the largest answers are about 128k tokens, list prices are at
// most hundreds of dollars per million tokens), low enough that token and
// cost sums cannot overflow or become infinite.
const (
	maxTokensPerRow    = 32_768
	maxAnswerTokens    = 128_000
	maxPricePerMillion = 10_000
)

// Chat is the model backend for OpenAI-compatible chat-completion servers
// and Azure OpenAI deployments (via github.com/sashabaranov/go-openai).
//
// Annotate sends rows_per_request rows per request as a JSON array in the
// user message and asks for strict JSON-schema structured output (see
// prompt.go). Identical texts are sent once. Requests go through a
// requests- and tokens-per-minute limiter and an adaptive concurrency gate;
// throttling, 5xx and timeouts are retried with exponential backoff and
// jitter that honours Retry-After. Rows missing or invalid in an answer, and
// batches the model refused, filtered or cut off, are asked again in halves,
// down to one row; what still fails is written as failed or invalid_output
// with the reason. A wrong key, deployment or URL (401, 403, 404) and an
// exhausted token budget stop the run instead: no row is written for them.
// Within a Chunk that got no answer at all because every request sent for
// it was throttled past its attempts, Annotate returns a *ThrottledError
// instead of failed rows (see Chunk).
type Chat struct {
	spec     *Spec
	name     string
	key      Secret
	scrub    *scrubber
	client   *openai.Client
	http     *http.Client
	ownHTTP  bool
	log      *slog.Logger
	system   string
	format   *openai.ChatCompletionResponseFormat
	perRow   int
	timeout  time.Duration
	attempts int
	base     time.Duration
	lim      *limiter
	gate     *gate
	budget   budget
	use      usage
	cache    *answerCache

	createTimeout time.Duration // of a Batch API create
	countedMu     sync.Mutex
	counted       map[string]struct{} // batches whose usage is counted
}

var (
	_ Model         = (*Chat)(nil)
	_ UsageReporter = (*Chat)(nil)
)

// newChatModel is the constructor of the chat providers.
func newChatModel(spec *Spec, opts ModelOptions) (Model, error) {
	return asModel(NewChat(spec, ChatOptions{APIKey: opts.APIKey, Logger: opts.Logger}))
}

// NewChat builds the chat model for a validated spec whose provider is a
// chat provider (openai, azure).
func NewChat(spec *Spec, opts ChatOptions) (*Chat, error) {
	m := spec.Model
	if !m.Chat() {
		return nil, fmt.Errorf("chat model: spec %s asks for provider %s", spec.Name, m.Provider)
	}
	if p, _ := LookupProvider(m.Provider); p.Key.Required && opts.APIKey.Empty() {
		return nil, fmt.Errorf("chat model: provider %s needs an API key (%s or --api-key-secret)", p.Name, p.Key.Env)
	}
	c := &Chat{
		spec:     spec,
		name:     m.ID(),
		key:      opts.APIKey,
		scrub:    newScrubber(opts.APIKey),
		http:     opts.HTTPClient,
		log:      opts.Logger,
		system:   systemMessage(spec),
		perRow:   m.MaxTokensPerRow,
		timeout:  m.RequestTimeout(),
		attempts: m.MaxAttempts,
		base:     opts.RetryBase,
		gate:     newGate(m.MaxConcurrency),
		budget:   budget{max: m.MaxTokensTotal},
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.base <= 0 {
		c.base = 500 * time.Millisecond
	}
	if c.createTimeout = opts.BatchCreateTimeout; c.createTimeout <= 0 {
		c.createTimeout = DefaultBatchCreateTimeout
	}
	if c.perRow == 0 {
		c.perRow = rowTokens(spec)
	}
	if c.http == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = m.MaxConcurrency
		c.http, c.ownHTTP = &http.Client{Transport: t}, true
	}
	size := opts.CacheSize
	if size == 0 {
		size = 100_000
	}
	if size > 0 {
		c.cache = newAnswerCache(size)
	}
	var cfg openai.ClientConfig
	if m.Provider == ProviderAzure {
		cfg = openai.DefaultAzureConfig(c.key.Reveal(), m.BaseURL)
		cfg.APIVersion = m.APIVersion
		deployment := m.Deployment
		cfg.AzureModelMapperFunc = func(string) string { return deployment }
	} else {
		cfg = openai.DefaultConfig(c.key.Reveal())
		cfg.BaseURL = m.BaseURL
	}
	// The key goes to base_url and nowhere else: a redirect is not
	// followed (Go forwards the api-key header to any host), it stops the
	// run naming where the server points.
	noRedirect := *c.http
	noRedirect.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		status := 0
		if req.Response != nil {
			status = req.Response.StatusCode
		}
		return &redirectError{status: status, to: req.URL.Redacted()}
	}
	cfg.HTTPClient = capturingDoer{c: &noRedirect, scrub: c.scrub}
	c.client = openai.NewClientWithConfig(cfg)
	c.format = &openai.ChatCompletionResponseFormat{
		Type: openai.ChatCompletionResponseFormatTypeJSONSchema,
		JSONSchema: &openai.ChatCompletionResponseFormatJSONSchema{
			Name:   spec.Name + "_results",
			Schema: responseSchema(spec),
			Strict: true,
		},
	}
	c.lim = newLimiter(m.RPM, m.TPM)
	return c, nil
}

// Name implements Model.
func (c *Chat) Name() string { return c.name }

// Usage implements UsageReporter.
func (c *Chat) Usage() Usage { return c.use.snapshot(c.spec.Model.Prices) }

// Close releases idle connections of the model's own HTTP client.
func (c *Chat) Close() {
	if c.ownHTTP {
		c.http.CloseIdleConnections()
	}
}

// Annotate implements Model.
func (c *Chat) Annotate(ctx context.Context, items []Item, out []Answer) error {
	// Identical texts are asked once: uniq holds each distinct text and the
	// items that share it.
	type text struct {
		text    string
		key     [32]byte
		members []int
	}
	var uniq []text
	byText := make(map[string]int, len(items))
	for i, it := range items {
		if u, ok := byText[it.Text]; ok {
			uniq[u].members = append(uniq[u].members, i)
			continue
		}
		byText[it.Text] = len(uniq)
		uniq = append(uniq, text{text: it.Text, members: []int{i}})
	}
	answers := make([]Answer, len(uniq))
	todo := make([]int, 0, len(uniq))
	var dedup int64
	for u := range uniq {
		t := &uniq[u]
		dedup += int64(len(t.members) - 1)
		if c.cache != nil {
			t.key = sha256.Sum256([]byte(t.text))
			if a, ok := c.cache.get(t.key); ok {
				answers[u] = a
				dedup++
				continue
			}
		}
		todo = append(todo, u)
	}
	c.use.dedupHits.Add(dedup)

	var batches [][]int
	for rpr := c.spec.Model.RowsPerRequest; len(todo) > 0; {
		n := min(rpr, len(todo))
		batches = append(batches, todo[:n:n])
		todo = todo[n:]
	}
	textOf := func(u int) string { return uniq[u].text }
	// keep puts the answers bought in the cache, also when the call fails
	// (a chunk abandoned, a cancellation): asked again, they cost nothing.
	keep := func() {
		if c.cache == nil {
			return
		}
		for u, t := range uniq {
			if answers[u].Status == StatusOK {
				c.cache.put(t.key, answers[u])
			}
		}
	}
	// Within a chunk (see Chunk), requests are held back while every one
	// that ended was throttled; once the chunk's fate is known, those held
	// back are sent (a request of the chunk was answered: it is written)
	// or the call returns the chunk's ThrottledError (nothing answered,
	// nothing in flight: nothing was bought).
	ch := chunkFrom(ctx)
	pending := make([]int, len(batches))
	for b := range pending {
		pending[b] = b
	}
	for len(pending) > 0 {
		held, sent, err := c.send(ctx, pending, batches, textOf, answers)
		if err != nil {
			keep()
			return err
		}
		if len(held) == 0 && !(sent && ch.held()) {
			break
		}
		// Something was held back, or every request this call sent was
		// throttled and nothing of the chunk is answered yet.
		fate, err := ch.settle(ctx)
		if err != nil {
			keep()
			return err
		}
		switch fate {
		case fateThrottled:
			return ch.throttledError(c.attempts)
		case fateAbandoned:
			keep()
			return ErrChunkAbandoned
		}
		pending = held
	}
	for u, t := range uniq {
		for _, i := range t.members {
			out[i] = answers[u]
		}
	}
	keep()
	return nil
}

// send solves the batches of todo (indexes into batches), MaxConcurrency
// at a time. It returns those held back unsent by their chunk and whether
// any was sent.
func (c *Chat) send(ctx context.Context, todo []int, batches [][]int, textOf func(int) string, answers []Answer) (held []int, sent bool, err error) {
	wasHeld := make([]bool, len(todo))
	var anySent atomic.Bool
	g, gctx := errgroup.WithContext(ctx)
	var next atomic.Int64
	for range min(len(todo), c.spec.Model.MaxConcurrency) {
		g.Go(func() error {
			for {
				k := int(next.Add(1) - 1)
				if k >= len(todo) {
					return nil
				}
				batch := batches[todo[k]]
				err := c.solve(gctx, batch, textOf, answers)
				if errors.Is(err, errHeld) {
					wasHeld[k] = true
					continue
				}
				if errors.Is(err, ErrChunkAbandoned) {
					// Sent, then abandoned while it waited to try again:
					// not an error of the call, which would cut off the
					// other requests on the wire, whose answers are paid
					// for; settle tells the caller.
					c.use.sent(len(batch), false)
					anySent.Store(true)
					wasHeld[k] = true
					continue
				}
				c.use.sent(len(batch), false)
				anySent.Store(true)
				if err != nil {
					return err
				}
			}
		})
	}
	err = g.Wait()
	for k, h := range wasHeld {
		if h {
			held = append(held, todo[k])
		}
	}
	return held, anySent.Load(), err
}

// solve asks for the rows of batch (indexes into answers) and asks again,
// in halves, for those that came back missing, invalid, refused, filtered
// or cut off, until each has been asked alone.
func (c *Chat) solve(ctx context.Context, batch []int, textOf func(int) string, answers []Answer) error {
	res, again, err := c.ask(ctx, batch, textOf)
	if err != nil {
		return err
	}
	var bad []int
	for j, u := range batch {
		answers[u] = res[j]
		if again[j] {
			bad = append(bad, u)
		}
	}
	if len(bad) == 0 || len(batch) == 1 {
		return nil
	}
	c.use.splits.Add(1)
	size := max(1, len(batch)/2)
	for len(bad) > 0 {
		n := min(size, len(bad))
		if err := c.solve(ctx, bad[:n:n], textOf, answers); err != nil {
			if errors.Is(err, errHeld) {
				// This batch was answered, so its chunk holds nothing
				// back for throttling: it was abandoned.
				return ErrChunkAbandoned
			}
			return err
		}
		bad = bad[n:]
	}
	return nil
}

// Errors of one request, classified.
type (
	// stopError stops the request's rows: no server answered, or (with
	// unusable) the configuration is wrong (401, 403, 404, a refused
	// request), not the rows.
	stopError struct {
		err      error
		unusable bool
	}
	// batchError is an answer that says nothing row by row: a content
	// filter, an unreadable body, another 4xx. Smaller batches may pass.
	batchError struct {
		status Status
		reason string
	}
)

func (e *stopError) Error() string { return e.err.Error() }
func (e *stopError) Unwrap() error { return e.err }

// Is makes an unusable configuration match ErrModelUnusable.
func (e *stopError) Is(target error) bool { return e.unusable && target == ErrModelUnusable }
func (e *batchError) Error() string       { return e.reason }

// errHeld says that a request was not sent: its chunk holds requests back
// (see Chunk).
var errHeld = errors.New("request held back by its chunk")

// throttleError is an attempt answered 429.
type throttleError struct{ msg string }

func (e *throttleError) Error() string { return e.msg }

// ask sends one request for the rows of batch and returns one answer per
// row and whether that row is worth asking again in a smaller batch.
func (c *Chat) ask(ctx context.Context, batch []int, textOf func(int) string) ([]Answer, []bool, error) {
	texts := make([]string, len(batch))
	for j, u := range batch {
		texts[j] = textOf(u)
	}
	if chunkFrom(ctx).held() {
		return nil, nil, errHeld
	}
	rq, err := c.request(texts)
	if err != nil {
		return nil, nil, err
	}
	if err := c.budget.reserve(ctx, int64(rq.cost)); err != nil {
		return nil, nil, err
	}
	resp, err := c.call(ctx, rq.req, rq.cost)
	var spent int64
	if err == nil {
		spent = int64(resp.Usage.PromptTokens + resp.Usage.CompletionTokens)
		c.use.add(resp.Usage, false)
	}
	c.budget.settle(int64(rq.cost), spent)

	var be *batchError
	var se *stopError
	var ue *unreachableError
	switch {
	case err == nil:
	case errors.As(err, &se), errors.Is(err, errHeld), errors.Is(err, ErrChunkAbandoned),
		ctx.Err() != nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, nil, err
	case errors.As(err, &ue):
		// No server answered any attempt: a wrong URL or a server that is
		// down, not a problem of these rows.
		return nil, nil, &stopError{err: fmt.Errorf("model %s: no server answered after %d attempts (check the base URL): %s", c.name, c.attempts, ue.msg)}
	case errors.As(err, &be):
		if len(batch) == 1 {
			c.log.Warn("model answer unusable", "model", c.name, "rows", len(batch), "reason", be.reason)
		}
		res, again := allAnswers(len(batch), be.status, be.reason, true)
		return res, again, nil
	default:
		// Retries exhausted on throttling, 5xx or timeouts: smaller
		// batches would not help, the rows are failed for a replay
		// (unless, within a chunk, nothing of it was answered: see
		// Annotate).
		reason := fmt.Sprintf("gave up after %d attempts: %s", c.attempts, err.Error())
		c.log.Warn("model request failed", "model", c.name, "rows", len(batch), "error", reason)
		res, again := allAnswers(len(batch), StatusFailed, reason, false)
		return res, again, nil
	}
	res, again := c.judge(resp, rq)
	return res, again, nil
}

// chatRequest is one request for some rows, as built by request: what is
// sent, the ids the rows carry in it, and its token figures.
type chatRequest struct {
	req       openai.ChatCompletionRequest
	ids       []string
	maxTokens int
	cost      int // the estimate charged to the budget and the TPM limiter
}

// request builds the request for texts (one row each, in order). The
// synchronous path and the Batch API send the same requests.
func (c *Chat) request(texts []string) (chatRequest, error) {
	ids := make([]string, len(texts))
	rows := make([]promptRow, len(texts))
	taken := make(map[string]bool, len(texts))
	for j, t := range texts {
		ids[j] = rowID(t, taken)
		rows[j] = promptRow{ID: ids[j], Text: t}
	}
	user, err := userMessage(rows)
	if err != nil {
		return chatRequest{}, err
	}
	maxTokens := answerTokens(c.spec, c.perRow, len(texts))
	cost := EstimateTokens(c.system) + EstimateTokens(user) + 3*messageOverhead + maxTokens
	req := openai.ChatCompletionRequest{
		Model: c.spec.Model.Name,
		Messages: []openai.ChatCompletionMessage{
			{Role: openai.ChatMessageRoleSystem, Content: c.system},
			{Role: openai.ChatMessageRoleUser, Content: user},
		},
		ResponseFormat: c.format,
	}
	if reasoningModel(c.spec.Model.Name) {
		// o-series and gpt-5 models take max_completion_tokens and only
		// their own temperature.
		req.MaxCompletionTokens = maxTokens
	} else {
		// max_tokens is what every compatible server and every Azure API
		// version knows; max_completion_tokens is refused by many.
		req.MaxTokens = maxTokens //lint:ignore SA1019 the widely understood field, see above
		req.Temperature = float32(c.spec.Model.Temperature)
		if req.Temperature == 0 {
			// go-openai omits a zero temperature and the server would use
			// its own default (1 on OpenAI): send the smallest above zero.
			req.Temperature = math.SmallestNonzeroFloat32
		}
	}
	return chatRequest{req: req, ids: ids, maxTokens: maxTokens, cost: cost}, nil
}

// allAnswers is n rows with the same status and reason.
func allAnswers(n int, status Status, reason string, again bool) ([]Answer, []bool) {
	res := make([]Answer, n)
	flags := make([]bool, n)
	for j := range res {
		res[j] = Answer{Status: status, Error: reason}
		flags[j] = again
	}
	return res, flags
}

// judge reads a successful answer to rq: one answer per row and whether
// that row is worth asking again in a smaller batch (missing, invalid,
// refused, filtered, cut off).
func (c *Chat) judge(resp openai.ChatCompletionResponse, rq chatRequest) ([]Answer, []bool) {
	n := len(rq.ids)
	if len(resp.Choices) == 0 {
		return allAnswers(n, StatusInvalidOutput, "the answer has no choices", true)
	}
	choice := resp.Choices[0]
	switch {
	case choice.Message.Refusal != "":
		return allAnswers(n, StatusFailed, "the model refused: "+clipText(choice.Message.Refusal), true)
	case choice.FinishReason == openai.FinishReasonContentFilter:
		return allAnswers(n, StatusFailed, "the provider's content filter stopped the answer", true)
	case choice.FinishReason == openai.FinishReasonLength:
		return allAnswers(n, StatusInvalidOutput, fmt.Sprintf("the answer was cut off at max_tokens (%d)", rq.maxTokens), true)
	}
	res, unknown, err := parseAnswer(choice.Message.Content, rq.ids, c.spec.Outputs)
	if err != nil {
		reason := err.Error()
		if f := choice.FinishReason; f != "" && f != openai.FinishReasonStop {
			reason += fmt.Sprintf(" (finish reason %q)", clipText(string(f)))
		}
		return allAnswers(n, StatusInvalidOutput, clipText(reason), true)
	}
	if unknown > 0 {
		c.log.Debug("model answered unknown ids", "model", c.name, "unknown", unknown)
	}
	again := make([]bool, len(res))
	for j := range res {
		again[j] = res[j].Status != StatusOK
	}
	return res, again
}

// call sends one request, retrying what may pass later. Within a chunk
// (see Chunk) it is not sent when the chunk holds requests back (errHeld),
// and the chunk learns how it ended.
func (c *Chat) call(ctx context.Context, req openai.ChatCompletionRequest, cost int) (openai.ChatCompletionResponse, error) {
	ch := chunkFrom(ctx)
	// wctx is for the waits (quota, a free slot, backoff), which an
	// abandoned chunk ends; the request itself runs on ctx, so that an
	// answer on its way is not cut off.
	wctx := ctx
	if ch != nil {
		var cancel context.CancelCauseFunc
		wctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		defer context.AfterFunc(ch.ctx, func() { cancel(context.Cause(ch.ctx)) })()
	}
	b := c.backoff(c.attempts)
	var resp openai.ChatCompletionResponse
	attempt := 0
	begun := false
	var longest time.Duration // the longest Retry-After of its 429s
	err := retry.Do(wctx, b, func(context.Context) error {
		attempt++
		if attempt > 1 {
			c.use.retries.Add(1)
		}
		if err := c.lim.wait(wctx, cost); err != nil {
			return err
		}
		if err := c.gate.acquire(wctx); err != nil {
			return err
		}
		if !begun {
			if !ch.begin() {
				c.gate.release(false, false)
				return errHeld
			}
			begun = true
		}
		info := &callInfo{}
		actx, cancel := context.WithTimeout(context.WithValue(ctx, callInfoKey{}, info), c.timeout)
		r, err := c.client.CreateChatCompletion(actx, req)
		cancel()
		c.gate.release(info.status == http.StatusTooManyRequests, err == nil)
		if err == nil {
			c.use.requests.Add(1)
			resp = r
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Every server text in err went through the scrubber (capturingDoer).
		msg := err.Error()
		var re *redirectError
		if errors.As(err, &re) {
			return &stopError{err: fmt.Errorf("model %s: the server answered HTTP %d, redirecting to another address; the key is sent to base_url only: set model.base_url to where it points (%s)", c.name, re.status, msg), unusable: true}
		}
		if !info.sent {
			// The client refused the request before sending it.
			return &stopError{err: fmt.Errorf("model %s: the request could not be sent: %s", c.name, msg), unusable: true}
		}
		c.use.requests.Add(1)
		switch s := info.status; {
		case s == http.StatusTooManyRequests:
			c.use.throttled.Add(1)
			if info.retryAfter > 0 {
				c.lim.pause(info.retryAfter)
			}
			b.atLeast(info.retryAfter)
			longest = max(longest, info.retryAfter)
			// At info level: the run service's metric filters count
			// these lines (ModelThrottled).
			c.log.Info("model throttled", "model", c.name, "attempt", attempt, "retry_after", info.retryAfter)
			return retry.RetryableError(&throttleError{msg})
		case s == 0 && unreachable(err):
			c.use.serverErrors.Add(1)
			c.log.Debug("model server unreachable, retrying", "model", c.name, "attempt", attempt, "error", msg)
			return retry.RetryableError(&unreachableError{msg})
		case s == 0 || s == http.StatusRequestTimeout || s >= 500 || (s < 300 && timedOut(err)):
			// Network errors, our per-request timeout (also while the
			// answer was being read), server errors.
			c.use.serverErrors.Add(1)
			b.atLeast(info.retryAfter)
			c.log.Debug("model request failed, retrying", "model", c.name, "attempt", attempt, "status", s, "error", msg)
			return retry.RetryableError(errors.New(msg))
		case s == http.StatusUnauthorized || s == http.StatusForbidden || s == http.StatusNotFound:
			return &stopError{err: fmt.Errorf("model %s: HTTP %d (check the key, the base URL, the model or deployment name): %s", c.name, s, msg), unusable: true}
		case s == http.StatusBadRequest && isContentFilter(err):
			return &batchError{status: StatusFailed, reason: "the provider's content filter rejected the prompt"}
		case s == http.StatusBadRequest && apiCode(err) == "context_length_exceeded":
			return &batchError{status: StatusFailed, reason: "the prompt is longer than the model's context"}
		case s < 300:
			return &batchError{status: StatusInvalidOutput, reason: "unreadable answer: " + clipText(msg)}
		case s == http.StatusBadRequest || s == http.StatusUnprocessableEntity:
			// The server refuses the request itself (a parameter, the
			// response format): every row would fail the same way.
			return &stopError{err: fmt.Errorf("model %s: HTTP %d, the server refuses the request (check the model, deployment and API version): %s", c.name, s, msg), unusable: true}
		default:
			return &batchError{status: StatusFailed, reason: fmt.Sprintf("HTTP %d: %s", s, clipText(msg))}
		}
	})
	if err != nil && ch != nil && ctx.Err() == nil && errors.Is(context.Cause(wctx), ErrChunkAbandoned) {
		// The chunk was abandoned while the request waited.
		if begun {
			err = ErrChunkAbandoned
		} else {
			err = errHeld
		}
	}
	if begun {
		var te *throttleError
		switch {
		case errors.As(err, &te):
			ch.end(endThrottled, longest)
		case err != nil && (errors.Is(err, ErrChunkAbandoned) || ctx.Err() != nil):
			ch.end(endCancelled, 0)
		default:
			ch.end(endAnswered, 0)
		}
	}
	return resp, err
}

// unreachableError is an attempt that reached no server (connection
// refused, no such host).
type unreachableError struct{ msg string }

func (e *unreachableError) Error() string { return e.msg }

func unreachable(err error) bool {
	var dns *net.DNSError
	var op *net.OpError
	return errors.As(err, &dns) || (errors.As(err, &op) && op.Op == "dial" && !op.Timeout())
}

func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func apiCode(err error) string {
	var ae *openai.APIError
	if !errors.As(err, &ae) {
		return ""
	}
	code, _ := ae.Code.(string)
	return code
}

// reasoningModel reports whether a model name is of OpenAI's o-series or
// gpt-5 family, which take max_completion_tokens and no temperature.
func reasoningModel(name string) bool {
	n := strings.ToLower(name)
	for _, p := range []string{"o1", "o3", "o4", "gpt-5"} {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

func isContentFilter(err error) bool {
	var ae *openai.APIError
	if !errors.As(err, &ae) {
		return false
	}
	if code, _ := ae.Code.(string); code == "content_filter" {
		return true
	}
	return ae.InnerError != nil && ae.InnerError.Code == "ResponsibleAIPolicyViolation"
}

// clipText keeps row errors short.
func clipText(s string) string {
	const n = 300
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// backoff is the waits between the tries of one model call (a chat
// request, a Batch API call): exponential from c.base (default 500ms),
// ±20% jitter, each at most 30s and never shorter than the server's last
// Retry-After, for at most attempts tries.
func (c *Chat) backoff(attempts int) *hintBackoff {
	return &hintBackoff{next: retry.WithMaxRetries(uint64(attempts-1),
		retry.WithCappedDuration(30*time.Second, retry.WithJitterPercent(20, retry.NewExponential(c.base))))}
}

// hintBackoff is a go-retry backoff whose next step is never shorter than
// the server's last Retry-After.
type hintBackoff struct {
	next retry.Backoff
	hint time.Duration
}

func (b *hintBackoff) atLeast(d time.Duration) { b.hint = d }

func (b *hintBackoff) Next() (time.Duration, bool) {
	d, stop := b.next.Next()
	if stop {
		return 0, true
	}
	d, b.hint = max(d, b.hint), 0
	return d, false
}

// callInfo carries what go-openai drops from an HTTP answer: the status and
// the Retry-After hint. capturingDoer fills it from the response headers.
type (
	callInfo struct {
		sent       bool
		status     int
		retryAfter time.Duration
	}
	callInfoKey struct{}
	// capturingDoer is the HTTP client go-openai sends through. It is
	// where every text of the model server enters: the status line, the
	// headers and the body of each answer, and the transport's errors
	// (which quote what the server sent), all scrubbed of the key here,
	// before go-openai parses them into refusals, answers and errors.
	capturingDoer struct {
		c     *http.Client
		scrub *scrubber
	}
)

func (d capturingDoer) Do(req *http.Request) (*http.Response, error) {
	info, _ := req.Context().Value(callInfoKey{}).(*callInfo)
	if info != nil {
		info.sent = true
	}
	resp, err := d.c.Do(req)
	if err != nil {
		return nil, d.scrubError(err)
	}
	if info != nil {
		info.status = resp.StatusCode
		info.retryAfter = retryAfter(resp.Header, time.Now())
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, d.scrubError(err)
	}
	body = []byte(d.scrub.scrub(string(body)))
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	resp.Status = d.scrub.scrub(resp.Status)
	for _, vs := range resp.Header {
		for i, v := range vs {
			vs[i] = d.scrub.scrub(v)
		}
	}
	return resp, nil
}

// scrubError keeps err for errors.Is and errors.As (timeouts, dial
// errors) and scrubs its text: Go's transport quotes the server's bytes
// ("malformed HTTP response ...").
func (d capturingDoer) scrubError(err error) error {
	return &scrubbedError{msg: d.scrub.scrub(err.Error()), err: err}
}

type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// redirectError is a redirect the client refused to follow; to is where
// the server pointed, which the error's text (scrubbed) gives.
type redirectError struct {
	status int
	to     string
}

func (e *redirectError) Error() string {
	return fmt.Sprintf("HTTP %d redirect to %s not followed", e.status, e.to)
}

// answerCache remembers the answers to texts already asked in this run, by
// the SHA-256 of the text. It holds two generations of at most size/2
// entries each: when the young one fills, the old one is dropped, so memory
// is bounded and recently used texts survive.
type answerCache struct {
	mu    sync.Mutex
	half  int
	young map[[32]byte]Answer
	old   map[[32]byte]Answer
}

func newAnswerCache(size int) *answerCache {
	half := max(1, size/2)
	return &answerCache{half: half, young: make(map[[32]byte]Answer), old: map[[32]byte]Answer{}}
}

func (c *answerCache) get(k [32]byte) (Answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.young[k]; ok {
		return a, true
	}
	a, ok := c.old[k]
	if ok {
		c.putLocked(k, a)
	}
	return a, ok
}

func (c *answerCache) put(k [32]byte, a Answer) {
	c.mu.Lock()
	c.putLocked(k, a)
	c.mu.Unlock()
}

func (c *answerCache) putLocked(k [32]byte, a Answer) {
	if len(c.young) >= c.half {
		c.old, c.young = c.young, make(map[[32]byte]Answer, c.half)
	}
	c.young[k] = a
}
