package fakellm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/fakellm"
)

const testKey = "sk-test-batch-0123456789"

func start(t *testing.T, s *fakellm.Server) *fakellm.Server {
	t.Helper()
	if s.Key == "" {
		s.Key = testKey
	}
	return s.StartTB(t)
}

func openaiClient(s *fakellm.Server) *openai.Client {
	cfg := openai.DefaultConfig(testKey)
	cfg.BaseURL = s.URL() + "/v1"
	return openai.NewClientWithConfig(cfg)
}

func azureClient(s *fakellm.Server) *openai.Client {
	cfg := openai.DefaultAzureConfig(testKey, s.URL())
	cfg.APIVersion = "2024-10-21"
	return openai.NewClientWithConfig(cfg)
}

// clock is a test's batch clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

var t0 = time.Unix(1_700_000_000, 0)

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// at sets the clock to t0+d.
func (c *clock) at(d time.Duration) {
	c.mu.Lock()
	c.t = t0.Add(d)
	c.mu.Unlock()
}

// chatBody is a request of the enricher's shape for rows: the rows as a
// JSON array in the user message, the answer's JSON schema.
func chatBody(model string, rows []fakellm.Row) openai.ChatCompletionRequest {
	user, _ := json.Marshal(rows)
	schema := json.RawMessage(`{"type":"object","properties":{"id":{"type":"array","items":{"type":"string"}},
		"sentiment":{"type":"array","items":{"type":"string","enum":["negative","neutral","positive"]}},"score":{"type":"array","items":{"type":"integer"}}},
		"required":["id","sentiment","score"],"additionalProperties":false}`)
	return openai.ChatCompletionRequest{
		Model: model,
		Messages: []openai.ChatCompletionMessage{
			{Role: openai.ChatMessageRoleSystem, Content: "Classify the sentiment of each post."},
			{Role: openai.ChatMessageRoleUser, Content: string(user)},
		},
		MaxTokens: 200, //lint:ignore SA1019 max_tokens is what the enricher sends to non-reasoning models
		ResponseFormat: &openai.ChatCompletionResponseFormat{
			Type:       openai.ChatCompletionResponseFormatTypeJSONSchema,
			JSONSchema: &openai.ChatCompletionResponseFormatJSONSchema{Name: "answer", Schema: schema, Strict: true},
		},
	}
}

// rowsFor is two rows for a line.
func rowsFor(id string) []fakellm.Row {
	return []fakellm.Row{
		{ID: id + "-a", Text: "post " + id + " a: lovely weather"},
		{ID: id + "-b", Text: "post " + id + " b: awful traffic"},
	}
}

// openaiFile is a batch input of one chat request per custom id.
func openaiFile(model string, ids ...string) []byte {
	var up openai.UploadBatchFileRequest
	for _, id := range ids {
		up.AddChatCompletion(id, chatBody(model, rowsFor(id)))
	}
	return up.MarshalJSONL()
}

func upload(t *testing.T, c *openai.Client, data []byte) openai.File {
	t.Helper()
	f, err := c.CreateFileBytes(context.Background(), openai.FileBytesRequest{Name: "input.jsonl", Bytes: data, Purpose: openai.PurposeBatch})
	require.NoError(t, err)
	return f
}

func create(t *testing.T, c *openai.Client, fileID string, endpoint openai.BatchEndpoint) openai.Batch {
	t.Helper()
	b, err := c.CreateBatch(context.Background(), openai.CreateBatchRequest{InputFileID: fileID, Endpoint: endpoint, Metadata: map[string]any{"job": "sentiment"}})
	require.NoError(t, err)
	return b.Batch
}

func retrieve(t *testing.T, c *openai.Client, id string) openai.Batch {
	t.Helper()
	b, err := c.RetrieveBatch(context.Background(), id)
	require.NoError(t, err)
	return b.Batch
}

// requireEndedUnfinished checks that b ended with status at the time
// endedAt holds, want, and never finalized or completed.
func requireEndedUnfinished(t *testing.T, b openai.Batch, status string, endedAt *int, want int) {
	t.Helper()
	require.Equal(t, status, b.Status)
	require.NotNil(t, endedAt)
	assert.Equal(t, want, *endedAt)
	assert.Nil(t, b.CompletedAt)
	assert.Nil(t, b.FinalizingAt)
}

