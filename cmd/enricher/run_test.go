package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var runQueueSeq atomic.Int64

// runQueue creates a source queue with a dead-letter queue on the SQS
// emulator (ENRICHER_SQS_ENDPOINT, exported by scripts/sqs-emulator.sh
// together with AWS_ENDPOINT_URL_SQS and test credentials). Without it the
// test is skipped loudly, except in CI, where it fails.
func runQueue(t *testing.T) (api *sqs.Client, url, dlq string) {
	t.Helper()
	return runQueueWith(t, 3, nil)
}

// runQueueWith is runQueue with the DLQ's maxReceiveCount and more source
// queue attributes.
func runQueueWith(t *testing.T, maxReceives int, attrs map[string]string) (api *sqs.Client, url, dlq string) {
	t.Helper()
	if os.Getenv("ENRICHER_SQS_ENDPOINT") == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("ENRICHER_SQS_ENDPOINT is not set: CI must start the SQS emulator (scripts/sqs-emulator.sh start)")
		}
		t.Skip("SKIPPED: no SQS emulator; run `eval \"$(scripts/sqs-emulator.sh start)\"` first")
	}
	api, err := newSQSClient(t.Context())
	require.NoError(t, err)
	name := fmt.Sprintf("cli%d-%d", time.Now().UnixNano(), runQueueSeq.Add(1))
	d, err := api.CreateQueue(t.Context(), &sqs.CreateQueueInput{QueueName: aws.String(name + "-dlq")})
	require.NoError(t, err)
	arn, err := api.GetQueueAttributes(t.Context(), &sqs.GetQueueAttributesInput{QueueUrl: d.QueueUrl, AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
	require.NoError(t, err)
	qattrs := map[string]string{
		"RedrivePolicy": fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":"%d"}`, arn.Attributes["QueueArn"], maxReceives),
	}
	for k, v := range attrs {
		qattrs[k] = v
	}
	q, err := api.CreateQueue(t.Context(), &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: qattrs})
	require.NoError(t, err)
	return api, aws.ToString(q.QueueUrl), aws.ToString(d.QueueUrl)
}

func TestPublishThenRunDrainsTheQueue(t *testing.T) {
	t.Parallel()
	api, url, dlq := runQueue(t)
	dir := t.TempDir()
	work := filepath.Join(dir, "demo")
	mustRun(t, "demo", "--workdir", work, "--generate", "40", "--samples", "0")
	cfg := filepath.Join(work, "enricher.yaml")
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
