package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/emf/emftest"
	"github.com/socialdata/enricher/internal/fakellm"
	"github.com/socialdata/enricher/internal/lambdatest"
	"github.com/socialdata/enricher/internal/sqstest"
)

// envRIE names a prebuilt AWS Lambda Runtime Interface Emulator
// (scripts/test.sh builds it from the module pinned in scripts/rie); the
// tests build it themselves when it is not set.
const envRIE = "ENRICHER_RIE_BIN"

var rieBuild = sync.OnceValues(func() (string, error) {
	if p := os.Getenv(envRIE); p != "" {
		return p, nil
	}
	dir, err := os.MkdirTemp("", "enricher-rie-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "aws-lambda-rie")
	cmd := exec.Command("go", "build", "-C", filepath.Join("..", "..", "scripts", "rie"), "-o", bin,
		"github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the runtime interface emulator (scripts/rie): %w\n%s", err, out)
	}
	return bin, nil
})

// rieFunction is the enricher's Lambda handler run by the AWS Lambda
// Runtime Interface Emulator: the real Runtime API, the process lifecycle
// of a function (one init, then invocations one at a time, warm), and its
// stdout and stderr as CloudWatch Logs would get them.
type rieFunction struct {
	t   *testing.T
	url string
	cmd *exec.Cmd

	mu  sync.Mutex
	out bytes.Buffer // everything the emulator and the function printed
}

// startRIE starts the emulator with the test binary as the function's
// bootstrap (TestChildProcess in mode "lambda"), with env added to the
// function's environment.
func startRIE(t *testing.T, env ...string) *rieFunction {
	t.Helper()
	bin, err := rieBuild()
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	f := &rieFunction{t: t, url: "http://" + addr + "/2015-03-31/functions/function/invocations"}
	f.cmd = exec.Command(bin, "--runtime-interface-emulator-address", addr, os.Args[0], "-test.run=^TestChildProcess$")
	f.cmd.Env = append(os.Environ(), append(env, envChild+"=lambda", "AWS_LAMBDA_FUNCTION_TIMEOUT=120",
		"AWS_LAMBDA_FUNCTION_NAME=enricher-rie-test")...)
	pr, pw := io.Pipe()
	f.cmd.Stdout, f.cmd.Stderr = pw, pw
	require.NoError(t, f.cmd.Start())
	copied := make(chan struct{})
	go func() { // ends when the pipe is closed after the emulator exits
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			f.mu.Lock()
			f.out.Write(sc.Bytes())
			f.out.WriteByte('\n')
			f.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = f.cmd.Process.Kill()
		_ = f.cmd.Wait()
		_ = pw.Close()
		<-copied
		if t.Failed() {
			t.Logf("emulator and function output:\n%s", f.output())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		require.True(t, time.Now().Before(deadline), "the emulator did not listen on %s: %v\n%s", addr, err, f.output())
		time.Sleep(50 * time.Millisecond)
	}
	return f
}

func (f *rieFunction) output() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.out.String()
}

// invoke sends one SQS event to the function and returns its response.
func (f *rieFunction) invoke(ev events.SQSEvent) events.SQSEventResponse {
	f.t.Helper()
	body, err := json.Marshal(ev)
	require.NoError(f.t, err)
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Post(f.url, "application/json", bytes.NewReader(body))
	require.NoError(f.t, err)
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	require.Equal(f.t, http.StatusOK, resp.StatusCode, "%s", raw)
	var out events.SQSEventResponse
	require.NoError(f.t, json.Unmarshal(raw, &out), "the function's answer: %s", raw)
	return out
}

// batchEMF returns the EMF documents of the next batch printed after the
// first `from` bytes of the output, each validated against the format's
// schema, and the offset past them. The function's output reaches the
// test through the emulator and a pipe, maybe after the invocation's
// answer: it waits for the batch's own document (Records), the last one.
func (f *rieFunction) batchEMF(from int) ([]emftest.Doc, int) {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := f.output()
		var docs []emftest.Doc
		end := from
		for line := range strings.Lines(out[from:]) {
			end += len(line)
			if !strings.HasSuffix(line, "\n") {
				break // a line still being written
			}
			line = strings.TrimSpace(line)
			if !emftest.IsEMF([]byte(line)) {
				continue
			}
			d, err := emftest.Validate([]byte(line))
			require.NoError(f.t, err, "%s", line)
			docs = append(docs, d)
			if _, ok := d["Records"]; ok {
				return docs, end
			}
		}
		require.True(f.t, time.Now().Before(deadline), "no batch document after offset %d:\n%s", from, out[from:])
		time.Sleep(20 * time.Millisecond)
	}
}

