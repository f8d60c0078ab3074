package fakellm

// The Batch API, in the OpenAI form (/v1/files, /v1/batches, bearer key)
// and the Azure form (/openai/files, /openai/batches, ?api-version= and the
// api-key header): upload a JSONL file of chat requests, create a batch of
// it, poll it, read its output and error files, list, cancel, delete.
//
// A batch moves validating → in_progress → finalizing → completed over
// Server.BatchDelay: validation takes its first fifth, the lines are
// answered one after the other over the next three fifths, finalizing takes
// the last. Nothing runs in the background: each request about a batch
// brings it up to the time of Server.Clock, answering the lines due by then
// with the chat endpoint's own logic (read, Server.Fault, answer), so they
// show in Requests and Stats like synchronous requests, marked with the
// batch's id and the line's custom_id.
//
// How a test shapes a batch:
//   - a line fails: Server.BatchLineFault returns ErrorLine (an error line
//     with no response), ServerErrorLine (a response with status_code 500)
//     or SkipLine (the line is in neither file); or Server.Fault picks a
//     fault for the line's Request (Request.Batch is set): the HTTP faults
//     become a response with that status code in the error file, the
//     answer faults (Refusal, DropRow, ...) a 200 in the output file.
//   - a batch expires or fails: Server.BatchEnd returns BatchEnd{Status:
//     BatchExpired, Answered: n} (n lines answered, the rest error lines
//     with code batch_expired) or BatchEnd{Status: BatchFailed} (it fails at
//     validation with code token_limit_exceeded, or Code and Message). A
//     file that is not a valid batch input fails at validation too, with one
//     error per bad line, as OpenAI does.
//   - a batch takes a while: Server.BatchDelay, on the wall clock or on a
//     test's own Clock.

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BatchLineFault is what happens to one line of a batch instead of being
// answered by the chat logic. A line given one of these is not a Request.
type BatchLineFault int

// Batch line faults.
const (
	LineAnswered    BatchLineFault = iota // answered like a chat request (Server.Fault applies)
	ErrorLine                             // error file: "response": null, "error": {"code": "server_error", ...}
	ServerErrorLine                       // error file: a response with status_code 500 and an error body
	SkipLine                              // in neither file, counted neither completed nor failed
)

// Batch statuses.
const (
	BatchValidating = "validating"
	BatchFailed     = "failed"
	BatchInProgress = "in_progress"
	BatchFinalizing = "finalizing"
	BatchCompleted  = "completed"
	BatchExpired    = "expired"
	BatchCancelling = "cancelling"
	BatchCancelled  = "cancelled"
)

// BatchEnd is how a batch ends, as Server.BatchEnd picks it.
type BatchEnd struct {
	// Status is BatchCompleted (or empty), BatchExpired or BatchFailed.
	Status string
	// Answered is, for BatchExpired, how many lines (in file order) are
	// answered before the completion window runs out, over the in_progress
	// time; the others go to the error file with code batch_expired.
	Answered int
	// Code and Message are, for BatchFailed, the error it fails with at
	// validation (default: token_limit_exceeded).
	Code, Message string
}

// BatchInfo is what the server knows of a batch.
type BatchInfo struct {
	N           int // 1-based, in creation order
	ID          string
	InputFileID string
	Endpoint    string
	Azure       bool
	APIVersion  string
	// Status is the status last reported to a client (reading it does not
	// move the batch on).
	Status   string
	Metadata map[string]any
	// Lines is the number of non-blank lines of the input file.
	Lines int
	// Completed and Failed are the request counts last reported.
	Completed, Failed int
	// OutputFileID and ErrorFileID are set once the batch has ended with
	// lines in them.
	OutputFileID, ErrorFileID string
}

// Batches returns every batch created, in creation order.
func (s *Server) Batches() []BatchInfo {
	st := &s.batch
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]BatchInfo, len(st.batches))
	for i, b := range st.batches {
		out[i] = b.info
		out[i].Metadata = maps.Clone(b.info.Metadata)
	}
	return out
}

