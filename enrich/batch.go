package enrich

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"strings"
	"time"

	"github.com/sashabaranov/go-openai"
	"github.com/sethvargo/go-retry"
)

// The Batch API (OpenAI /v1/batches, Azure OpenAI /openai/batches): the
// same chat requests as the synchronous path, written as the lines of an
// uploaded JSONL file, answered within 24 hours at half the price, and
// read back from an output file (answers, in any order) and an error file
// (lines that failed), keyed by each line's custom_id.
//
// The input file cannot be downloaded back, so the caller keeps what maps
// a custom_id to its rows: PackBatch is a pure function of the texts, in
// their order, and of the rows per request, so the lines are made again
// from the same texts when the answers are collected, and each custom_id
// carries a hash of its line's texts, so that a line made from other texts
// is never taken for it.

// BatchLine is one request line of a batch: the texts it asks about, in
// order.
type BatchLine struct {
	CustomID string
	Texts    []string
}

// BatchInfo is what the provider says of a batch.
type BatchInfo struct {
	ID, Status string
	InputFile  string
	// OutputFile and ErrorFile are empty until the batch ends (and when
	// it ends without answers or without failed lines).
	OutputFile, ErrorFile string
	Created               time.Time
	// Total, Completed and Failed count request lines.
	Total, Completed, Failed int
	// Errors are the batch's own errors (a file that failed validation).
	Errors string
}

// Batch states that are final.
const (
	BatchCompleted = "completed"
	BatchFailed    = "failed"
	BatchExpired   = "expired"
	BatchCancelled = "cancelled"
	// BatchRefused is not the provider's: the state of an attempt whose
	// batch the provider refused to create (ErrBatchRefused).
	BatchRefused = "refused"
)

// Done reports whether the batch has ended: its answers are all there is.
func (b BatchInfo) Done() bool {
	switch b.Status {
	case BatchCompleted, BatchFailed, BatchExpired, BatchCancelled, BatchRefused:
		return true
	}
	return false
}

// Batcher is a model that can also answer through a Batch API. *Chat is
// one (providers openai and azure).
type Batcher interface {
	Model
	// PackBatch cuts texts into request lines of at most rowsPerRequest
	// texts each, in order.
	PackBatch(texts []string, rowsPerRequest int) []BatchLine
	// UploadBatch uploads the lines as a batch input file and returns its
	// ID. Nothing is paid for until a batch is created from it.
	UploadBatch(ctx context.Context, name string, lines []BatchLine) (string, error)
	// CreateBatch creates (and so pays for) the batch of an input file.
	// Metadata values are shown by the provider's console. It is tried
	// once, for at most CreateTimeout: after a failure the batch may exist
	// all the same (the answer was lost), so the caller looks it up with
	// FindBatch before creating it again.
	CreateBatch(ctx context.Context, inputFile string, metadata map[string]string) (BatchInfo, error)
	// CreateTimeout bounds one CreateBatch.
	CreateTimeout() time.Duration
	// FindBatch looks for a batch created from inputFile since a time
	// (newest first): the batch of a crash between its creation and its
	// record.
	FindBatch(ctx context.Context, inputFile string, since time.Time) (BatchInfo, bool, error)
	// RetrieveBatch reads a batch's state.
	RetrieveBatch(ctx context.Context, id string) (BatchInfo, error)
	// BatchAnswers reads the answers of a batch that is Done, whose lines
	// are lines, and gives one answer per text to into: ok, or the status
	// and reason of the failure (a failed line, a row missing or invalid in
	// an answer, a request the batch never answered).
	BatchAnswers(ctx context.Context, b BatchInfo, lines []BatchLine, into func(text string, a Answer)) error
	// DeleteBatchFile deletes an uploaded file (an input file whose batch
	// was never created).
	DeleteBatchFile(ctx context.Context, id string) error
}

var _ Batcher = (*Chat)(nil)