// outLine is a line of an output or error file.
type outLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// content reads a file's lines by custom_id, and their custom_ids in file
// order; a nil id reads nothing.
func content(t *testing.T, c *openai.Client, id *string) (map[string]outLine, []string) {
	t.Helper()
	if id == nil {
		return nil, nil
	}
	raw, err := c.GetFileContent(context.Background(), *id)
	require.NoError(t, err)
	defer raw.Close()
	data, err := io.ReadAll(raw)
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(string(data), "\n"), "a JSONL file ends its last line")
	byID := map[string]outLine{}
	var order []string
	for _, text := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		var l outLine
		require.NoError(t, json.Unmarshal([]byte(text), &l), text)
		require.True(t, strings.HasPrefix(l.ID, "batch_req_"), l.ID)
		require.NotContains(t, byID, l.CustomID, "custom_id %s twice", l.CustomID)
		byID[l.CustomID] = l
		order = append(order, l.CustomID)
	}
	return byID, order
}

func apiStatus(t *testing.T, err error) int {
	t.Helper()
	var ae *openai.APIError
	require.ErrorAs(t, err, &ae)
	return ae.HTTPStatusCode
}

func customIDs(reqs []fakellm.Request) []string {
	var ids []string
	for _, r := range reqs {
		if r.Batch != "" {
			ids = append(ids, r.CustomID)
		}
	}
	return ids
}

func TestBatchOpenAIRoundTripAnswersLikeTheChatEndpoint(t *testing.T) {
	t.Parallel()
	srv := start(t, &fakellm.Server{})
	c := openaiClient(srv)
	ctx := context.Background()
	ids := []string{"req-0", "req-1", "req-2"}
	data := openaiFile("gpt-4o-mini", ids...)

	f := upload(t, c, data)
	assert.True(t, strings.HasPrefix(f.ID, "file-"), f.ID)
	assert.Equal(t, len(data), f.Bytes)
	assert.Equal(t, "input.jsonl", f.FileName)
	assert.Equal(t, "batch", f.Purpose)
	assert.Equal(t, "processed", f.Status)
	assert.NotZero(t, f.CreatedAt)

	b := create(t, c, f.ID, openai.BatchEndpointChatCompletions)
	assert.True(t, strings.HasPrefix(b.ID, "batch_"), b.ID)
	assert.Equal(t, "batch", b.Object)
	assert.Equal(t, "validating", b.Status)
	assert.Equal(t, f.ID, b.InputFileID)
	assert.Equal(t, "24h", b.CompletionWindow)
	assert.Equal(t, openai.BatchEndpointChatCompletions, b.Endpoint)
	assert.Equal(t, openai.BatchRequestCounts{Total: 3}, b.RequestCounts)
	assert.Nil(t, b.OutputFileID)
	assert.Nil(t, b.ErrorFileID)
	assert.Nil(t, b.InProgressAt)
	assert.Nil(t, b.CompletedAt)
	assert.Nil(t, b.Errors)
	require.NotNil(t, b.ExpiresAt)
	assert.Equal(t, b.CreatedAt+24*3600, *b.ExpiresAt)
	assert.Equal(t, map[string]any{"job": "sentiment"}, b.Metadata)
	assert.Zero(t, srv.Stats().Requests, "nothing is answered before the batch is looked at")

	// BatchDelay 0: the first retrieve finds it completed.
	b = retrieve(t, c, b.ID)
	require.Equal(t, "completed", b.Status)
	assert.Equal(t, openai.BatchRequestCounts{Total: 3, Completed: 3}, b.RequestCounts)
	assert.NotNil(t, b.InProgressAt)
	assert.NotNil(t, b.FinalizingAt)
	assert.NotNil(t, b.CompletedAt)
	assert.Nil(t, b.FailedAt)
	assert.Nil(t, b.ErrorFileID, "no error file when no line failed")
	require.NotNil(t, b.OutputFileID)
	assert.Equal(t, map[string]any{"job": "sentiment"}, b.Metadata)

	out, _ := content(t, c, b.OutputFileID)
	require.Len(t, out, 3)
	for _, id := range ids {
		l, ok := out[id]
		require.True(t, ok, "custom_id %s has a line", id)
		require.Nil(t, l.Error)
		require.NotNil(t, l.Response)
		assert.Equal(t, http.StatusOK, l.Response.StatusCode)
		assert.NotEmpty(t, l.Response.RequestID)
		var got openai.ChatCompletionResponse
		require.NoError(t, json.Unmarshal(l.Response.Body, &got))

		// The same request on the chat endpoint answers the same.
		want, err := c.CreateChatCompletion(ctx, chatBody("gpt-4o-mini", rowsFor(id)))
		require.NoError(t, err)
		require.Len(t, got.Choices, 1)
		assert.Equal(t, "chat.completion", got.Object)
		assert.Equal(t, "gpt-4o-mini", got.Model)
		assert.Equal(t, want.Choices[0].Message.Content, got.Choices[0].Message.Content, id)
		assert.Equal(t, want.Choices[0].FinishReason, got.Choices[0].FinishReason)
		assert.Equal(t, want.Usage, got.Usage)
		for _, row := range rowsFor(id) {
			assert.Contains(t, got.Choices[0].Message.Content, row.ID, "the line's own rows are answered")
		}
	}

	reqs := srv.Requests()
	require.Len(t, reqs, 6) // three lines, then three synchronous requests
	assert.ElementsMatch(t, ids, customIDs(reqs))
	for _, r := range reqs[:3] {
		assert.Equal(t, b.ID, r.Batch)
		assert.False(t, r.Azure)
		assert.Equal(t, "gpt-4o-mini", r.Model)
		assert.Equal(t, testKey, r.SentKey)
		assert.Len(t, r.Rows, 2)
	}
	for _, r := range reqs[3:] {
		assert.Empty(t, r.Batch)
		assert.Empty(t, r.CustomID)
	}
	st := srv.Stats()
	assert.Equal(t, 1, st.Batches)
	assert.Equal(t, 3, st.BatchLines)
	assert.Equal(t, 1, st.FilesUploaded, "output files are not uploads")
	assert.Equal(t, 6, st.Answered)
	assert.Equal(t, 12, st.RowsAnswered)

	infos := srv.Batches()
	require.Len(t, infos, 1)
	assert.Equal(t, fakellm.BatchInfo{
		N: 1, ID: b.ID, InputFileID: f.ID, Endpoint: "/v1/chat/completions", Status: "completed",
		Metadata: map[string]any{"job": "sentiment"}, Lines: 3, Completed: 3, OutputFileID: *b.OutputFileID,
	}, infos[0])

	// Files can be deleted, and then are gone.
	require.NoError(t, c.DeleteFile(ctx, f.ID))
	_, err := c.GetFileContent(ctx, f.ID)
	assert.Equal(t, http.StatusNotFound, apiStatus(t, err))
	assert.Equal(t, http.StatusNotFound, apiStatus(t, c.DeleteFile(ctx, f.ID)))
	_, err = c.RetrieveBatch(ctx, "batch_nosuch")
	assert.Equal(t, http.StatusNotFound, apiStatus(t, err))
}

