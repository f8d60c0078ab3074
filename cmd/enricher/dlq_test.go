package main

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/sqsqueue"
	"github.com/socialdata/enricher/internal/sqstest"
)

// sendToDLQ puts a message in a DLQ as the consumer dead-letters it (an
// empty reason: as the redrive policy moves it, without attributes).
func sendToDLQ(t *testing.T, api *sqs.Client, dlq, body, reason, errText string) {
	t.Helper()
	in := &sqs.SendMessageInput{QueueUrl: &dlq, MessageBody: &body, MessageAttributes: map[string]types.MessageAttributeValue{
		"trace": {DataType: aws.String("String"), StringValue: aws.String("t-" + body)},
	}}
	if reason != "" {
		for k, v := range sqsqueue.DeadLetterAttributes(reason, errText, "orig-"+body, 3, "http://source", time.Now().Add(-time.Hour)) {
			in.MessageAttributes[k] = v
		}
	}
	_, err := api.SendMessage(t.Context(), in)
	require.NoError(t, err)
}

// runDLQ runs `enricher dlq args...` with stdin and returns stdout and
// stderr.
func runDLQ(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	g := &globals{stdout: &out, stderr: &errOut}
	root := newRoot(g)
	root.AddCommand(newDLQCmd(g))
	root.SetArgs(append([]string{"dlq"}, args...))
	root.SetIn(strings.NewReader(stdin))
	err := root.ExecuteContext(t.Context())
	if err != nil {
		t.Logf("enricher dlq %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), errOut.String(), err
}

func mustRunDLQ(t *testing.T, args ...string) (string, string) {
	t.Helper()
	out, errOut, err := runDLQ(t, "", args...)
	require.NoError(t, err)
	return out, errOut
}

func dlqDepth(t *testing.T, api *sqs.Client, url string) sqsqueue.Depth {
	t.Helper()
	d, err := sqsqueue.QueueDepth(t.Context(), api, url)
	require.NoError(t, err)
	return d
}

// drainQueue receives and deletes every message of a queue.
func drainQueue(t *testing.T, api *sqs.Client, url string) []types.Message {
	t.Helper()
	var out []types.Message
	for {
		r, err := api.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url, MaxNumberOfMessages: 10,
			WaitTimeSeconds: 1, MessageAttributeNames: []string{"All"}})
		require.NoError(t, err)
		if len(r.Messages) == 0 {
			return out
		}
		for _, m := range r.Messages {
			out = append(out, m)
			_, err := api.DeleteMessage(t.Context(), &sqs.DeleteMessageInput{QueueUrl: &url, ReceiptHandle: m.ReceiptHandle})
			require.NoError(t, err)
		}
	}
}