// PackBatch implements Batcher.
func (c *Chat) PackBatch(texts []string, rowsPerRequest int) []BatchLine {
	rowsPerRequest = max(1, rowsPerRequest)
	lines := make([]BatchLine, 0, (len(texts)+rowsPerRequest-1)/rowsPerRequest)
	for i := 0; i < len(texts); i += rowsPerRequest {
		part := texts[i:min(i+rowsPerRequest, len(texts)):min(i+rowsPerRequest, len(texts))]
		h := fnv.New64a()
		for _, t := range part {
			_, _ = h.Write([]byte(t))
			_, _ = h.Write([]byte{0})
		}
		lines = append(lines, BatchLine{CustomID: fmt.Sprintf("r%06d-%016x", len(lines), h.Sum64()), Texts: part})
	}
	return lines
}

// batchEndpoint is the URL of the lines and of the batch: Azure wants it
// without /v1 (go-openai's constant has it).
func (c *Chat) batchEndpoint() openai.BatchEndpoint {
	if c.spec.Model.Provider == ProviderAzure {
		return "/chat/completions"
	}
	return openai.BatchEndpointChatCompletions
}

// batchLine is one line of a batch input file.
type batchLine struct {
	CustomID string                       `json:"custom_id"`
	Method   string                       `json:"method"`
	URL      openai.BatchEndpoint         `json:"url"`
	Body     openai.ChatCompletionRequest `json:"body"`
}

// UploadBatch implements Batcher.
func (c *Chat) UploadBatch(ctx context.Context, name string, lines []BatchLine) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	rows := 0
	for _, l := range lines {
		rq, err := c.request(l.Texts)
		if err != nil {
			return "", err
		}
		if c.spec.Model.Provider == ProviderAzure {
			// The deployment is not mapped into batch lines: each line
			// names it as its model.
			rq.req.Model = c.spec.Model.Batch.Deployment
		}
		if err := enc.Encode(batchLine{CustomID: l.CustomID, Method: http.MethodPost, URL: c.batchEndpoint(), Body: rq.req}); err != nil {
			return "", fmt.Errorf("encode batch line %s: %w", l.CustomID, err)
		}
		rows += len(l.Texts)
	}
	f, err := batchValue(ctx, c, "upload the batch input file", func(ctx context.Context) (openai.File, error) {
		return c.client.CreateFileBytes(ctx, openai.FileBytesRequest{Name: name + ".jsonl", Bytes: buf.Bytes(), Purpose: openai.PurposeBatch})
	})
	if err != nil {
		return "", err
	}
	if f.ID == "" {
		return "", fmt.Errorf("model %s: upload the batch input file: the answer names no file", c.name)
	}
	if err := c.waitProcessed(ctx, f); err != nil {
		return "", err
	}
	c.use.sent(rows, true)
	return f.ID, nil
}

// fileWait bounds the wait for an uploaded file to be processed, and
// filePoll spaces the checks.
const (
	fileWait = 10 * time.Minute
	filePoll = 2 * time.Second
)

// waitProcessed waits until an uploaded file is processed: Azure OpenAI
// refuses a batch whose input file is still being processed (OpenAI's
// files are processed at once).
func (c *Chat) waitProcessed(ctx context.Context, f openai.File) error {
	deadline := time.Now().Add(fileWait)
	for {
		switch f.Status {
		case "", "processed":
			return nil
		case "error", "failed", "deleted":
			return &refusedError{err: fmt.Errorf("model %s: batch input file %s is %s: %s", c.name, f.ID, f.Status, clipText(f.StatusDetails))}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("model %s: batch input file %s still %s after %s", c.name, f.ID, f.Status, fileWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(filePoll):
		}
		id := f.ID
		var err error
		f, err = batchValue(ctx, c, "read file "+id, func(ctx context.Context) (openai.File, error) {
			return c.client.GetFile(ctx, id)
		})
		if err != nil {
			return err
		}
	}
}

// CreateBatch implements Batcher.
func (c *Chat) CreateBatch(ctx context.Context, inputFile string, metadata map[string]string) (BatchInfo, error) {
	meta := make(map[string]any, len(metadata))
	for k, v := range metadata {
		meta[k] = v
	}
	if len(meta) == 0 {
		meta = nil
	}
	var b openai.BatchResponse
	err := c.batchCallOnce(ctx, "create the batch of "+inputFile, c.CreateTimeout(), func(ctx context.Context) error {
		var err error
		b, err = c.client.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: inputFile, Endpoint: c.batchEndpoint(),
			CompletionWindow: "24h", Metadata: meta})
		return err
	})
	if err != nil {
		return BatchInfo{}, err
	}
	if b.ID == "" {
		return BatchInfo{}, fmt.Errorf("model %s: create the batch of %s: the answer names no batch", c.name, inputFile)
	}
	return batchInfo(b.Batch), nil
}