func TestBatchAzureRoundTripNamesTheDeploymentInTheBody(t *testing.T) {
	t.Parallel()
	srv := start(t, &fakellm.Server{})
	c := azureClient(srv)
	ctx := context.Background()
	// Azure's lines say /chat/completions; /v1/chat/completions is
	// accepted too.
	var up openai.UploadBatchFileRequest
	for i, url := range []openai.BatchEndpoint{"/chat/completions", "/v1/chat/completions"} {
		id := fmt.Sprintf("az-%d", i)
		up.Lines = append(up.Lines, openai.BatchChatCompletionRequest{CustomID: id, Body: chatBody("gpt-4o-batch", rowsFor(id)), Method: "POST", URL: url})
	}
	f := upload(t, c, up.MarshalJSONL())
	b := create(t, c, f.ID, "/chat/completions")
	assert.Equal(t, "validating", b.Status)
	b = retrieve(t, c, b.ID)
	require.Equal(t, "completed", b.Status)
	assert.Equal(t, 2, b.RequestCounts.Completed)
	out, _ := content(t, c, b.OutputFileID)
	require.Len(t, out, 2)

	for _, id := range []string{"az-0", "az-1"} {
		var got openai.ChatCompletionResponse
		require.NoError(t, json.Unmarshal(out[id].Response.Body, &got))
		want, err := c.CreateChatCompletion(ctx, chatBody("gpt-4o-batch", rowsFor(id)))
		require.NoError(t, err)
		assert.Equal(t, want.Choices[0].Message.Content, got.Choices[0].Message.Content)
	}
	reqs := srv.Requests()
	require.Len(t, reqs, 4)
	for _, r := range reqs {
		assert.True(t, r.Azure)
		assert.Equal(t, "gpt-4o-batch", r.Deployment)
		assert.Equal(t, "2024-10-21", r.APIVersion)
		assert.Equal(t, testKey, r.SentKey)
	}
	assert.Equal(t, []string{"az-0", "az-1"}, customIDs(reqs))
	infos := srv.Batches()
	require.Len(t, infos, 1)
	assert.True(t, infos[0].Azure)
	assert.Equal(t, "2024-10-21", infos[0].APIVersion)

	// An OpenAI line URL is not an Azure one: /chat/completions is
	// refused on the OpenAI form's endpoint.
	_, err := openaiClient(srv).CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: "/chat/completions"})
	assert.Equal(t, http.StatusBadRequest, apiStatus(t, err))
}