func TestDLQCommandsStatsPeekRedrive(t *testing.T) {
	t.Parallel()
	_, queue, dlq := runQueueWith(t, 10, nil)
	api := sqstest.Client(t)
	sendToDLQ(t, api, dlq, "bad-1", consumer.ReasonBadMessage, "not a JSON object")
	sendToDLQ(t, api, dlq, "bad-2", consumer.ReasonBadMessage, "line one\nline two")
	sendToDLQ(t, api, dlq, "table-1", consumer.ReasonUnknownTable, "unknown table social.nowhere")
	sendToDLQ(t, api, dlq, "policy-1", "", "")

	// The DLQ comes from the source queue's RedrivePolicy.
	out, _ := mustRunDLQ(t, "stats", "--queue-url", queue)
	assert.Contains(t, out, dlq)
	assert.Regexp(t, `(?m)^visible\s+4$`, out)
	assert.Regexp(t, `(?m)^in flight\s+0$`, out)
	assert.Regexp(t, `(?m)^oldest message\s+\d+s old \(sent \d{4}-`, out)
	assert.Regexp(t, `(?m)^oldest dead-lettered\s+1h00m ago`, out)
	assert.Regexp(t, `(?m)^retention\s+4d00h \(the oldest message expires in about (4d00h|3d23h)\)$`, out)
	assert.Contains(t, out, "bad_message 2, max_receives 1, unknown_table 1 (of 4 sampled)")

	out, _ = mustRunDLQ(t, "peek", "--queue-url", queue, "--reason", "bad_message")
	assert.Equal(t, 2, strings.Count(out, "\nbody\n"), out)
	assert.Regexp(t, `(?m)^reason\s+bad_message$`, out)
	assert.Regexp(t, `(?m)^error\s+not a JSON object$`, out)
	assert.Regexp(t, `(?m)^error\s+line one\\nline two$`, out, "an error stays on its line")
	assert.Regexp(t, `(?m)^receive count\s+2 \(3 before\)$`, out, "stats received it first")
	assert.Regexp(t, `(?m)^dead-lettered at\s+\d{4}-`, out)
	assert.Regexp(t, `(?m)^attribute trace\s+t-bad-1$`, out)
	assert.Contains(t, out, "body\nbad-1\n")
	assert.NotContains(t, out, "table-1")
	assert.True(t, strings.HasSuffix(out, "2 message(s) shown\n"), out)

	out, _ = mustRunDLQ(t, "peek", "--dlq-url", dlq, "--max", "0", "--format", "jsonl")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4)
	got := map[string]map[string]any{}
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		got[m["body"].(string)] = m
	}
	assert.Equal(t, "bad_message", got["bad-1"]["reason"])
	assert.Equal(t, "not a JSON object", got["bad-1"]["error"])
	assert.EqualValues(t, 3, got["bad-1"]["receive_count"], "the third look at it: stats, peek, peek")
	assert.EqualValues(t, 3, got["bad-1"]["source_receive_count"])
	assert.NotEmpty(t, got["bad-1"]["id"])
	assert.NotEmpty(t, got["bad-1"]["dead_lettered_at"])
	assert.Equal(t, map[string]any{"trace": "t-bad-1"}, got["bad-1"]["attributes"])
	assert.Equal(t, "unknown_table", got["table-1"]["reason"])
	assert.Equal(t, "max_receives", got["policy-1"]["reason"])
	assert.NotContains(t, got["policy-1"], "dead_lettered_at")
	assert.NotContains(t, got["policy-1"], "source_receive_count")
	assert.Equal(t, sqsqueue.Depth{Visible: 4}, dlqDepth(t, api, dlq), "peek moved nothing")

	out, _ = mustRunDLQ(t, "redrive", "--queue-url", queue, "--dry-run")
	assert.Equal(t, "dry run: would move 4, left 0 (filtered); by reason: bad_message 2, max_receives 1, unknown_table 1; nothing was moved\n", out)
	assert.Equal(t, sqsqueue.Depth{Visible: 4}, dlqDepth(t, api, dlq))
	assert.Equal(t, sqsqueue.Depth{}, dlqDepth(t, api, queue))

	out, errOut := mustRunDLQ(t, "redrive", "--queue-url", queue, "--reason", "bad_message,max_receives", "--yes")
	assert.Equal(t, "moved 3, left 1 (filtered); by reason: bad_message 2, max_receives 1\n", out)
	assert.Contains(t, errOut, "redrive: moved 3, left 1 (filtered)\n", "the last progress line")
	assert.Equal(t, sqsqueue.Depth{Visible: 1}, dlqDepth(t, api, dlq))

	out, _ = mustRunDLQ(t, "redrive", "--queue-url", queue, "--yes")
	assert.Equal(t, "moved 1, left 0 (filtered); by reason: unknown_table 1\n", out,
		"the emulator has no message move task: redrive moved them itself")

	out, _ = mustRunDLQ(t, "stats", "--dlq-url", dlq)
	assert.Regexp(t, `(?m)^visible\s+0$`, out)
	assert.Regexp(t, `(?m)^oldest message\s+-$`, out)
	assert.NotContains(t, out, "reasons")
	out, _ = mustRunDLQ(t, "peek", "--dlq-url", dlq)
	assert.Equal(t, "no message in "+dlq+"\n", out)

	back := drainQueue(t, api, queue)
	var bodies []string
	for _, m := range back {
		bodies = append(bodies, aws.ToString(m.Body))
		assert.Equal(t, "t-"+aws.ToString(m.Body), aws.ToString(m.MessageAttributes["trace"].StringValue))
		for k := range m.MessageAttributes {
			assert.False(t, strings.HasPrefix(k, "enricher-"), "%s kept %s", aws.ToString(m.Body), k)
		}
	}
	slices.Sort(bodies)
	assert.Equal(t, []string{"bad-1", "bad-2", "policy-1", "table-1"}, bodies)
}