// DefaultBatchCreateTimeout bounds one batch creation (ChatOptions).
const DefaultBatchCreateTimeout = time.Minute

// CreateTimeout implements Batcher.
func (c *Chat) CreateTimeout() time.Duration { return c.createTimeout }

// FindBatch implements Batcher.
func (c *Chat) FindBatch(ctx context.Context, inputFile string, since time.Time) (BatchInfo, bool, error) {
	const pageSize, maxPages = 100, 50
	var after *string
	for range maxPages {
		limit := pageSize
		page, err := batchValue(ctx, c, "list batches", func(ctx context.Context) (openai.ListBatchResponse, error) {
			return c.client.ListBatch(ctx, after, &limit)
		})
		if err != nil {
			return BatchInfo{}, false, err
		}
		for _, b := range page.Data {
			if b.InputFileID == inputFile {
				return batchInfo(b), true, nil
			}
			if time.Unix(int64(b.CreatedAt), 0).Before(since.Add(-time.Hour)) {
				return BatchInfo{}, false, nil // newest first: older ones cannot be ours
			}
		}
		if !page.HasMore || len(page.Data) == 0 {
			return BatchInfo{}, false, nil
		}
		last := page.Data[len(page.Data)-1].ID
		after = &last
	}
	return BatchInfo{}, false, fmt.Errorf("model %s: no batch of input file %s in the newest %d batches", c.name, inputFile, pageSize*maxPages)
}

// RetrieveBatch implements Batcher.
func (c *Chat) RetrieveBatch(ctx context.Context, id string) (BatchInfo, error) {
	b, err := batchValue(ctx, c, "read batch "+id, func(ctx context.Context) (openai.BatchResponse, error) {
		return c.client.RetrieveBatch(ctx, id)
	})
	if err != nil {
		return BatchInfo{}, err
	}
	return batchInfo(b.Batch), nil
}

// DeleteBatchFile implements Batcher.
func (c *Chat) DeleteBatchFile(ctx context.Context, id string) error {
	return c.batchCall(ctx, "delete file "+id, func(ctx context.Context) error {
		return c.client.DeleteFile(ctx, id)
	})
}

func batchInfo(b openai.Batch) BatchInfo {
	out := BatchInfo{ID: b.ID, Status: b.Status, InputFile: b.InputFileID, Created: time.Unix(int64(b.CreatedAt), 0),
		Total: b.RequestCounts.Total, Completed: b.RequestCounts.Completed, Failed: b.RequestCounts.Failed}
	if b.OutputFileID != nil {
		out.OutputFile = *b.OutputFileID
	}
	if b.ErrorFileID != nil {
		out.ErrorFile = *b.ErrorFileID
	}
	if b.Errors != nil {
		var msgs []string
		for _, e := range b.Errors.Data {
			m := e.Code + ": " + e.Message
			if e.Line != nil {
				m += fmt.Sprintf(" (line %d)", *e.Line)
			}
			msgs = append(msgs, m)
		}
		out.Errors = clipText(strings.Join(msgs, "; "))
	}
	return out
}

