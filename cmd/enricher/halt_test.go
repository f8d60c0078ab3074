package main

import (
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/internal/fakellm"
	"github.com/socialdata/enricher/internal/sqstest"
)

// TestRunHaltsOnAKeyTheServerRefuses: a model server that refuses the key
// (HTTP 401) would refuse every message alike, so run stops at once with
// the reason and the message stays in the queue, untouched and not
// dead-lettered; the next run, with the right key, does the work.
func TestRunHaltsOnAKeyTheServerRefuses(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-wrong")
	_, url, dlq := runQueueWith(t, 10, map[string]string{"VisibilityTimeout": "2"})
	llm := (&fakellm.Server{Key: "sk-right"}).StartTB(t)
	cfg, _, _ := postsWarehouse(t, 40)
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")
	mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")

	chat := []string{"run", "--config", cfg, "--queue-url", url, "--drain", "--wait", "1s", "--concurrency", "1",
		"--provider", "openai", "--base-url", llm.URL() + "/v1", "--model", "m", "--log-format", "json"}
	start := time.Now()
	_, stderr, err := runBoth(t, chat...)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "HTTP 401")
	assert.Contains(t, err.Error(), "the message in flight was released")
	assert.Contains(t, stderr, `"msg":"message released: halting"`)
	assert.NotContains(t, stderr, "sk-wrong")
	assert.Less(t, time.Since(start), time.Minute, "halted, not retried until maxReceiveCount")
	// The first message's 40 rows go as two requests of 20 at once; the
	// second message is never started.
	assert.LessOrEqual(t, llm.Stats().Unauthorized, 2, "one refused message is enough to stop")

	api := sqstest.Client(t)
	assert.Empty(t, sqstest.ReceiveAll(t, api, dlq), "a halt dead-letters nothing")
	assert.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 1, "nothing written but the demo's row")
	// status says which job fails and why, from the record on its target.
	status := mustRun(t, "status", "--config", cfg)
	assert.Regexp(t, `last failure +\S+, FAILING: no commit since \(halt\), snapshot \d+: job sentiment, .*HTTP 401`, status)
	assert.NotContains(t, status, "sk-wrong")

	t.Setenv("OPENAI_API_KEY", "sk-right")
	_, stderr, err = runBoth(t, chat...)
	require.NoError(t, err, stderr)
	assert.Len(t, exportRows(t, cfg, "social.posts_sentiment"), 41)
	assert.Contains(t, mustRun(t, "status", "--config", cfg), "before the last commit: the job has moved on since")
}

// TestRunOnHaltWaitReceivesNothingUntilStopped: with --on-halt wait a
// halted run stays up without receiving (under ECS an exit would restart
// the task, whose receives count towards maxReceiveCount until every
// message reaches the DLQ), and SIGTERM ends it with the halt's reason.
func TestRunOnHaltWaitReceivesNothingUntilStopped(t *testing.T) {
	t.Parallel()
	_, url, dlq := runQueueWith(t, 10, map[string]string{"VisibilityTimeout": "1"})
	llm := (&fakellm.Server{Key: "sk-right"}).StartTB(t)
	cfg, _, _ := postsWarehouse(t, 40)
	for range 3 {
		mustRun(t, "publish", "--config", cfg, "--queue-url", url, "--table", "social.posts")
	}
	c := startChild(t, "cli", []string{"OPENAI_API_KEY=sk-wrong"}, "run", "--config", cfg, "--queue-url", url,
		"--on-halt", "wait", "--wait", "1s", "--concurrency", "1",
		"--provider", "openai", "--base-url", llm.URL()+"/v1", "--model", "m", "--log-format", "json")
	require.True(t, c.waitFor("consumer halted: receiving nothing until stopped and started again (--on-halt wait); fix the cause, then restart", 1), c.logs())
	refused := llm.Stats().Unauthorized
	// Three visibility timeouts and long polls: a run that went on
	// receiving would meet the refusing server again.
	time.Sleep(3 * time.Second)
	assert.Equal(t, refused, llm.Stats().Unauthorized, "a halted run asks the model nothing more")
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
	err := c.wait()
	require.Error(t, err, "the halt is the exit status")
	assert.Contains(t, c.logs(), "HTTP 401")
	assert.NotContains(t, c.logs(), "sk-wrong")

	api := sqstest.Client(t)
	assert.Empty(t, sqstest.ReceiveAll(t, api, dlq), "a halt dead-letters nothing")
	msgs := sqstest.ReceiveAll(t, api, url)
	require.Len(t, msgs, 3, "every event still in the queue")
	for _, m := range msgs {
		n, err := strconv.Atoi(m.Attributes["ApproximateReceiveCount"])
		require.NoError(t, err)
		assert.LessOrEqual(t, n, 2, "received at most once by the halted run (and once here)")
	}
}

// TestLambdaRetryBackoffFromEnv: the Lambda handler's backoff is run's
// default unless ENRICHER_RETRY_BACKOFF says otherwise, checked as
// --retry-backoff is.
func TestLambdaRetryBackoffFromEnv(t *testing.T) {
	for _, tt := range []struct {
		env  string
		want time.Duration
		err  string
	}{
		{env: "", want: 10 * time.Second},
		{env: "0s", want: 0},
		{env: "90s", want: 90 * time.Second},
		{env: "15m", want: 15 * time.Minute},
		{env: "16m", err: `ENRICHER_RETRY_BACKOFF="16m": want a duration from 0 to 15m0s`},
		{env: "-1s", err: "want a duration from 0"},
		{env: "10", err: "want a duration from 0"},
	} {
		t.Run(tt.env, func(t *testing.T) {
			t.Setenv(envRetryBackoff, tt.env)
			got, err := retryBackoffFromEnv()
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestRunOnHaltWaitWithDrainIsAUsageError: --drain ends the process when
// the queue is empty, --on-halt wait keeps it after a halt: the pair says
// two things.
func TestRunOnHaltWaitWithDrainIsAUsageError(t *testing.T) {
	t.Parallel()
	_, err := run(t, "run", "--queue-url", "http://127.0.0.1:1/q", "--drain", "--on-halt", "wait")
	require.ErrorIs(t, err, errUsage)
	assert.Contains(t, err.Error(), "choose one")
}