func TestDLQRedriveAsksFirst(t *testing.T) {
	t.Parallel()
	_, queue, dlq := runQueueWith(t, 10, nil)
	api := sqstest.Client(t)
	sendToDLQ(t, api, dlq, "a", consumer.ReasonBadMessage, "x")
	sendToDLQ(t, api, dlq, "b", consumer.ReasonSnapshotNotFound, "y")

	for _, answer := range []string{"n\n", "", "maybe\n"} {
		_, errOut, err := runDLQ(t, answer, "redrive", "--queue-url", queue, "--reason", "bad_message", "--max", "5")
		require.ErrorContains(t, err, "redrive not confirmed, nothing moved")
		assert.Contains(t, errOut, "move up to 5 of about 2 message(s) with reason bad_message from "+dlq+" back to "+queue+"? [y/N] ")
	}
	assert.Equal(t, sqsqueue.Depth{Visible: 2}, dlqDepth(t, api, dlq))

	out, _, err := runDLQ(t, "y\n", "redrive", "--queue-url", queue)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(out, "moved 2, left 0 (filtered)"), out)
	assert.Equal(t, sqsqueue.Depth{}, dlqDepth(t, api, dlq))
	assert.Len(t, drainQueue(t, api, queue), 2)
}

func TestDLQWithoutRedrivePolicyNeedsDLQURL(t *testing.T) {
	t.Parallel()
	sqstest.RequireCLIEndpoint(t)
	url := sqstest.NewQueue(t, sqstest.Client(t), nil)
	_, _, err := runDLQ(t, "", "stats", "--queue-url", url)
	require.ErrorContains(t, err, "has no RedrivePolicy, so no dead-letter queue: pass --dlq-url")
}

func TestDLQUsageErrorsAndHelp(t *testing.T) {
	t.Parallel()
	_, _, err := runDLQ(t, "", "peek", "--dlq-url", "http://x", "--format", "xml")
	require.ErrorIs(t, err, errUsage)
	require.ErrorContains(t, err, `invalid argument "xml" for "--format" flag: want text or jsonl`)
	_, _, err = runDLQ(t, "", "peek", "--dlq-url", "http://x", "--max", "-1")
	require.ErrorContains(t, err, "--max must not be negative")
	_, _, err = runDLQ(t, "", "redrive", "--dlq-url", "http://x", "--max", "-2")
	require.ErrorContains(t, err, "--max must not be negative")
	if os.Getenv(envQueueURL) == "" {
		_, _, err = runDLQ(t, "", "redrive", "--dlq-url", "http://x", "--yes")
		require.ErrorContains(t, err, "--queue-url URL is required")
		_, _, err = runDLQ(t, "", "stats")
		require.ErrorContains(t, err, "--queue-url URL is required")
	}

	out, _ := mustRunDLQ(t, "redrive", "--help")
	flat := regexp.MustCompile(`\s+`).ReplaceAllString(out, " ")
	assert.Contains(t, flat, "An interrupted redrive (Ctrl-C, a crash, a network error) loses nothing")
	assert.Contains(t, flat, "processing is idempotent")
	assert.Contains(t, flat, "--dry-run")
	out, _ = mustRunDLQ(t, "peek", "--help")
	flat = regexp.MustCompile(`\s+`).ReplaceAllString(out, " ")
	assert.Contains(t, flat, "Peeking increments each message's receive count")
	out, _ = mustRunDLQ(t, "--help")
	for _, sub := range []string{"stats", "peek", "redrive"} {
		assert.Contains(t, out, sub)
	}
}

func TestDLQAge(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		-time.Second:                       "0s",
		1500 * time.Millisecond:            "2s",
		12*time.Minute + 3*time.Second:     "12m03s",
		5*time.Hour + 7*time.Minute:        "5h07m",
		47*time.Hour + 59*time.Minute:      "47h59m",
		3*24*time.Hour + 4*time.Hour + 100: "3d04h",
	} {
		assert.Equal(t, want, dlqAge(d), "%v", d)
	}
}