// batchStore is the server's files and batches. work serialises the
// creation and the progress of batches (it is held while lines are
// answered, so callbacks run without mu); mu guards the rest.
type batchStore struct {
	work    sync.Mutex
	mu      sync.Mutex
	files   map[string]*storedFile
	batches []*batch
	byID    map[string]*batch
	nfiles  int
}

type storedFile struct {
	id, name, purpose string
	data              []byte
	created           int64
}

type batch struct {
	info   BatchInfo
	end    BatchEnd
	window string
	key    string // the key the batch was created with: its lines' SentKey
	lines  []inputLine
	errs   []batchError // validation errors: the batch fails

	created, validEnd, runEnd, endAt time.Time
	cancelAt, cancelEnd              time.Time // zero unless cancelled
	seen                             time.Time // the time it was last brought up to (zero: never)

	done    int // lines processed, in file order
	results []lineResult
	ended   bool // the output and error files are written
}

type inputLine struct {
	customID string
	body     []byte
}

type lineResult struct {
	customID string
	status   int             // the response's status_code (0: an error line)
	body     json.RawMessage // the response body
	code     string          // an error line's code and message
	message  string
	skip     bool
}

type batchError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

func (s *Server) now() time.Time {
	if s.Clock != nil {
		return s.Clock()
	}
	return time.Now()
}