func TestBatchRoutesCheckKeyAndAPIVersion(t *testing.T) {
	t.Parallel()
	srv := start(t, &fakellm.Server{})
	get := func(path string, header ...string) int {
		req, err := http.NewRequest(http.MethodGet, srv.URL()+path, nil)
		require.NoError(t, err)
		for i := 0; i < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusOK, get("/openai/batches?api-version=2024-10-21", "api-key", testKey))
	assert.Equal(t, http.StatusNotFound, get("/openai/batches", "api-key", testKey), "no api-version")
	assert.Equal(t, http.StatusUnauthorized, get("/openai/batches?api-version=2024-10-21", "api-key", "wrong"))
	assert.Equal(t, http.StatusOK, get("/v1/batches", "Authorization", "Bearer "+testKey))
	assert.Equal(t, http.StatusUnauthorized, get("/v1/batches", "Authorization", "Bearer wrong"))
	assert.Equal(t, http.StatusUnauthorized, get("/v1/files/file-x/content"))
	assert.Equal(t, http.StatusNotFound, get("/v1/batches/x/y", "Authorization", "Bearer "+testKey))
	assert.Equal(t, 3, srv.Stats().Unauthorized)

	cfg := openai.DefaultConfig("sk-wrong")
	cfg.BaseURL = srv.URL() + "/v1"
	_, err := openai.NewClientWithConfig(cfg).CreateFileBytes(context.Background(), openai.FileBytesRequest{Name: "x.jsonl", Bytes: []byte("{}"), Purpose: openai.PurposeBatch})
	assert.Equal(t, http.StatusUnauthorized, apiStatus(t, err))
	assert.Zero(t, srv.Stats().FilesUploaded)
}

func TestBatchLineFaultsGoToTheErrorFile(t *testing.T) {
	t.Parallel()
	srv := start(t, &fakellm.Server{
		BatchLineFault: func(customID string, body []byte) fakellm.BatchLineFault {
			switch customID {
			case "b":
				return fakellm.ErrorLine
			case "c":
				return fakellm.ServerErrorLine
			case "d":
				return fakellm.SkipLine
			}
			return fakellm.LineAnswered
		},
		Fault: func(r *fakellm.Request) fakellm.Fault {
			switch r.CustomID {
			case "e":
				return fakellm.ServerError
			case "f":
				return fakellm.Refusal
			case "h":
				return fakellm.EchoServerError
			}
			return fakellm.None
		},
	})
	c := openaiClient(srv)
	data := openaiFile("gpt-4o-mini", "a", "b", "c", "d", "e", "f", "h")
	// g: a request the chat endpoint refuses (400): the user message is
	// not rows.
	bad := chatBody("gpt-4o-mini", nil)
	bad.Messages[1].Content = "hello"
	var up openai.UploadBatchFileRequest
	up.AddChatCompletion("g", bad)
	data = append(append(data, '\n'), up.MarshalJSONL()...)

	b := create(t, c, upload(t, c, data).ID, openai.BatchEndpointChatCompletions)
	b = retrieve(t, c, b.ID)
	require.Equal(t, "completed", b.Status, "failed lines do not fail the batch")
	assert.Equal(t, openai.BatchRequestCounts{Total: 8, Completed: 2, Failed: 5}, b.RequestCounts, "the skipped line counts neither")

	out, _ := content(t, c, b.OutputFileID)
	errs, _ := content(t, c, b.ErrorFileID)
	assert.ElementsMatch(t, []string{"a", "f"}, slices.Collect(maps.Keys(out)))
	assert.ElementsMatch(t, []string{"b", "c", "e", "g", "h"}, slices.Collect(maps.Keys(errs)))

	var refused openai.ChatCompletionResponse
	require.NoError(t, json.Unmarshal(out["f"].Response.Body, &refused))
	assert.NotEmpty(t, refused.Choices[0].Message.Refusal)

	require.Nil(t, errs["b"].Response, "an error line has no response")
	require.NotNil(t, errs["b"].Error)
	assert.Equal(t, "server_error", errs["b"].Error.Code)
	assert.NotEmpty(t, errs["b"].Error.Message)
	for id, status := range map[string]int{"c": 500, "e": 500, "g": 400, "h": 500} {
		l := errs[id]
		assert.Nil(t, l.Error, id)
		require.NotNil(t, l.Response, id)
		assert.Equal(t, status, l.Response.StatusCode, id)
		var body struct {
			Error openai.APIError `json:"error"`
		}
		require.NoError(t, json.Unmarshal(l.Response.Body, &body), id)
		assert.NotEmpty(t, body.Error.Message, id)
	}
	assert.Contains(t, string(errs["h"].Response.Body), testKey, "the echo faults echo the key the batch was created with")

	// The lines given a BatchLineFault and the one the chat logic could
	// not read were never asked of the model.
	assert.ElementsMatch(t, []string{"a", "e", "f", "h"}, customIDs(srv.Requests()))
	st := srv.Stats()
	assert.Equal(t, 8, st.BatchLines)
	assert.Equal(t, 6, st.Injected) // b, c, d, e, f, h
	assert.Equal(t, 2, st.Answered)
}