// sqsRecords receives every visible message of a queue the way the Lambda
// event source mapping does, as the records of one event.
func sqsRecords(t *testing.T, api *sqs.Client, url string, max int) []events.SQSMessage {
	t.Helper()
	arn, err := api.GetQueueAttributes(t.Context(), &sqs.GetQueueAttributesInput{QueueUrl: &url,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
	require.NoError(t, err)
	var recs []events.SQSMessage
	for len(recs) < max {
		r, err := api.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url, MaxNumberOfMessages: int32(min(10, max-len(recs))),
			WaitTimeSeconds: 1, MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll}})
		require.NoError(t, err)
		if len(r.Messages) == 0 {
			break
		}
		for _, m := range r.Messages {
			recs = append(recs, events.SQSMessage{MessageId: aws.ToString(m.MessageId), ReceiptHandle: aws.ToString(m.ReceiptHandle),
				Body: aws.ToString(m.Body), Attributes: m.Attributes, EventSource: "aws:sqs", EventSourceARN: arn.Attributes["QueueArn"],
				AWSRegion: "us-east-1"})
		}
	}
	return recs
}

// The Lambda handler under the Runtime Interface Emulator: partial batch
// failures, dead-lettering, and one set of CloudWatch Embedded Metric
// Format documents per invocation on stdout, each batch's own figures
// (a warm function counts nothing twice), with the API key nowhere.
func TestLambdaUnderTheRuntimeEmulatorWritesEMFMetrics(t *testing.T) {
	t.Parallel()
	const key = "sk-rie-test-key-0123456789"
	api, url, dlq := runQueueWith(t, 5, nil)
	llm := (&fakellm.Server{Key: key}).StartTB(t)
	cfg, _, _ := postsWarehouse(t, 60)
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")
	_, err := api.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("not an event")})
	require.NoError(t, err)

	fn := startRIE(t, envConfig+"="+cfg, envDLQURL+"="+dlq, envMetricsNamespace+"=Enricher/rie",
		envModelProvider+"=openai", envModelBaseURL+"="+llm.URL()+"/v1", envModelName+"=gpt-4o-mini",
		"OPENAI_API_KEY="+key)

	// First invocation: the ingested snapshot and a poison record.
	recs := sqsRecords(t, api, url, 2)
	require.Len(t, recs, 2)
	resp := fn.invoke(events.SQSEvent{Records: recs})
	assert.Empty(t, resp.BatchItemFailures, "the event is done and the poison record dead-lettered")
	docs, seen := fn.batchEMF(0)
	require.Len(t, docs, 2, "one document for the job and one for the batch:\n%s", fn.output())
	job, batch := docs[0], docs[1]
	assert.Equal(t, "sentiment", job["Job"])
	dirs := job.Directives()
	require.Len(t, dirs, 1)
	assert.Equal(t, "Enricher/rie", dirs[0].Namespace)
	assert.Equal(t, [][]string{{"Job"}, {}}, dirs[0].Dimensions)
	rows := job.Value("RowsOk") + job.Value("RowsSkipped") + job.Value("RowsFailed") + job.Value("RowsInvalidOutput")
	assert.Equal(t, 60.0, rows, "every ingested row, once")
	assert.Positive(t, job.Value("RowsOk"))
	assert.Positive(t, job.Value("RowsSkipped"), "the blank posts")
	assert.Zero(t, job.Value("RowsFailed"))
	assert.Positive(t, job.Value("Commits"))
	assert.Len(t, job.Values("CommitLatency"), int(job.Value("Commits")), "one latency per commit")
	stats := llm.Stats()
	assert.Equal(t, float64(stats.Requests), job.Value("ModelRequests"), "the server's count of requests")
	assert.Positive(t, job.Value("PromptTokens"))
	assert.Positive(t, job.Value("CompletionTokens"))
	assert.Positive(t, job.Value("CostUSD"), "gpt-4o-mini has a list price")
	assert.Zero(t, job.Value("BudgetExhausted"))
	assert.Equal(t, 2.0, batch.Value("Records"))
	assert.Equal(t, 1.0, batch.Value("DeadLettered"))
	assert.Zero(t, batch.Value("FailedRecords"))
	assert.Zero(t, batch.Value("Halts"))
	dead := sqstest.ReceiveAll(t, api, dlq)
	require.Len(t, dead, 1)
	assert.Equal(t, "not an event", aws.ToString(dead[0].Body))
	assert.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 61, "the demo's row and the 60 ingested")

	// Second invocation of the warm function: the same event again (a
	// redelivery). Nothing is written, and its documents count only it.
	again := recs[0]
	again.Attributes = map[string]string{"ApproximateReceiveCount": "2", "SentTimestamp": recs[0].Attributes["SentTimestamp"]}
	resp = fn.invoke(events.SQSEvent{Records: []events.SQSMessage{again}})
	assert.Empty(t, resp.BatchItemFailures)
	docs, _ = fn.batchEMF(seen)
	require.Len(t, docs, 2, "%s", fn.output()[seen:])
	for _, m := range []string{"RowsOk", "RowsSkipped", "Commits", "ModelRequests", "PromptTokens", "CompletionTokens", "CostUSD"} {
		assert.Zero(t, docs[0].Value(m), m)
	}
	assert.NotContains(t, docs[0], "CommitLatency", "no commit, no latency")
	assert.Equal(t, 1.0, docs[1].Value("Records"))
	assert.Zero(t, docs[1].Value("DeadLettered"))
	assert.Equal(t, stats.Requests, llm.Stats().Requests, "a redelivery asks the model nothing")
	assert.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 61)

	// The function's own log lines are JSON on stderr, and the key is in
	// none of the output.
	out := fn.output()
	assert.Contains(t, out, `"msg":"lambda handler ready"`)
	assert.Contains(t, out, `"metrics_namespace":"Enricher/rie"`)
	assert.NotContains(t, out, key)
}

