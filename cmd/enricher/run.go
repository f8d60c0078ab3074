package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/consumer/sqsqueue"
)

// envQueueURL names the source queue when --queue-url is not given.
const envQueueURL = "ENRICHER_QUEUE_URL"

// newSQSClient builds an SQS client from the standard AWS settings
// (AWS_REGION, credentials chain, AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL).
func newSQSClient(ctx context.Context) (*sqs.Client, error) {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	// sqsqueue.OwnBody on every call: see there (an SDK retry race that can
	// hide a received batch for a visibility timeout).
	return sqs.NewFromConfig(cfg, sqsqueue.OwnBody), nil
}

func queueURL(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if env := os.Getenv(envQueueURL); env != "" {
		return env, nil
	}
	return "", fmt.Errorf("%w: --queue-url URL is required (or set %s)", errUsage, envQueueURL)
}

// runCmd is `enricher run`, the consumer daemon.
type runCmd struct {
	cmdBase

	queue, dlq  string
	drain       bool
	concurrency int
	wait        time.Duration
	grace       time.Duration
	metricsAddr string
	backoff     time.Duration
	onHalt      string
	model       modelFlags

	// stageHook, when set, is called after every stage step of the
	// pipeline, as pipeline.Options.OnStage is (after the metrics, when
	// they are served). Tests hold a stage with it; no flag sets it.
	stageHook func(job, stage string, d time.Duration)

	// Derived by Validate.
	url string
}

func newRunCmd(g *globals) *cobra.Command { return (&runCmd{cmdBase: cmdBase{g: g}}).command() }

// command is the cobra command that binds r's flags and runs r (a test
// builds one around a runCmd whose stageHook it has set).
func (r *runCmd) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run --queue-url URL",
		Short: "Long-poll an SQS queue and process snapshot events until stopped",
		Long: `run is the consumer daemon. It long-polls the SQS queue (standard or FIFO) for
snapshot events, brings every job reading the event's table up to the event's
snapshot, and deletes each message only after its target commits.

The SQS endpoint, region and credentials come from the standard AWS settings:
AWS_REGION, the credentials chain, AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL.

It works on --concurrency messages at once but on one table's messages one
after the other. While a message is worked on its visibility is extended
(heartbeat). Messages that can never succeed (not JSON, wrong contract, unknown
table or job, a schema the job cannot read) go to the dead-letter queue at once,
with the reason in message attributes; the DLQ is the one in the queue's
RedrivePolicy unless --dlq-url names another. Other failures release the
message so that it comes back after --retry-backoff, doubled with each receive,
and the queue's redrive policy moves it to the DLQ after maxReceiveCount
receives (if the queue has one).

A failure every message would meet (the model server refuses the key or the
request, the token budget is spent, a target table property the writers cannot
use) halts: the message is released untouched, nothing is dead-lettered, and
run stops receiving. With --on-halt exit (the default) it exits with status 1
and the reason. With --on-halt wait it logs the reason ("consumer halted") and
waits, receiving nothing, until SIGINT or SIGTERM: for a service manager that
restarts a task that exits (ECS), where each restart would receive the
messages again and count receives towards maxReceiveCount until they reach
the DLQ. Fix the cause, then restart it.

For jobs with model.batch_api, an event's rows are sent as Batch API batches,
recorded on the target, and the message is deleted; run then collects the
batches every model.batch.poll (or --batch-poll) and writes their rows when
the provider has answered. With --drain it collects once more before it exits
and logs how many batches are still pending (the next run or enricher batches
collect takes them).

SIGINT or SIGTERM stops receiving at once; work in flight gets the shutdown
grace period, then is cancelled and its message released. Chunks already
committed stay committed and the next delivery resumes after them. A second
signal exits at once; the messages in flight come back when their visibility
timeout ends.`,
		Example: `  AWS_ENDPOINT_URL_SQS=http://127.0.0.1:4566 enricher run --config enricher.yaml \
      --queue-url http://127.0.0.1:4566/000000000000/snapshots --drain`,
		Args: cobra.NoArgs,
		RunE: runE(r),
	}
	f := cmd.Flags()
	f.StringVar(&r.queue, "queue-url", "", "source queue URL (default $"+envQueueURL+")")
	f.StringVar(&r.dlq, "dlq-url", "", "dead-letter queue URL (default: from the queue's RedrivePolicy)")
	f.BoolVar(&r.drain, "drain", false, "exit 0 once the queue is empty and nothing is in flight")
	f.IntVar(&r.concurrency, "concurrency", runtime.GOMAXPROCS(0), "messages worked on at once (one table at a time)")
	f.DurationVar(&r.wait, "wait", 20*time.Second, "long-poll wait of one receive (at most 20s)")
	f.DurationVar(&r.grace, "shutdown-grace", 0, "how long work in flight may finish after SIGTERM (default: config, else 30s)")
	f.StringVar(&r.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address, e.g. :9090 (/metrics, /healthz)")
	f.DurationVar(&r.backoff, "retry-backoff", defaultRetryBackoff, "a message that failed for a passing reason comes back after this, doubled per receive (at most 15m); 0: at once")
	choiceVar(f, &r.onHalt, "on-halt", "after a halt, exit with status 1 (exit), or stop receiving and wait for a signal (wait: under a service manager that restarts exited tasks)", onHaltExit, onHaltWait)
	r.model.register(f)
	return cmd
}

// The choices of run --on-halt.
const (
	onHaltExit = "exit"
	onHaltWait = "wait"
)