// outputLine is one line of a batch's output or error file. A failed line
// comes as an error object or as a response with a status other than 200.
type outputLine struct {
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// maxOutputLine is the longest output line read: an answer of 500 rows
// is tens of kilobytes.
const maxOutputLine = 16 << 20

// BatchAnswers implements Batcher.
func (c *Chat) BatchAnswers(ctx context.Context, b BatchInfo, lines []BatchLine, into func(text string, a Answer)) error {
	index := make(map[string]int, len(lines))
	for i, l := range lines {
		index[l.CustomID] = i
	}
	seen := make([]bool, len(lines))
	unknown := 0
	// A batch's files are read again when a collection is done again (a
	// lost conflict, a crash, the answers of an earlier attempt): its
	// tokens are counted at the first read only.
	count := c.countBatch(b.ID)
	failLine := func(l BatchLine, status Status, reason string) {
		for _, t := range l.Texts {
			into(t, Answer{Status: status, Error: reason})
		}
	}
	read := func(file string) error {
		raw, err := batchValue(ctx, c, "download file "+file, func(ctx context.Context) (openai.RawResponse, error) {
			return c.client.GetFileContent(ctx, file)
		})
		if err != nil {
			return err
		}
		defer raw.Close()
		sc := bufio.NewScanner(raw)
		sc.Buffer(make([]byte, 0, 64<<10), maxOutputLine)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			var ol outputLine
			if err := json.Unmarshal(sc.Bytes(), &ol); err != nil {
				return fmt.Errorf("model %s: batch %s: file %s: a line is not JSON: %w", c.name, b.ID, file, err)
			}
			i, ok := index[ol.CustomID]
			if !ok || seen[i] {
				unknown++
				continue
			}
			seen[i] = true
			l := lines[i]
			switch {
			case ol.Error != nil:
				failLine(l, StatusFailed, clipText(fmt.Sprintf("batch %s: the request failed: %s: %s", b.ID, ol.Error.Code, ol.Error.Message)))
				continue
			case ol.Response == nil:
				failLine(l, StatusFailed, fmt.Sprintf("batch %s: the request has neither an answer nor an error", b.ID))
				continue
			case ol.Response.StatusCode != http.StatusOK:
				failLine(l, StatusFailed, clipText(fmt.Sprintf("batch %s: the request failed with HTTP %d: %s", b.ID, ol.Response.StatusCode, ol.Response.Body)))
				continue
			}
			var resp openai.ChatCompletionResponse
			if err := json.Unmarshal(ol.Response.Body, &resp); err != nil {
				failLine(l, StatusInvalidOutput, clipText("unreadable answer: "+err.Error()))
				continue
			}
			if count {
				c.use.add(resp.Usage, true)
			}
			rq, err := c.request(l.Texts)
			if err != nil {
				return err
			}
			res, _ := c.judge(resp, rq)
			for j, t := range l.Texts {
				into(t, res[j])
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("model %s: batch %s: read file %s: %w", c.name, b.ID, file, err)
		}
		return nil
	}
	for _, f := range []string{b.OutputFile, b.ErrorFile} {
		if f == "" {
			continue
		}
		if err := read(f); err != nil {
			return err
		}
	}
	if unknown > 0 {
		c.log.Warn("batch answered requests it was not asked", "model", c.name, "batch", b.ID, "lines", unknown)
	}
	reason := fmt.Sprintf("batch %s ended %s without an answer for this request", b.ID, b.Status)
	if b.Errors != "" {
		reason += ": " + b.Errors
	}
	for i, l := range lines {
		if !seen[i] {
			failLine(l, StatusFailed, clipText(reason))
		}
	}
	return nil
}

// batchTimeout bounds one call of the Batch API: uploads and downloads
// of files move megabytes.
const batchTimeout = 5 * time.Minute

// batchCallOnce makes one call of the Batch API that must not be repeated
// blindly (a create: a retry after a lost answer would pay twice), with a
// timeout; its errors are classified as batchCall's.
func (c *Chat) batchCallOnce(ctx context.Context, what string, timeout time.Duration, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.batchCallN(ctx, what, 1, f)
}

// batchCall makes one call of the Batch API with the retries of the
// synchronous path: throttling, 5xx, timeouts and unreachable servers
// are retried with backoff (never sooner than Retry-After); a wrong key,
// URL, API version or deployment (401, 403, 404) stops the run like a
// chat request would.
func (c *Chat) batchCall(ctx context.Context, what string, f func(ctx context.Context) error) error {
	return c.batchCallN(ctx, what, c.attempts, f)
}

// batchValue is batchCall of a call that answers a value: the value of
// the last try.
func batchValue[T any](ctx context.Context, c *Chat, what string, call func(ctx context.Context) (T, error)) (T, error) {
	var v T
	err := c.batchCall(ctx, what, func(ctx context.Context) error {
		var err error
		v, err = call(ctx)
		return err
	})
	return v, err
}

// batchCallN is batchCall with at most attempts tries.
func (c *Chat) batchCallN(ctx context.Context, what string, attempts int, f func(ctx context.Context) error) error {
	b := c.backoff(attempts)
	attempt := 0
	err := retry.Do(ctx, b, func(ctx context.Context) error {
		attempt++
		if attempt > 1 {
			c.use.retries.Add(1)
		}
		info := &callInfo{}
		actx, cancel := context.WithTimeout(context.WithValue(ctx, callInfoKey{}, info), max(c.timeout, batchTimeout))
		err := f(actx)
		cancel()
		c.use.requests.Add(1)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		msg := err.Error() // scrubbed: every server text passes capturingDoer
		var re *redirectError
		switch s := info.status; {
		case errors.As(err, &re):
			return &stopError{err: fmt.Errorf("model %s: %s: the server answered HTTP %d, redirecting to another address; the key is sent to base_url only (%s)", c.name, what, re.status, msg), unusable: true}
		case !info.sent:
			return &stopError{err: fmt.Errorf("model %s: %s: the request could not be sent: %s", c.name, what, msg), unusable: true}
		case s == http.StatusTooManyRequests:
			c.use.throttled.Add(1)
			b.atLeast(info.retryAfter)
			c.log.Info("model throttled", "model", c.name, "call", what, "attempt", attempt, "retry_after", info.retryAfter)
			return retry.RetryableError(errors.New(msg))
		case s == 0 || s == http.StatusRequestTimeout || s >= 500 || timedOut(err):
			c.use.serverErrors.Add(1)
			b.atLeast(info.retryAfter)
			c.log.Debug("batch API call failed, retrying", "model", c.name, "call", what, "attempt", attempt, "status", s, "error", msg)
			return retry.RetryableError(errors.New(msg))
		case s == http.StatusUnauthorized || s == http.StatusForbidden || s == http.StatusNotFound:
			return &stopError{err: fmt.Errorf("model %s: %s: HTTP %d (check the key, the base URL, the API version and the batch deployment): %s", c.name, what, s, msg), unusable: true}
		default:
			return &refusedError{err: fmt.Errorf("model %s: %s: HTTP %d: %s", c.name, what, s, msg)}
		}
	})
	if err != nil && !errors.As(err, new(*stopError)) && !errors.As(err, new(*refusedError)) && ctx.Err() == nil && !strings.HasPrefix(err.Error(), "model ") {
		return fmt.Errorf("model %s: %s: gave up after %d attempts: %w", c.name, what, attempt, err)
	}
	return err
}

// countBatch reports whether the usage of batch id is still to be counted
// in this process, and marks it counted. The set is bounded: past
// maxCounted IDs it starts again, so a batch read again much later may be
// counted twice.
func (c *Chat) countBatch(id string) bool {
	const maxCounted = 100_000
	c.countedMu.Lock()
	defer c.countedMu.Unlock()
	if _, ok := c.counted[id]; ok {
		return false
	}
	if c.counted == nil || len(c.counted) >= maxCounted {
		c.counted = map[string]struct{}{}
	}
	c.counted[id] = struct{}{}
	return true
}

// ErrBatchRefused is matched (errors.Is) by a Batch API call the provider
// refused for good: a 4xx other than 401, 403, 404, 408 and 429 (a file
// over the limits, a batch over the enqueued-token quota, an invalid
// request). Trying it again would meet the same answer.
var ErrBatchRefused = errors.New("the provider refused the batch request")

type refusedError struct{ err error }

func (e *refusedError) Error() string        { return e.err.Error() }
func (e *refusedError) Unwrap() error        { return e.err }
func (e *refusedError) Is(target error) bool { return target == ErrBatchRefused }