func TestBatchWhereEveryLineFailsHasOnlyAnErrorFile(t *testing.T) {
	t.Parallel()
	srv := start(t, &fakellm.Server{BatchLineFault: func(string, []byte) fakellm.BatchLineFault { return fakellm.ServerErrorLine }})
	c := azureClient(srv)
	var up openai.UploadBatchFileRequest
	up.Lines = append(up.Lines, openai.BatchChatCompletionRequest{CustomID: "x", Body: chatBody("dep", rowsFor("x")), Method: "POST", URL: "/chat/completions"})
	b := create(t, c, upload(t, c, up.MarshalJSONL()).ID, "/chat/completions")
	b = retrieve(t, c, b.ID)
	require.Equal(t, "completed", b.Status)
	assert.Nil(t, b.OutputFileID)
	require.NotNil(t, b.ErrorFileID)
	errs, _ := content(t, c, b.ErrorFileID)
	assert.Equal(t, 500, errs["x"].Response.StatusCode)
	assert.Empty(t, srv.Requests())
}

func TestBatchProgressesOverBatchDelay(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv := start(t, &fakellm.Server{BatchDelay: 10 * time.Second, Clock: clk.Now})
	c := openaiClient(srv)
	ids := []string{"l0", "l1", "l2", "l3", "l4", "l5", "l6", "l7"}
	b := create(t, c, upload(t, c, openaiFile("m", ids...)).ID, openai.BatchEndpointChatCompletions)
	created := t0.Unix()
	assert.Equal(t, created, int64(b.CreatedAt))

	clk.at(time.Second)
	b = retrieve(t, c, b.ID)
	assert.Equal(t, "validating", b.Status)
	assert.Nil(t, b.InProgressAt)

	clk.at(5 * time.Second) // validation ends at 2s; lines are answered from 2s to 8s
	b = retrieve(t, c, b.ID)
	assert.Equal(t, "in_progress", b.Status)
	require.NotNil(t, b.InProgressAt)
	assert.Equal(t, int(created+2), *b.InProgressAt)
	assert.Equal(t, openai.BatchRequestCounts{Total: 8, Completed: 4}, b.RequestCounts)
	assert.Equal(t, ids[:4], customIDs(srv.Requests()), "lines are answered in file order")
	assert.Nil(t, b.OutputFileID)

	clk.at(8 * time.Second)
	b = retrieve(t, c, b.ID)
	assert.Equal(t, "finalizing", b.Status)
	assert.Equal(t, 8, b.RequestCounts.Completed)
	require.NotNil(t, b.FinalizingAt)
	assert.Equal(t, int(created+8), *b.FinalizingAt)
	assert.Nil(t, b.OutputFileID)
	assert.Nil(t, b.CompletedAt)

	clk.at(10 * time.Second)
	b = retrieve(t, c, b.ID)
	assert.Equal(t, "completed", b.Status)
	require.NotNil(t, b.CompletedAt)
	assert.Equal(t, int(created+10), *b.CompletedAt)
	out, order := content(t, c, b.OutputFileID)
	assert.Len(t, out, 8)
	assert.NotEqual(t, ids, order, "the output is not in input order")
	assert.Len(t, srv.Requests(), 8, "each line answered once")
	assert.Equal(t, 8, srv.Stats().BatchLines)
}

func TestBatchOutputOrderIsShuffledTheSameWayEachRun(t *testing.T) {
	t.Parallel()
	var ids []string
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("row-%02d", i))
	}
	run := func() []string {
		srv := start(t, &fakellm.Server{})
		c := openaiClient(srv)
		b := create(t, c, upload(t, c, openaiFile("m", ids...)).ID, openai.BatchEndpointChatCompletions)
		b = retrieve(t, c, b.ID)
		_, order := content(t, c, b.OutputFileID)
		return order
	}
	first := run()
	assert.ElementsMatch(t, ids, first)
	assert.NotEqual(t, ids, first)
	assert.Equal(t, first, run())
}