// batchRoute serves the file and batch endpoints; it reports whether r was
// one of them.
func (s *Server) batchRoute(w http.ResponseWriter, r *http.Request) bool {
	var rest string
	azure := false
	switch p := r.URL.Path; {
	case p == "/v1/files" || p == "/v1/batches" || strings.HasPrefix(p, "/v1/files/") || strings.HasPrefix(p, "/v1/batches/"):
		rest = strings.TrimPrefix(p, "/v1")
	case p == "/openai/files" || p == "/openai/batches" || strings.HasPrefix(p, "/openai/files/") || strings.HasPrefix(p, "/openai/batches/"):
		rest, azure = strings.TrimPrefix(p, "/openai"), true
	default:
		return false
	}
	version := ""
	if azure {
		version = r.URL.Query().Get("api-version")
		if version == "" {
			// Azure answers an unknown or missing API version with 404.
			writeError(w, http.StatusNotFound, "Resource not found", "invalid_request_error", "404")
			return true
		}
		if s.Key != "" && r.Header.Get("api-key") != s.Key {
			s.unauthorized(w, r.Header.Get("api-key"))
			return true
		}
	} else if s.Key != "" && r.Header.Get("Authorization") != "Bearer "+s.Key {
		s.unauthorized(w, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		return true
	}
	key := r.Header.Get("api-key")
	if !azure {
		key = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}

	parts := strings.Split(strings.TrimPrefix(rest, "/"), "/")
	switch {
	case r.Method == http.MethodPost && rest == "/files":
		s.uploadFile(w, r)
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "files":
		s.fileObject(w, parts[1])
	case r.Method == http.MethodGet && len(parts) == 3 && parts[0] == "files" && parts[2] == "content":
		s.fileContent(w, parts[1])
	case r.Method == http.MethodDelete && len(parts) == 2 && parts[0] == "files":
		s.deleteFile(w, parts[1])
	case r.Method == http.MethodPost && rest == "/batches":
		s.createBatch(w, r, azure, version, key)
	case r.Method == http.MethodGet && rest == "/batches":
		s.listBatches(w, r)
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "batches":
		s.retrieveBatch(w, parts[1])
	case r.Method == http.MethodPost && len(parts) == 3 && parts[0] == "batches" && parts[2] == "cancel":
		s.cancelBatch(w, parts[1])
	default:
		writeError(w, http.StatusNotFound, "no route "+r.Method+" "+r.URL.Path, "invalid_request_error", "")
	}
	return true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// token is a deterministic hex id for the n-th thing of a kind.
func token(kind string, n int, salt string) string {
	h := fnv.New128a()
	_, _ = fmt.Fprintf(h, "%s\x00%d\x00%s", kind, n, salt)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// addFile stores a file; st.mu must be held.
func (st *batchStore) addFile(name, purpose string, data []byte, at time.Time) *storedFile {
	if st.files == nil {
		st.files = map[string]*storedFile{}
	}
	st.nfiles++
	f := &storedFile{id: "file-" + token("file", st.nfiles, name)[:24], name: name, purpose: purpose, data: data, created: at.Unix()}
	st.files[f.id] = f
	return f
}

func (f *storedFile) object() map[string]any {
	return map[string]any{
		"object":         "file",
		"id":             f.id,
		"bytes":          len(f.data),
		"created_at":     f.created,
		"filename":       f.name,
		"purpose":        f.purpose,
		"status":         "processed",
		"status_details": nil,
	}
}

func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseMultipartForm(32 << 20); err != nil {
		writeError(w, http.StatusBadRequest, "the body is not multipart/form-data: "+err.Error(), "invalid_request_error", "")
		return
	}
	defer func() { _ = r.MultipartForm.RemoveAll() }()
	purpose := r.FormValue("purpose")
	if purpose == "" {
		writeError(w, http.StatusBadRequest, "Missing required parameter: 'purpose'.", "invalid_request_error", "missing_required_parameter")
		return
	}
	part, header, err := r.FormFile("file")
	if err != nil {
		writeError(w, http.StatusBadRequest, "Missing required parameter: 'file'.", "invalid_request_error", "missing_required_parameter")
		return
	}
	defer part.Close()
	data, err := io.ReadAll(part)
	if err != nil {
		writeError(w, http.StatusBadRequest, "cannot read the file: "+err.Error(), "invalid_request_error", "")
		return
	}
	st := &s.batch
	st.mu.Lock()
	f := st.addFile(header.Filename, purpose, data, s.now())
	obj := f.object()
	st.mu.Unlock()
	s.count(func(st *Stats) { st.FilesUploaded++ })
	writeJSON(w, obj)
}

func noFile(w http.ResponseWriter, id string) {
	writeError(w, http.StatusNotFound, "No such File object: "+id, "invalid_request_error", "")
}

func (s *Server) fileObject(w http.ResponseWriter, id string) {
	st := &s.batch
	st.mu.Lock()
	f := st.files[id]
	var obj map[string]any
	if f != nil {
		obj = f.object()
	}
	st.mu.Unlock()
	if f == nil {
		noFile(w, id)
		return
	}
	writeJSON(w, obj)
}

func (s *Server) fileContent(w http.ResponseWriter, id string) {
	st := &s.batch
	st.mu.Lock()
	f := st.files[id]
	st.mu.Unlock()
	if f == nil {
		noFile(w, id)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(f.data) // never modified once stored
}

func (s *Server) deleteFile(w http.ResponseWriter, id string) {
	st := &s.batch
	st.mu.Lock()
	_, ok := st.files[id]
	delete(st.files, id)
	st.mu.Unlock()
	if !ok {
		noFile(w, id)
		return
	}
	writeJSON(w, map[string]any{"id": id, "object": "file", "deleted": true})
}

// chatEndpoints are the batch endpoints the fake serves: OpenAI's, and
// Azure's two spellings.
func chatEndpoint(endpoint string, azure bool) bool {
	return endpoint == "/v1/chat/completions" || azure && endpoint == "/chat/completions"
}

func (s *Server) createBatch(w http.ResponseWriter, r *http.Request, azure bool, version, key string) {
	var body struct {
		InputFileID      string         `json:"input_file_id"`
		Endpoint         string         `json:"endpoint"`
		CompletionWindow string         `json:"completion_window"`
		Metadata         map[string]any `json:"metadata"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "request body is not JSON: "+err.Error(), "invalid_request_error", "")
		return
	}
	switch {
	case !chatEndpoint(body.Endpoint, azure):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid value for 'endpoint': %q (this fake serves chat completions only).", body.Endpoint), "invalid_request_error", "invalid_value")
		return
	case body.CompletionWindow != "24h":
		writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid value for 'completion_window': %q. Supported values are: '24h'.", body.CompletionWindow), "invalid_request_error", "invalid_value")
		return
	}

	st := &s.batch
	st.work.Lock()
	defer st.work.Unlock()
	now := s.now()
	st.mu.Lock()
	f := st.files[body.InputFileID]
	var data []byte
	if f != nil {
		data = f.data
	}
	n := len(st.batches) + 1
	st.mu.Unlock()
	switch {
	case f == nil:
		noFile(w, body.InputFileID)
		return
	case f.purpose != "batch":
		writeError(w, http.StatusBadRequest, fmt.Sprintf("The file %s has purpose %q, not 'batch'.", f.id, f.purpose), "invalid_request_error", "invalid_value")
		return
	}

	lines, count, errs := parseBatchFile(data, body.Endpoint, azure)
	b := &batch{
		info: BatchInfo{
			N: n, ID: "batch_" + token("batch", n, body.InputFileID), InputFileID: f.id,
			Endpoint: body.Endpoint, Azure: azure, APIVersion: version,
			Status: BatchValidating, Metadata: body.Metadata, Lines: count,
		},
		window: body.CompletionWindow,
		key:    key,
		lines:  lines,
		errs:   errs,
	}
	if s.BatchEnd != nil {
		info := b.info
		info.Metadata = maps.Clone(info.Metadata)
		b.end = s.BatchEnd(info)
	}
	if b.end.Status == BatchFailed && len(b.errs) == 0 {
		code, msg := b.end.Code, b.end.Message
		if code == "" {
			code, msg = "token_limit_exceeded", "Enqueued token limit reached. Please try again once some in_progress batches have been completed."
		}
		b.errs = []batchError{{Code: code, Message: msg}}
	}
	if len(b.errs) > 0 {
		b.end = BatchEnd{Status: BatchFailed}
	}
	d := s.BatchDelay
	b.created = now
	b.validEnd = now.Add(d / 5)
	b.runEnd = now.Add(d * 4 / 5)
	b.endAt = now.Add(d)
	if b.end.Status == BatchExpired {
		b.runEnd = b.endAt
	}

	st.mu.Lock()
	if st.byID == nil {
		st.byID = map[string]*batch{}
	}
	st.batches = append(st.batches, b)
	st.byID[b.info.ID] = b
	obj := b.object()
	st.mu.Unlock()
	s.count(func(st *Stats) { st.Batches++ })
	writeJSON(w, obj)
}

// parseBatchFile validates a batch input file as OpenAI does: every
// non-blank line a JSON object with a unique custom_id, method POST, the
// batch's url (Azure: either spelling) and a body, all bodies for one
// model. It returns the lines, how many there are, and the errors.
func parseBatchFile(data []byte, endpoint string, azure bool) ([]inputLine, int, []batchError) {
	var lines []inputLine
	var errs []batchError
	seen := map[string]bool{}
	model := ""
	count := 0
	for i, text := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(text) == "" {
			continue
		}
		count++
		n := i + 1
		fail := func(code, msg, param string) {
			e := batchError{Code: code, Message: msg, Line: &n}
			if param != "" {
				e.Param = &param
			}
			errs = append(errs, e)
		}
		var l struct {
			CustomID *string        `json:"custom_id"`
			Method   string         `json:"method"`
			URL      string         `json:"url"`
			Body     map[string]any `json:"body"`
		}
		if err := json.Unmarshal([]byte(text), &l); err != nil {
			fail("invalid_json_line", "This line is not parseable as valid JSON.", "")
			continue
		}
		var raw struct {
			Body json.RawMessage `json:"body"`
		}
		_ = json.Unmarshal([]byte(text), &raw)
		m, _ := l.Body["model"].(string)
		switch {
		case l.CustomID == nil || *l.CustomID == "":
			fail("missing_required_parameter", "Missing required parameter: 'custom_id'.", "custom_id")
		case l.Method == "":
			fail("missing_required_parameter", "Missing required parameter: 'method'.", "method")
		case l.Method != http.MethodPost:
			fail("invalid_value", fmt.Sprintf("Invalid value for 'method': %q. Supported values are: 'POST'.", l.Method), "method")
		case !(l.URL == endpoint || azure && chatEndpoint(l.URL, true)):
			fail("url_mismatch", fmt.Sprintf("The provided URL '%s' does not match the batch endpoint '%s'.", l.URL, endpoint), "url")
		case l.Body == nil:
			fail("missing_required_parameter", "Missing required parameter: 'body'.", "body")
		case seen[*l.CustomID]:
			fail("duplicate_custom_id", "The custom_id for this request is a duplicate of another request. The custom_id parameter must be unique for each request in a batch.", "custom_id")
		case model != "" && m != model:
			fail("model_mismatch", fmt.Sprintf("The provided model '%s' does not match the model of the other requests of the batch ('%s').", m, model), "body.model")
		default:
			seen[*l.CustomID] = true
			model = m
			lines = append(lines, inputLine{customID: *l.CustomID, body: raw.Body})
		}
	}
	if count == 0 {
		errs = append(errs, batchError{Code: "empty_file", Message: "The batch input file is empty."})
	}
	return lines, count, errs
}

// answerable is how many lines the batch answers before it ends.
func (b *batch) answerable() int {
	switch b.end.Status {
	case BatchFailed:
		return 0
	case BatchExpired:
		return min(max(b.end.Answered, 0), len(b.lines))
	}
	return len(b.lines)
}

// statusAt is the batch's status at t.
func (b *batch) statusAt(t time.Time) string {
	if !b.cancelAt.IsZero() {
		if t.Before(b.cancelEnd) {
			return BatchCancelling
		}
		return BatchCancelled
	}
	switch {
	case t.Before(b.validEnd):
		return BatchValidating
	case b.end.Status == BatchFailed:
		return BatchFailed
	case t.Before(b.runEnd):
		return BatchInProgress
	case b.end.Status == BatchExpired:
		return BatchExpired
	case t.Before(b.endAt):
		return BatchFinalizing
	}
	return BatchCompleted
}

// dueAt is how many lines are answered by t.
func (b *batch) dueAt(t time.Time) int {
	if !b.cancelAt.IsZero() && b.cancelAt.Before(t) {
		t = b.cancelAt
	}
	k := b.answerable()
	switch {
	case k == 0 || t.Before(b.validEnd):
		return 0
	case !t.Before(b.runEnd):
		return k
	}
	return int(float64(k) * float64(t.Sub(b.validEnd)) / float64(b.runEnd.Sub(b.validEnd)))
}

func terminal(status string) bool {
	switch status {
	case BatchCompleted, BatchFailed, BatchExpired, BatchCancelled:
		return true
	}
	return false
}

// advance brings b up to now: it answers the lines due and, at the end,
// writes the output and error files. st.work must be held.
func (s *Server) advance(b *batch, now time.Time) {
	st := &s.batch
	st.mu.Lock()
	if now.Before(b.seen) {
		now = b.seen // a test's clock went back
	}
	b.seen = now
	from := b.done
	to := max(from, b.dueAt(now))
	lines := b.lines[from:to]
	id, key, azure, version := b.info.ID, b.key, b.info.Azure, b.info.APIVersion
	st.mu.Unlock()

	results := make([]lineResult, len(lines))
	for i, l := range lines {
		results[i] = s.batchLine(Request{At: now, Azure: azure, APIVersion: version, SentKey: key, Batch: id, CustomID: l.customID}, l)
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	b.results = append(b.results, results...)
	b.done = to
	for _, r := range results {
		switch {
		case r.skip:
		case r.status == http.StatusOK:
			b.info.Completed++
		default:
			b.info.Failed++
		}
	}
	b.info.Status = b.statusAt(now)
	if terminal(b.info.Status) && !b.ended {
		b.ended = true
		s.writeResults(b, now)
	}
}

// batchLine answers one line of a batch.
func (s *Server) batchLine(req Request, l inputLine) lineResult {
	s.count(func(st *Stats) { st.BatchLines++ })
	res := lineResult{customID: l.customID}
	fault := LineAnswered
	if s.BatchLineFault != nil {
		fault = s.BatchLineFault(l.customID, l.body)
	}
	if fault != LineAnswered {
		s.count(func(st *Stats) { st.Injected++ })
	}
	switch fault {
	case ErrorLine:
		res.code, res.message = "server_error", "The server had an error while processing your request."
		return res
	case ServerErrorLine:
		res.status, res.body = http.StatusInternalServerError, errorBody("The server had an error while processing your request.", "server_error", "")
		return res
	case SkipLine:
		res.skip = true
		return res
	}
	status, body, ok := s.answerBody(req, l.body)
	res.status, res.body, res.skip = status, body, !ok
	return res
}

// answerBody answers one chat request body as the chat endpoint would,
// but in a file: the status code and response body, or !ok when no answer
// comes (the Hang fault). req carries what the URL and headers would
// (Azure, APIVersion, SentKey) and the batch line; an Azure line names its
// deployment in the body's model. It is counted and faulted like a
// synchronous request, but not charged to the RPM and TPM quotas and not
// delayed by Latency.
func (s *Server) answerBody(req Request, raw []byte) (status int, body []byte, ok bool) {
	var cr chatRequest
	if err := json.Unmarshal(raw, &cr); err != nil {
		return http.StatusBadRequest, errorBody("request body is not JSON: "+err.Error(), "invalid_request_error", ""), true
	}
	if err := s.read(&req, &cr); err != nil {
		return http.StatusBadRequest, errorBody(err.Error(), "invalid_request_error", ""), true
	}
	if req.Azure {
		req.Deployment = req.Model
	}

	fault := s.take(&req)
	const serverError = "The server had an error while processing your request."
	switch fault {
	case Hang:
		return 0, nil, false
	case ServerError:
		return http.StatusInternalServerError, errorBody(serverError, "server_error", ""), true
	case Throttle:
		return http.StatusTooManyRequests, errorBody("Rate limit reached. Please retry after the time in Retry-After.", "rate_limit_exceeded", "429"), true
	case PromptFilter:
		return http.StatusBadRequest, errorBody("The response was filtered due to the prompt triggering content management policy.", "invalid_request_error", "content_filter"), true
	case Unauthorized:
		s.count(func(st *Stats) { st.Unauthorized++ })
		return http.StatusUnauthorized, errorBody("Incorrect API key provided: "+s.echo(&req)+".", "invalid_request_error", "invalid_api_key"), true
	case BadRequest:
		return http.StatusBadRequest, errorBody("Unrecognized request argument supplied: max_completion_tokens", "invalid_request_error", ""), true
	case MalformedBody:
		b, _ := json.Marshal(`{"id": "chatcmpl-1", "choices": [`)
		return http.StatusOK, b, true
	case EchoServerError:
		return http.StatusInternalServerError, errorBody("The server had an error processing a request with key "+s.echo(&req)+".", "server_error", ""), true
	case EchoClientError:
		return http.StatusConflict, errorBody("Another request with key "+s.echo(&req)+" is in progress.", "invalid_request_error", ""), true
	case EchoBadRequest:
		return http.StatusBadRequest, errorBody("Unrecognized request argument supplied by key "+s.echo(&req)+".", "invalid_request_error", ""), true
	case EchoStatusLine:
		// A file has no status line: the key is the error message.
		return http.StatusInternalServerError, errorBody(s.echo(&req), "server_error", ""), true
	case EchoMalformed:
		b, _ := json.Marshal(s.echo(&req) + "\r\n\r\n")
		return http.StatusOK, b, true
	case Redirect:
		return http.StatusTemporaryRedirect, errorBody("Temporary Redirect to "+s.RedirectTo+"/v1/chat/completions", "invalid_request_error", ""), true
	}
	b, err := json.Marshal(s.completion(&req, fault))
	if err != nil {
		return http.StatusInternalServerError, errorBody(serverError+" "+err.Error(), "server_error", ""), true
	}
	return http.StatusOK, b, true
}

// errorBody is the body writeError writes.
func errorBody(msg, typ, code string) []byte {
	e := map[string]any{"message": msg, "type": typ}
	if code != "" {
		e["code"] = code
	}
	b, _ := json.Marshal(map[string]any{"error": e})
	return b
}

// writeResults writes the output and error files of an ended batch, each
// in a shuffled order (seeded by the batch's number): 200 responses to the
// output file, the other responses and the error lines to the error file,
// and for an expired batch every line not answered as an error line with
// code batch_expired. st.mu must be held.
func (s *Server) writeResults(b *batch, now time.Time) {
	type response struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	}
	type lineError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	type line struct {
		ID       string     `json:"id"`
		CustomID string     `json:"custom_id"`
		Response *response  `json:"response"`
		Error    *lineError `json:"error"`
	}
	var out, bad [][]byte
	for i, r := range b.results {
		if r.skip {
			continue
		}
		l := line{ID: "batch_req_" + token("line", i, b.info.ID), CustomID: r.customID}
		if r.status == 0 {
			l.Error = &lineError{Code: r.code, Message: r.message}
		} else {
			l.Response = &response{StatusCode: r.status, RequestID: token("request", i, b.info.ID), Body: r.body}
		}
		j, _ := json.Marshal(l)
		if r.status == http.StatusOK {
			out = append(out, j)
		} else {
			bad = append(bad, j)
		}
	}
	if b.info.Status == BatchExpired {
		for i, in := range b.lines[b.done:] {
			l := line{
				ID: "batch_req_" + token("line", b.done+i, b.info.ID), CustomID: in.customID,
				Error: &lineError{Code: "batch_expired", Message: "This request could not be executed before the completion window expired."},
			}
			j, _ := json.Marshal(l)
			bad = append(bad, j)
			b.info.Failed++
		}
	}
	rng := rand.New(rand.NewPCG(uint64(b.info.N), 0x6261746368))
	st := &s.batch
	for _, f := range []struct {
		lines [][]byte
		name  string
		id    *string
	}{{out, "output", &b.info.OutputFileID}, {bad, "error", &b.info.ErrorFileID}} {
		if len(f.lines) == 0 {
			continue
		}
		rng.Shuffle(len(f.lines), func(i, j int) { f.lines[i], f.lines[j] = f.lines[j], f.lines[i] })
		var data []byte
		for _, l := range f.lines {
			data = append(append(data, l...), '\n')
		}
		*f.id = st.addFile(b.info.ID+"_"+f.name+".jsonl", "batch_output", data, now).id
	}
}

// object is the Batch object as OpenAI writes it, absent times and files
// as null. st.mu must be held.
func (b *batch) object() map[string]any {
	unix := func(t time.Time) *int64 { u := t.Unix(); return &u }
	var inProgress, finalizing, completed, failed, expired, cancelling, cancelled *int64
	// reached says whether the batch had got to t when it was last seen
	// (or cancelled).
	horizon := b.seen
	if !b.cancelAt.IsZero() && b.cancelAt.Before(horizon) {
		horizon = b.cancelAt
	}
	reached := func(t time.Time) bool { return !b.seen.IsZero() && !t.After(horizon) }
	status := b.info.Status
	if b.end.Status != BatchFailed && reached(b.validEnd) {
		inProgress = unix(b.validEnd)
	}
	if (b.end.Status == "" || b.end.Status == BatchCompleted) && reached(b.runEnd) {
		finalizing = unix(b.runEnd)
	}
	switch status {
	case BatchCompleted:
		completed = unix(b.endAt)
	case BatchFailed:
		failed = unix(b.validEnd)
	case BatchExpired:
		expired = unix(b.endAt)
	case BatchCancelled:
		cancelled = unix(b.cancelEnd)
	}
	if !b.cancelAt.IsZero() {
		cancelling = unix(b.cancelAt)
	}
	var errs any
	total := len(b.lines)
	if len(b.errs) > 0 {
		if status != BatchValidating {
			errs = map[string]any{"object": "list", "data": b.errs}
		}
		total = 0
	}
	fileID := func(id string) any {
		if id == "" {
			return nil
		}
		return id
	}
	return map[string]any{
		"id":                b.info.ID,
		"object":            "batch",
		"endpoint":          b.info.Endpoint,
		"errors":            errs,
		"input_file_id":     b.info.InputFileID,
		"completion_window": b.window,
		"status":            status,
		"output_file_id":    fileID(b.info.OutputFileID),
		"error_file_id":     fileID(b.info.ErrorFileID),
		"created_at":        b.created.Unix(),
		"in_progress_at":    inProgress,
		"expires_at":        b.created.Add(24 * time.Hour).Unix(),
		"finalizing_at":     finalizing,
		"completed_at":      completed,
		"failed_at":         failed,
		"expired_at":        expired,
		"cancelling_at":     cancelling,
		"cancelled_at":      cancelled,
		"request_counts":    map[string]int{"total": total, "completed": b.info.Completed, "failed": b.info.Failed},
		"metadata":          b.info.Metadata,
	}
}

// lookup finds a batch, or answers 404.
func (s *Server) lookup(w http.ResponseWriter, id string) *batch {
	st := &s.batch
	st.mu.Lock()
	b := st.byID[id]
	st.mu.Unlock()
	if b == nil {
		writeError(w, http.StatusNotFound, "No batch found with id '"+id+"'.", "invalid_request_error", "")
	}
	return b
}

func (s *Server) retrieveBatch(w http.ResponseWriter, id string) {
	b := s.lookup(w, id)
	if b == nil {
		return
	}
	st := &s.batch
	st.work.Lock()
	s.advance(b, s.now())
	st.work.Unlock()
	st.mu.Lock()
	obj := b.object()
	st.mu.Unlock()
	writeJSON(w, obj)
}

func (s *Server) cancelBatch(w http.ResponseWriter, id string) {
	b := s.lookup(w, id)
	if b == nil {
		return
	}
	st := &s.batch
	st.work.Lock()
	defer st.work.Unlock()
	now := s.now()
	s.advance(b, now) // the lines done so far stay done
	st.mu.Lock()
	defer st.mu.Unlock()
	switch b.info.Status {
	case BatchValidating, BatchInProgress, BatchFinalizing:
		b.cancelAt, b.cancelEnd = now, now.Add(s.BatchDelay/5)
		b.info.Status = BatchCancelling
	case BatchCancelling:
	default:
		writeError(w, http.StatusConflict, fmt.Sprintf("Cannot cancel a batch with status '%s'.", b.info.Status), "invalid_request_error", "")
		return
	}
	writeJSON(w, b.object())
}

func (s *Server) listBatches(w http.ResponseWriter, r *http.Request) {
	limit := 20
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, "Invalid 'limit': "+v+". Expected an integer between 1 and 100.", "invalid_request_error", "invalid_value")
			return
		}
		limit = n
	}
	after := r.URL.Query().Get("after")
	st := &s.batch
	st.work.Lock()
	st.mu.Lock()
	all := append([]*batch(nil), st.batches...)
	st.mu.Unlock()
	now := s.now()
	for _, b := range all {
		s.advance(b, now)
	}
	st.work.Unlock()

	// Newest first, from the one after the cursor.
	start := len(all) - 1
	if after != "" {
		i := len(all) - 1
		for i >= 0 && all[i].info.ID != after {
			i--
		}
		if i < 0 {
			writeError(w, http.StatusBadRequest, "No batch found with id '"+after+"' for 'after'.", "invalid_request_error", "invalid_value")
			return
		}
		start = i - 1
	}
	st.mu.Lock()
	data := []any{}
	var first, last any
	i := start
	for ; i >= 0 && len(data) < limit; i-- {
		data = append(data, all[i].object())
		if first == nil {
			first = all[i].info.ID
		}
		last = all[i].info.ID
	}
	st.mu.Unlock()
	writeJSON(w, map[string]any{"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": i >= 0})
}
