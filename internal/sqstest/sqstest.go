// Package sqstest connects tests to the SQS emulator that
// scripts/sqs-emulator.sh starts (its endpoint in ENRICHER_SQS_ENDPOINT)
// and makes fresh queues on it. Without an emulator a test is skipped
// loudly, except in CI (CI set), where it fails. Test code only.
package sqstest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/sqsqueue"
	"github.com/socialdata/enricher/internal/testbed"
)

// EnvEndpoint names the emulator's endpoint.
const EnvEndpoint = "ENRICHER_SQS_ENDPOINT"

// Endpoint returns the emulator's endpoint, or skips t (fails it in CI).
func Endpoint(t testing.TB) string {
	t.Helper()
	endpoint := os.Getenv(EnvEndpoint)
	if endpoint == "" {
		if os.Getenv("CI") != "" {
			t.Fatal(EnvEndpoint + " is not set: CI must start the SQS emulator (scripts/sqs-emulator.sh start)")
		}
		t.Skip("SKIPPED: no SQS emulator; run `eval \"$(scripts/sqs-emulator.sh start)\"` first")
	}
	return endpoint
}

// RequireCLIEndpoint checks that the standard AWS settings, which the
// commands under test read, point at the emulator too.
func RequireCLIEndpoint(t testing.TB) {
	t.Helper()
	endpoint := Endpoint(t)
	if got := os.Getenv("AWS_ENDPOINT_URL_SQS"); got != endpoint {
		t.Fatalf("AWS_ENDPOINT_URL_SQS is %q, not the emulator %s: the commands would talk to another SQS; run `eval \"$(scripts/sqs-emulator.sh env)\"`", got, endpoint)
	}
}

// Client is an SQS client of the emulator with test credentials, and
// sqsqueue.OwnBody on every call (a receive of the tests themselves could
// otherwise, rarely, lose its response to an SDK retry and hide a batch).
func Client(t testing.TB) *sqs.Client {
	t.Helper()
	endpoint := Endpoint(t)
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		})))
	require.NoError(t, err)
	return sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) }, sqsqueue.OwnBody)
}

// Options shape a pair of queues.
type Options struct {
	// FIFO makes both queues FIFO.
	FIFO bool
	// MaxReceives is the source queue's maxReceiveCount (default 10).
	MaxReceives int
	// Visibility is the source queue's visibility timeout (default: the
	// emulator's, 30s).
	Visibility time.Duration
	// Attributes are more attributes of the source queue.
	Attributes map[string]string
}

// Queues are a fresh source queue and the dead-letter queue its
// RedrivePolicy names.
type Queues struct {
	API      *sqs.Client
	URL, DLQ string
	FIFO     bool
}

var seq atomic.Int64

// Name is a fresh queue name (at most 60 characters) made from t's name.
func Name(t testing.TB) string {
	name := fmt.Sprintf("t%d-%d-%s", time.Now().UnixNano(), seq.Add(1), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	return name[:min(len(name), 60)]
}

// NewQueue creates a lone standard queue named after t (no dead-letter
// queue) with attrs, and returns its URL.
func NewQueue(t testing.TB, api *sqs.Client, attrs map[string]string) string {
	t.Helper()
	q, err := api.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String(Name(t) + "-lone"), Attributes: attrs})
	require.NoError(t, err)
	return aws.ToString(q.QueueUrl)
}

// NewQueues creates a pair of queues named after t.
func NewQueues(t testing.TB, api *sqs.Client, o Options) *Queues {
	t.Helper()
	name := Name(t)
	if o.MaxReceives <= 0 {
		o.MaxReceives = 10
	}
	suffix := ""
	fifo := map[string]string{}
	if o.FIFO {
		suffix = ".fifo"
		fifo["FifoQueue"] = "true"
	}
	ctx := context.Background()
	d, err := api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + "-dlq" + suffix), Attributes: fifo})
	require.NoError(t, err)
	arn, err := api.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: d.QueueUrl,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
	require.NoError(t, err)
	attrs := map[string]string{
		"RedrivePolicy": fmt.Sprintf(`{"deadLetterTargetArn":%q,"maxReceiveCount":"%d"}`, arn.Attributes["QueueArn"], o.MaxReceives),
	}
	if o.Visibility > 0 {
		attrs["VisibilityTimeout"] = strconv.Itoa(int(o.Visibility / time.Second))
	}
	for k, v := range fifo {
		attrs[k] = v
	}
	for k, v := range o.Attributes {
		attrs[k] = v
	}
	q, err := api.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name + suffix), Attributes: attrs})
	require.NoError(t, err)
	return &Queues{API: api, URL: aws.ToString(q.QueueUrl), DLQ: aws.ToString(d.QueueUrl), FIFO: o.FIFO}
}

// Publish sends ev to the source queue as a producer would.
func (q *Queues) Publish(t testing.TB, ev consumer.SnapshotEvent) {
	t.Helper()
	_, err := (&sqsqueue.Publisher{API: q.API, QueueURL: q.URL}).Publish(context.Background(), ev)
	require.NoError(t, err)
}

// SendRaw sends any body to the source queue (in group "raw" on FIFO).
func (q *Queues) SendRaw(t testing.TB, body string) {
	t.Helper()
	q.SendInGroup(t, body, "raw")
}

// SendInGroup sends any body to the source queue, in group on FIFO.
func (q *Queues) SendInGroup(t testing.TB, body, group string) {
	t.Helper()
	in := &sqs.SendMessageInput{QueueUrl: &q.URL, MessageBody: &body}
	if q.FIFO {
		in.MessageGroupId, in.MessageDeduplicationId = aws.String(group), aws.String(strconv.FormatInt(time.Now().UnixNano(), 10)+"-"+strconv.FormatInt(seq.Add(1), 10))
	}
	_, err := q.API.SendMessage(context.Background(), in)
	require.NoError(t, err)
}

// ReceiveAll reads every visible message of a queue and deletes it.
func ReceiveAll(t testing.TB, api *sqs.Client, url string) []types.Message {
	t.Helper()
	ctx := context.Background()
	var out []types.Message
	for {
		r, err := api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &url, MaxNumberOfMessages: 10,
			WaitTimeSeconds: 1, MessageAttributeNames: []string{"All"},
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll}})
		require.NoError(t, err)
		if len(r.Messages) == 0 {
			return out
		}
		for _, m := range r.Messages {
			out = append(out, m)
			_, err := api.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: &url, ReceiptHandle: m.ReceiptHandle})
			require.NoError(t, err)
		}
	}
}

// Setup is the set-up of an integration test through SQS: an emulator
// client, a fresh warehouse (testbed.Setup) and fresh queues.
func Setup(t *testing.T, o Options) (*sqs.Client, *testbed.Bundle, *Queues) {
	t.Helper()
	api := Client(t)
	return api, testbed.Setup(t), NewQueues(t, api, o)
}