func TestBatchOnTheWallClockTakesBatchDelay(t *testing.T) {
	t.Parallel()
	const delay = 500 * time.Millisecond
	srv := start(t, &fakellm.Server{BatchDelay: delay})
	c := openaiClient(srv)
	began := time.Now()
	b := create(t, c, upload(t, c, openaiFile("m", "p", "q", "r")).ID, openai.BatchEndpointChatCompletions)
	order := map[string]int{"validating": 0, "in_progress": 1, "finalizing": 2, "completed": 3}
	last := 0
	for b.Status != "completed" {
		time.Sleep(10 * time.Millisecond)
		b = retrieve(t, c, b.ID)
		require.Contains(t, order, b.Status)
		require.GreaterOrEqual(t, order[b.Status], last, "status went back to %s", b.Status)
		last = order[b.Status]
	}
	assert.GreaterOrEqual(t, time.Since(began), delay)
	out, _ := content(t, c, b.OutputFileID)
	assert.Len(t, out, 3)
}

func TestBatchExpiresWithTheRestAsBatchExpiredLines(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var seen []fakellm.BatchInfo
	srv := start(t, &fakellm.Server{
		BatchDelay: 10 * time.Second, Clock: clk.Now,
		BatchEnd: func(b fakellm.BatchInfo) fakellm.BatchEnd {
			seen = append(seen, b) // creations are serialised
			return fakellm.BatchEnd{Status: fakellm.BatchExpired, Answered: 2}
		},
	})
	c := openaiClient(srv)
	ids := []string{"e0", "e1", "e2", "e3"}
	b := create(t, c, upload(t, c, openaiFile("m", ids...)).ID, openai.BatchEndpointChatCompletions)
	require.Len(t, seen, 1)
	assert.Equal(t, b.ID, seen[0].ID)
	assert.Equal(t, 4, seen[0].Lines)
	assert.Equal(t, "validating", seen[0].Status)

	clk.at(6 * time.Second) // two lines over 2s..10s: one done
	b = retrieve(t, c, b.ID)
	assert.Equal(t, "in_progress", b.Status)
	assert.Equal(t, 1, b.RequestCounts.Completed)

	clk.at(10 * time.Second)
	b = retrieve(t, c, b.ID)
	requireEndedUnfinished(t, b, "expired", b.ExpiredAt, int(t0.Unix()+10))
	assert.Equal(t, openai.BatchRequestCounts{Total: 4, Completed: 2, Failed: 2}, b.RequestCounts)
	out, _ := content(t, c, b.OutputFileID)
	errs, _ := content(t, c, b.ErrorFileID)
	assert.ElementsMatch(t, []string{"e0", "e1"}, slices.Collect(maps.Keys(out)))
	assert.ElementsMatch(t, []string{"e2", "e3"}, slices.Collect(maps.Keys(errs)))
	for _, l := range errs {
		assert.Nil(t, l.Response)
		require.NotNil(t, l.Error)
		assert.Equal(t, "batch_expired", l.Error.Code)
	}
	assert.Equal(t, []string{"e0", "e1"}, customIDs(srv.Requests()))
	assert.Equal(t, "expired", srv.Batches()[0].Status)
}

func TestBatchFailsAtValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("chosen by BatchEnd", func(t *testing.T) {
		t.Parallel()
		srv := start(t, &fakellm.Server{BatchEnd: func(fakellm.BatchInfo) fakellm.BatchEnd {
			return fakellm.BatchEnd{Status: fakellm.BatchFailed}
		}})
		c := openaiClient(srv)
		b := create(t, c, upload(t, c, openaiFile("m", "x", "y")).ID, openai.BatchEndpointChatCompletions)
		assert.Equal(t, "validating", b.Status)
		assert.Nil(t, b.Errors)
		b = retrieve(t, c, b.ID)
		require.Equal(t, "failed", b.Status)
		require.NotNil(t, b.Errors)
		require.Len(t, b.Errors.Data, 1)
		assert.Equal(t, "token_limit_exceeded", b.Errors.Data[0].Code)
		assert.NotNil(t, b.FailedAt)
		assert.Nil(t, b.InProgressAt)
		assert.Nil(t, b.OutputFileID)
		assert.Nil(t, b.ErrorFileID)
		assert.Equal(t, openai.BatchRequestCounts{}, b.RequestCounts)
		assert.Empty(t, srv.Requests())
		assert.Zero(t, srv.Stats().BatchLines)
	})

	t.Run("bad lines", func(t *testing.T) {
		t.Parallel()
		srv := start(t, &fakellm.Server{})
		c := openaiClient(srv)
		good := func(id string) string {
			return string(openai.BatchChatCompletionRequest{CustomID: id, Body: chatBody("m", rowsFor(id)), Method: "POST", URL: "/v1/chat/completions"}.MarshalBatchLineItem())
		}
		lines := []string{
			good("ok"),                 // 1
			`{"custom_id": "broken", `, // 2
			good("ok"),                 // 3: duplicate
			strings.Replace(good("get"), `"method":"POST"`, `"method":"GET"`, 1),                                                                                                 // 4
			strings.Replace(good("emb"), `"url":"/v1/chat/completions"`, `"url":"/v1/embeddings"`, 1),                                                                            // 5
			`{"custom_id": "nobody", "method": "POST", "url": "/v1/chat/completions"}`,                                                                                           // 6
			strings.Replace(good("noid"), `"custom_id":"noid",`, ``, 1),                                                                                                          // 7
			string(openai.BatchChatCompletionRequest{CustomID: "other", Body: chatBody("other-model", nil), Method: "POST", URL: "/v1/chat/completions"}.MarshalBatchLineItem()), // 8
			good("fine"), // 9
		}
		b := create(t, c, upload(t, c, []byte(strings.Join(lines, "\n")+"\n")).ID, openai.BatchEndpointChatCompletions)
		b = retrieve(t, c, b.ID)
		require.Equal(t, "failed", b.Status)
		require.NotNil(t, b.Errors)
		got := map[int]string{}
		for _, e := range b.Errors.Data {
			require.NotNil(t, e.Line, e.Message)
			assert.NotEmpty(t, e.Message)
			got[*e.Line] = e.Code
		}
		assert.Equal(t, map[int]string{
			2: "invalid_json_line", 3: "duplicate_custom_id", 4: "invalid_value", 5: "url_mismatch",
			6: "missing_required_parameter", 7: "missing_required_parameter", 8: "model_mismatch",
		}, got)
		assert.Nil(t, b.OutputFileID)
		assert.Empty(t, srv.Requests())
	})

	t.Run("empty file", func(t *testing.T) {
		t.Parallel()
		srv := start(t, &fakellm.Server{})
		c := openaiClient(srv)
		b := create(t, c, upload(t, c, []byte("\n")).ID, openai.BatchEndpointChatCompletions)
		b = retrieve(t, c, b.ID)
		require.Equal(t, "failed", b.Status)
		require.Len(t, b.Errors.Data, 1)
		assert.Equal(t, "empty_file", b.Errors.Data[0].Code)
	})

	t.Run("refused at creation", func(t *testing.T) {
		t.Parallel()
		srv := start(t, &fakellm.Server{})
		c := openaiClient(srv)
		f := upload(t, c, openaiFile("m", "x"))
		_, err := c.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: "file-nosuch", Endpoint: openai.BatchEndpointChatCompletions})
		assert.Equal(t, http.StatusNotFound, apiStatus(t, err))
		_, err = c.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: openai.BatchEndpointEmbeddings})
		assert.Equal(t, http.StatusBadRequest, apiStatus(t, err))
		_, err = c.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: openai.BatchEndpointChatCompletions, CompletionWindow: "1h"})
		assert.Equal(t, http.StatusBadRequest, apiStatus(t, err))
		other, err := c.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "ft.jsonl", Bytes: openaiFile("m", "x"), Purpose: openai.PurposeFineTune})
		require.NoError(t, err)
		_, err = c.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: other.ID, Endpoint: openai.BatchEndpointChatCompletions})
		assert.Equal(t, http.StatusBadRequest, apiStatus(t, err))
		assert.Empty(t, srv.Batches())
		assert.Zero(t, srv.Stats().Batches)
	})
}