// The Lambda handler under the Runtime Interface Emulator, halted by a
// model that refuses the key: the record is reported failed (not
// dead-lettered), and the handler disables its function's event source
// mapping of the queue through the Lambda API (AWS_ENDPOINT_URL_LAMBDA,
// the function named by the runtime), so that Lambda stops polling until
// an operator enables it again.
func TestLambdaHaltUnderTheRuntimeEmulatorPausesTheEventSource(t *testing.T) {
	t.Parallel()
	api, url, dlq := runQueueWith(t, 5, nil)
	llm := (&fakellm.Server{Key: "sk-right"}).StartTB(t)
	cfg, _, _ := postsWarehouse(t, 30)
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")
	recs := sqsRecords(t, api, url, 1)
	require.Len(t, recs, 1)
	lam := lambdatest.Start(t,
		lambdatest.Mapping{UUID: "esm-other", Function: "another-function", SourceARN: recs[0].EventSourceARN, State: "Enabled"},
		lambdatest.Mapping{UUID: "esm-1", Function: "enricher-rie-test", SourceARN: recs[0].EventSourceARN, State: "Enabled"})

	fn := startRIE(t, envConfig+"="+cfg, envDLQURL+"="+dlq, envMetricsNamespace+"=Enricher/rie",
		envModelProvider+"=openai", envModelBaseURL+"="+llm.URL()+"/v1", envModelName+"=gpt-4o-mini",
		"OPENAI_API_KEY=sk-wrong-key-0123456789", "AWS_ENDPOINT_URL_LAMBDA="+lam.URL)
	resp := fn.invoke(events.SQSEvent{Records: recs})
	require.Len(t, resp.BatchItemFailures, 1, fn.output())
	assert.Equal(t, recs[0].MessageId, resp.BatchItemFailures[0].ItemIdentifier)
	assert.Equal(t, []string{"esm-1 enabled=false"}, lam.Updates(), "only its own mapping of the queue")
	assert.Equal(t, "Enabled", lam.State("esm-other"))
	docs, _ := fn.batchEMF(0)
	require.Len(t, docs, 2, fn.output())
	assert.Equal(t, 1.0, docs[1].Value("Halts"))
	out := fn.output()
	assert.Contains(t, out, `"msg":"lambda event source paused`)
	assert.Contains(t, out, `aws lambda update-event-source-mapping --enabled --uuid esm-1`)
	assert.Contains(t, out, "HTTP 401")
	assert.NotContains(t, out, "sk-wrong-key-0123456789")
	assert.Empty(t, sqstest.ReceiveAll(t, api, dlq), "a halt dead-letters nothing")
}