func (r *runCmd) Validate() error {
	url, err := queueURL(r.queue)
	if err != nil {
		return err
	}
	if r.wait < time.Second || r.wait > 20*time.Second {
		return fmt.Errorf("%w: --wait %s: SQS long polls last 1s to 20s", errUsage, r.wait)
	}
	if r.concurrency < 1 || r.concurrency > 1024 {
		return fmt.Errorf("%w: --concurrency %d: want 1 to 1024 messages at once", errUsage, r.concurrency)
	}
	if r.grace < 0 {
		return fmt.Errorf("%w: --shutdown-grace %s must not be negative", errUsage, r.grace)
	}
	if r.drain && r.onHalt == onHaltWait {
		return fmt.Errorf("%w: --drain exits once the queue is empty, --on-halt wait waits for a signal after a halt: choose one", errUsage)
	}
	if r.backoff < 0 || r.backoff > consumer.MaxRetryBackoff {
		return fmt.Errorf("%w: --retry-backoff %s: want 0 to %s", errUsage, r.backoff, consumer.MaxRetryBackoff)
	}
	r.url = url
	return nil
}

// Run consumes the queue until it is drained (with --drain), ctx is
// cancelled or a halt stops the consumer.
func (r *runCmd) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	log := r.log
	r.g.model = &r.model
	env, err := r.g.open(ctx, true)
	if err != nil {
		return err
	}
	defer env.Close()
	api, err := newSQSClient(ctx)
	if err != nil {
		return err
	}
	src, err := sqsqueue.NewSource(ctx, api, sqsqueue.Config{QueueURL: r.url, DLQURL: r.dlq, WaitTime: r.wait, Drain: r.drain})
	if err != nil {
		return err
	}
	c := &consumer.Consumer{Source: src, Logger: log, Concurrency: r.concurrency, Grace: r.grace, RetryBackoff: r.backoff}
	onStage := r.stageHook
	var onBatch func(pipeline.BatchReport)
	if r.metricsAddr != "" {
		m, stop, err := r.metrics(ctx, env.jobs)
		if err != nil {
			return err
		}
		defer stop()
		onStage, c.OnOutcome, onBatch = chainStages(m.ObserveStage, r.stageHook), m.Observe, m.ObserveBatch
	}
	proc, err := env.processor(log, func(o *pipeline.Options) { o.OnStage = onStage })
	if err != nil {
		return err
	}
	c.Handler = proc
	if c.Grace == 0 {
		c.Grace = env.cfg.grace()
	}
	for _, w := range src.Warnings() {
		log.Warn(w)
	}
	if src.DLQURL() == "" {
		log.Warn("the queue has no dead-letter queue (no RedrivePolicy, no --dlq-url): messages that can never succeed will come back until they expire")
	}
	log.Info("consumer started", "queue", r.url, "dlq", src.DLQURL(), "concurrency", r.concurrency, "drain", r.drain, "jobs", len(env.jobs))
	bjobs := batchJobs(env.jobs, "")
	stopCollector := func() {}
	if len(bjobs) > 0 {
		stopCollector = startCollector(ctx, proc, bjobs, log, onBatch)
	}
	runErr := c.Run(ctx)
	stopCollector()
	if len(bjobs) > 0 && runErr == nil && ctx.Err() == nil {
		// A drained queue: bring in what has ended meanwhile, and say
		// what is left (durable: the next run or batches collect takes it).
		reps, err := proc.Collect(ctx, "")
		pending := 0
		for _, rep := range reps {
			logBatchReport(log, rep)
			if onBatch != nil {
				onBatch(rep)
			}
			if rep.State != pipeline.BatchCommitted {
				pending++
			}
		}
		if err != nil {
			log.Warn("collecting batches failed", collectFailure(err)...)
		}
		if pending > 0 {
			log.Info("batches still pending: the next run or `enricher batches collect` brings them in", "pending", pending)
		}
	}
	for _, j := range env.jobs {
		if u, ok := usageOf(j.Model); ok {
			log.Info("model usage", "job", j.Spec.Name, "model", j.Model.Name(), "usage", u.String())
		}
	}
	if errors.As(runErr, new(*consumer.HaltError)) {
		// A spent token budget, a model that refuses the key: every
		// later message would fail the same way.
		if r.onHalt == onHaltWait && ctx.Err() == nil {
			log.Error("consumer halted: receiving nothing until stopped and started again (--on-halt wait); fix the cause, then restart",
				"err", runErr)
			<-ctx.Done()
		}
		return fmt.Errorf("stopped: %w; committed chunks stay, the message in flight was released for a later run", runErr)
	}
	if runErr != nil {
		return runErr
	}
	log.Info("consumer stopped")
	return nil
}

// metrics registers the process's, the models' and the consumer's
// metrics and serves them on --metrics-addr until the returned stop is
// called.
func (r *runCmd) metrics(ctx context.Context, jobs []pipeline.Job) (*pipeline.Metrics, func(), error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(pipeline.NewModelCollector(jobs))
	m := pipeline.NewMetrics(reg)
	stop, err := serveMetrics(ctx, r.log, r.metricsAddr, reg)
	if err != nil {
		return nil, nil, err
	}
	return m, stop, nil
}

// chainStages is an OnStage hook that calls first and then second, either
// of which may be nil.
func chainStages(first, second func(job, stage string, d time.Duration)) func(job, stage string, d time.Duration) {
	switch {
	case first == nil:
		return second
	case second == nil:
		return first
	}
	return func(job, stage string, d time.Duration) {
		first(job, stage, d)
		second(job, stage, d)
	}
}

// serveMetrics serves /metrics and /healthz on addr until the returned
// stop is called.
func serveMetrics(ctx context.Context, log *slog.Logger, addr string, reg *prometheus.Registry) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	})
	log.Info("serving metrics", "addr", ln.Addr().String())
	return func() {
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil {
			log.Warn("metrics server shutdown", "err", err)
		}
		wg.Wait()
	}, nil
}
