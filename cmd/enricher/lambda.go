package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"
	lambdaapi "github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/lambdabatch"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/consumer/sqsqueue"
	"github.com/socialdata/enricher/internal/emf"
)

const (
	// envDLQURL names the dead-letter queue in Lambda mode.
	envDLQURL = "ENRICHER_DLQ_URL"
	// envMetricsNamespace is the CloudWatch namespace of the Lambda
	// handler's EMF metrics (default pipeline.DefaultEMFNamespace).
	envMetricsNamespace = "ENRICHER_METRICS_NAMESPACE"
	// envRetryBackoff is the Lambda handler's retry backoff (run's
	// --retry-backoff; default defaultRetryBackoff).
	envRetryBackoff = "ENRICHER_RETRY_BACKOFF"
	// defaultRetryBackoff is how long a message that failed for a passing
	// reason stays away after its first receive (doubled per receive).
	defaultRetryBackoff = 10 * time.Second
)

// inLambda reports whether the AWS Lambda runtime started this process.
func inLambda() bool { return os.Getenv("AWS_LAMBDA_RUNTIME_API") != "" }

// runLambda serves SQS event batches until the runtime stops the process.
// The config comes from ENRICHER_CONFIG; poison messages go to
// ENRICHER_DLQ_URL when set (else the queue's redrive policy takes them
// after maxReceiveCount). A record that failed for a passing reason stays
// away ENRICHER_RETRY_BACKOFF (default 10s), doubled per receive, as with
// run's --retry-backoff. A halt disables the function's event source
// mapping of the queue (AWS_LAMBDA_FUNCTION_NAME, through the Lambda API:
// AWS_ENDPOINT_URL_LAMBDA reaches another endpoint), so that Lambda stops
// handing out batches that would halt alike. ENRICHER_MODEL_PROVIDER, _BASE_URL, _NAME,
// _DEPLOYMENT and _API_VERSION override the job specs' model settings as
// the flags of run do, and the API key comes from ENRICHER_API_KEY_SECRET
// (Secrets Manager) or the provider's key variable. Logs are JSON, on
// stderr; each batch's metrics go to stdout as CloudWatch Embedded Metric
// Format documents in ENRICHER_METRICS_NAMESPACE (see emfHooks).
func runLambda(ctx context.Context) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	path, err := configPath("")
	if err != nil {
		return err
	}
	mf := modelFlagsFromEnv()
	if err := mf.validate(); err != nil {
		return fmt.Errorf("%s: %w", envModelProvider, err)
	}
	env, err := openWith(ctx, path, true, false, mf, log)
	if err != nil {
		return err
	}
	metrics := pipeline.NewEMFMetrics(os.Getenv(envMetricsNamespace), env.jobs)
	proc, err := env.processor(log, func(o *pipeline.Options) { o.OnStage = metrics.ObserveStage })
	if err != nil {
		return err
	}
	backoff, err := retryBackoffFromEnv()
	if err != nil {
		return err
	}
	// One AWS config for both clients (AWS_ENDPOINT_URL_SQS and
	// AWS_ENDPOINT_URL_LAMBDA pick each one's endpoint); sqsqueue.OwnBody
	// on every SQS call, as newSQSClient does.
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return fmt.Errorf("aws config: %w", err)
	}
	api := sqs.NewFromConfig(awsCfg, sqsqueue.OwnBody)
	h := &lambdabatch.Handler{Handler: proc, API: api, DLQURL: os.Getenv(envDLQURL), Logger: log, Summary: pipeline.BatchSummary,
		RetryBackoff: backoff, Mappings: lambdaapi.NewFromConfig(awsCfg), FunctionName: os.Getenv("AWS_LAMBDA_FUNCTION_NAME")}
	h.OnStart, h.OnDone = emfHooks(metrics, os.Stdout, log)
	if n, _ := strconv.Atoi(os.Getenv("AWS_LAMBDA_MAX_CONCURRENCY")); n > 1 {
		log.Warn("AWS_LAMBDA_MAX_CONCURRENCY is above 1: this process handles its invocations one at a time", "max_concurrency", n)
	}
	log.Info("lambda handler ready", "jobs", len(env.jobs), "dlq", h.DLQURL, "metrics_namespace", metrics.Namespace(),
		"retry_backoff", backoff.String())
	lambda.StartWithOptions(h.Handle, lambda.WithContext(ctx))
	return fmt.Errorf("lambda runtime returned")
}

// emfHooks are the Lambda handler's OnStart and OnDone: each batch writes
// its EMF documents (one per job that ran, one for the batch; see
// pipeline.EMFMetrics) to w, one line each, which the Lambda runtime
// sends to CloudWatch Logs, where they become metrics. A document that
// cannot be written is logged, and the batch goes on.
func emfHooks(m *pipeline.EMFMetrics, w io.Writer, log *slog.Logger) (func(), func(lambdabatch.BatchDone)) {
	return m.Begin, func(d lambdabatch.BatchDone) {
		halts := 0
		if d.Halted {
			halts = 1
		}
		docs := m.Documents(pipeline.BatchFigures{Records: d.Records, FailedRecords: d.Failed, DeadLettered: d.DeadLettered, Halts: halts}, d.Outcomes)
		if err := emf.Write(w, time.Now(), docs...); err != nil {
			log.Error("lambda batch metrics not written", "err", err)
		}
	}
}

// retryBackoffFromEnv is ENRICHER_RETRY_BACKOFF, checked as run checks
// --retry-backoff.
func retryBackoffFromEnv() (time.Duration, error) {
	v := os.Getenv(envRetryBackoff)
	if v == "" {
		return defaultRetryBackoff, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > consumer.MaxRetryBackoff {
		return 0, fmt.Errorf("%s=%q: want a duration from 0 to %s, such as 30s", envRetryBackoff, v, consumer.MaxRetryBackoff)
	}
	return d, nil
}
