package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/sqstest"
)

// runQueue creates a source queue with a dead-letter queue (maxReceiveCount
// 3) on the SQS emulator, which the commands under test reach through the
// standard AWS settings (scripts/sqs-emulator.sh exports them).
func runQueue(t *testing.T) (api *sqs.Client, url, dlq string) {
	t.Helper()
	return runQueueWith(t, 3, nil)
}

// runQueueWith is runQueue with the DLQ's maxReceiveCount and more source
// queue attributes.
func runQueueWith(t *testing.T, maxReceives int, attrs map[string]string) (api *sqs.Client, url, dlq string) {
	t.Helper()
	sqstest.RequireCLIEndpoint(t)
	q := sqstest.NewQueues(t, sqstest.Client(t), sqstest.Options{MaxReceives: maxReceives, Attributes: attrs})
	return q.API, q.URL, q.DLQ
}

func TestPublishThenRunDrainsTheQueue(t *testing.T) {
	t.Parallel()
	api, url, dlq := runQueue(t)
	work, cfg := newDemo(t, "--generate", "40")
	dir := filepath.Dir(work)
	more := filepath.Join(dir, "more.txt")
	require.NoError(t, os.WriteFile(more, []byte("what a great day\nthis is awful\n"), 0o644))

	mustRun(t, "ingest", "--config", cfg, "--posts", more, "--first-id", "41")
	id := mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")
	assert.NotEmpty(t, strings.TrimSpace(id), "publish prints the message id")
	mustRun(t, "ingest", "--config", cfg, "--posts", more, "--first-id", "43")
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")
	_, err := api.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("{}")})
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out, errOut strings.Builder
	cmd := newRootCmd(&out, &errOut)
	cmd.SetArgs([]string{"run", "--config", cfg, "--queue-url", url, "--drain", "--wait", "1s", "--log-format", "json"})
	require.NoError(t, cmd.ExecuteContext(ctx), errOut.String())

	rows := exportRows(t, cfg, "social.posts_sentiment")
	assert.Len(t, rows, 44, "the demo's 40 rows and the 4 ingested, once each")
	logs := errOut.String()
	assert.Contains(t, logs, `"msg":"message done"`)
	assert.Contains(t, logs, `"msg":"message dead-lettered"`)
	assert.Contains(t, logs, `"reason":"bad_message"`)
	r, err := api.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &dlq, WaitTimeSeconds: 1})
	require.NoError(t, err)
	require.Len(t, r.Messages, 1)
	assert.Equal(t, "{}", aws.ToString(r.Messages[0].Body))
}

func TestChainStagesCallsEveryHookInOrder(t *testing.T) {
	t.Parallel()
	var calls []string
	hook := func(name string) func(job, stage string, d time.Duration) {
		return func(job, stage string, d time.Duration) {
			calls = append(calls, fmt.Sprintf("%s %s/%s %s", name, job, stage, d))
		}
	}
	assert.Nil(t, chainStages(nil, nil))
	chainStages(hook("first"), nil)("j", "plan", time.Second)
	chainStages(nil, hook("second"))("j", "enrich", time.Millisecond)
	chainStages(hook("first"), hook("second"))("j", "commit", time.Minute)
	assert.Equal(t, []string{"first j/plan 1s", "second j/enrich 1ms", "first j/commit 1m0s", "second j/commit 1m0s"}, calls)
}
