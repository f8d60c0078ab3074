package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/socialdata/enricher/consumer/lambdabatch"
	"github.com/socialdata/enricher/consumer/pipeline"
)

// envDLQURL names the dead-letter queue in Lambda mode.
const envDLQURL = "ENRICHER_DLQ_URL"

// inLambda reports whether the AWS Lambda runtime started this process.
func inLambda() bool { return os.Getenv("AWS_LAMBDA_RUNTIME_API") != "" }

// runLambda serves SQS event batches until the runtime stops the process.
// The config comes from ENRICHER_CONFIG; poison messages go to
// ENRICHER_DLQ_URL when set (else the queue's redrive policy takes them
// after maxReceiveCount). ENRICHER_MODEL_PROVIDER, _BASE_URL, _NAME,
// _DEPLOYMENT and _API_VERSION override the job specs' model settings as
// the flags of run do, and the API key comes from ENRICHER_API_KEY_SECRET
// (Secrets Manager) or the provider's key variable. Logs are JSON.
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
	proc, err := env.processor(log, nil)
	if err != nil {
		return err
	}
	api, err := newSQSClient(ctx)
	if err != nil {
		return err
	}
	h := &lambdabatch.Handler{Handler: proc, API: api, DLQURL: os.Getenv(envDLQURL), Logger: log, Summary: pipeline.BatchSummary}
	log.Info("lambda handler ready", "jobs", len(env.jobs), "dlq", h.DLQURL)
	lambda.StartWithOptions(h.Handle, lambda.WithContext(ctx))
	return fmt.Errorf("lambda runtime returned")
}