func TestBatchCancelKeepsTheLinesDone(t *testing.T) {
	t.Parallel()
	clk := newClock()
	srv := start(t, &fakellm.Server{BatchDelay: 10 * time.Second, Clock: clk.Now})
	c := openaiClient(srv)
	ctx := context.Background()
	ids := []string{"c0", "c1", "c2", "c3", "c4", "c5"}
	b := create(t, c, upload(t, c, openaiFile("m", ids...)).ID, openai.BatchEndpointChatCompletions)

	clk.at(5 * time.Second) // half of 2s..8s: three lines
	resp, err := c.CancelBatch(ctx, b.ID)
	require.NoError(t, err)
	assert.Equal(t, "cancelling", resp.Status)
	require.NotNil(t, resp.CancellingAt)
	assert.Equal(t, int(t0.Unix()+5), *resp.CancellingAt)
	assert.Equal(t, 3, resp.RequestCounts.Completed)
	resp, err = c.CancelBatch(ctx, b.ID)
	require.NoError(t, err, "cancelling again is no error")
	assert.Equal(t, "cancelling", resp.Status)

	clk.at(6 * time.Second) // cancelling takes a fifth of BatchDelay
	b = retrieve(t, c, b.ID)
	assert.Equal(t, "cancelling", b.Status)
	assert.Nil(t, b.OutputFileID)

	clk.at(20 * time.Second)
	b = retrieve(t, c, b.ID)
	requireEndedUnfinished(t, b, "cancelled", b.CancelledAt, int(t0.Unix()+7))
	assert.NotNil(t, b.InProgressAt)
	assert.Equal(t, openai.BatchRequestCounts{Total: 6, Completed: 3}, b.RequestCounts)
	out, _ := content(t, c, b.OutputFileID)
	assert.ElementsMatch(t, ids[:3], slices.Collect(maps.Keys(out)))
	assert.Nil(t, b.ErrorFileID, "the lines never started are in neither file")
	assert.Equal(t, ids[:3], customIDs(srv.Requests()))

	_, err = c.CancelBatch(ctx, b.ID)
	assert.Equal(t, http.StatusConflict, apiStatus(t, err), "a cancelled batch cannot be cancelled")
	_, err = c.CancelBatch(ctx, "batch_nosuch")
	assert.Equal(t, http.StatusNotFound, apiStatus(t, err))
}

func TestBatchListPagesNewestFirst(t *testing.T) {
	t.Parallel()
	srv := start(t, &fakellm.Server{BatchDelay: time.Hour})
	c := azureClient(srv)
	ctx := context.Background()
	var up openai.UploadBatchFileRequest
	up.Lines = append(up.Lines, openai.BatchChatCompletionRequest{CustomID: "x", Body: chatBody("dep", rowsFor("x")), Method: "POST", URL: "/chat/completions"})
	f := upload(t, c, up.MarshalJSONL())
	var ids []string
	for range 5 {
		ids = append(ids, create(t, c, f.ID, "/chat/completions").ID)
	}
	slices.Reverse(ids)

	all, err := c.ListBatch(ctx, nil, nil)
	require.NoError(t, err)
	assert.Equal(t, "list", all.Object)
	assert.False(t, all.HasMore)
	var got []string
	for _, b := range all.Data {
		got = append(got, b.ID)
		assert.Equal(t, "validating", b.Status)
	}
	assert.Equal(t, ids, got)

	two := 2
	var paged []string
	var after *string
	for pages := 0; ; pages++ {
		require.Less(t, pages, 3)
		page, err := c.ListBatch(ctx, after, &two)
		require.NoError(t, err)
		require.NotEmpty(t, page.Data)
		assert.Equal(t, page.Data[0].ID, page.FirstID)
		assert.Equal(t, page.Data[len(page.Data)-1].ID, page.LastID)
		for _, b := range page.Data {
			paged = append(paged, b.ID)
		}
		if !page.HasMore {
			assert.Len(t, page.Data, 1)
			break
		}
		assert.Len(t, page.Data, 2)
		after = &page.LastID
	}
	assert.Equal(t, ids, paged)

	nosuch := "batch_nosuch"
	_, err = c.ListBatch(ctx, &nosuch, nil)
	assert.Equal(t, http.StatusBadRequest, apiStatus(t, err))
	infos := srv.Batches()
	require.Len(t, infos, 5)
	for i, b := range infos {
		assert.Equal(t, i+1, b.N)
		assert.Equal(t, ids[4-i], b.ID)
	}
	assert.Equal(t, 5, srv.Stats().Batches)
	assert.Equal(t, 1, srv.Stats().FilesUploaded)
}

func TestBatchConcurrentPollsAnswerEachLineOnce(t *testing.T) {
	t.Parallel()
	srv := start(t, &fakellm.Server{BatchDelay: 200 * time.Millisecond})
	c := openaiClient(srv)
	var ids []string
	for i := range 30 {
		ids = append(ids, fmt.Sprintf("k%d", i))
	}
	b := create(t, c, upload(t, c, openaiFile("m", ids...)).ID, openai.BatchEndpointChatCompletions)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for {
				var status string
				if g%2 == 0 {
					r, err := c.RetrieveBatch(context.Background(), b.ID)
					if err != nil {
						errs <- err
						return
					}
					status = r.Status
				} else {
					l, err := c.ListBatch(context.Background(), nil, nil)
					if err != nil {
						errs <- err
						return
					}
					status = l.Data[0].Status
				}
				if status == "completed" {
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	b = retrieve(t, c, b.ID)
	out, _ := content(t, c, b.OutputFileID)
	assert.Len(t, out, 30)
	assert.ElementsMatch(t, ids, customIDs(srv.Requests()))
	assert.Equal(t, 30, srv.Stats().BatchLines)
}
