package lambdabatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/lambdabatch"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/consumer/sqsqueue"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/iamactions"
	"github.com/socialdata/enricher/internal/lambdatest"
	"github.com/socialdata/enricher/internal/sqstest"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/internal/testlog"
)

func record(id string, body []byte, group string) events.SQSMessage {
	arn := "arn:aws:sqs:us-east-1:000000000000:snapshots"
	if group != "" {
		arn += ".fifo"
	}
	return events.SQSMessage{MessageId: id, Body: string(body), EventSourceARN: arn,
		Attributes: map[string]string{"ApproximateReceiveCount": "1", "MessageGroupId": group}}
}

func failedIDs(resp events.SQSEventResponse) []string {
	var ids []string
	for _, f := range resp.BatchItemFailures {
		ids = append(ids, f.ItemIdentifier)
	}
	return ids
}

func TestLambdaReportsPartialBatchFailures(t *testing.T) {
	t.Parallel()
	b := testbed.Setup(t)
	s1 := b.AppendPosts(40)
	s2 := b.AppendPosts(40)
	var done []lambdabatch.BatchDone
	h := &lambdabatch.Handler{Handler: b.Processor(nil), Logger: testbed.QuietLogger(),
		OnDone: func(d lambdabatch.BatchDone) { done = append(done, d) }}
	ev := events.SQSEvent{Records: []events.SQSMessage{
		record("a", b.Event(s1).Encode(), ""),
		record("b", []byte(`{"version": 1}`), ""), // poison; no DLQ configured: reported failed
		record("c", b.Event(s2).Encode(), ""),
	}}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	resp, err := h.Handle(ctx, ev)
	require.NoError(t, err)
	assert.Equal(t, []string{"b"}, failedIDs(resp))
	require.Len(t, done, 1)
	assert.Equal(t, lambdabatch.BatchDone{Records: 3, Failed: 1, DeadLettered: 0, Outcomes: done[0].Outcomes}, done[0],
		"without a DLQ the poison record is failed, not dead-lettered")
	b.RequireExactlyOnce(80, nil)
}

func TestLambdaFIFOFailsTheRestOfAGroup(t *testing.T) {
	t.Parallel()
	b := testbed.Setup(t)
	s1 := b.AppendPosts(10)
	h := &lambdabatch.Handler{Handler: b.Processor(nil), Logger: testbed.QuietLogger()}
	ev := events.SQSEvent{Records: []events.SQSMessage{
		record("a", []byte("not json"), "social.posts"),
		record("b", b.Event(s1).Encode(), "social.posts"),
		record("c", []byte(`{"version":1,"table":"other.t","snapshot_id":1}`), "other.t"),
	}}
	resp, err := h.Handle(t.Context(), ev)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "c"}, failedIDs(resp),
		"after a failure in a FIFO group, the rest of that group is reported failed too")
	// b was processed all the same; its redelivery will be a no-op.
	b.RequireExactlyOnce(10, nil)
}

func TestLambdaStopsBeforeItsDeadlineAndTheNextInvocationResumes(t *testing.T) {
	t.Parallel()
	b := testbed.Setup(t)
	b.ManyFiles()
	s1 := b.AppendPostsBatched(2000, 250)

	// The model stalls after 12 batches of 50 rows: two chunks of 300 rows
	// are committed, then the deadline comes.
	g := testbed.NewGate(t, b.Spec, 12)
	// The margin is what the handler has to stop, report and return in:
	// two seconds, so that a loaded 2-core machine under -race keeps it.
	h := &lambdabatch.Handler{Logger: testbed.QuietLogger(), Margin: 2 * time.Second,
		Handler: b.Processor(g, func(o *pipeline.Options) { o.ChunkRows = 300; o.BatchRows = 50; o.Workers = 1 })}
	ev := events.SQSEvent{Records: []events.SQSMessage{record("a", b.Event(s1).Encode(), "")}}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	resp, err := h.Handle(ctx, ev)
	require.NoError(t, err)
	require.NoError(t, ctx.Err(), "the handler returned before the invocation's deadline")
	assert.Equal(t, []string{"a"}, failedIDs(resp), "unfinished work is reported failed")
	wm := b.Watermark()
	require.Equal(t, s1, wm.PartialSnapshotID, "some chunks were committed: %+v", wm)
	committed := len(b.TargetRows())
	require.Equal(t, 600, committed, "two 300-row chunks were committed")

	h2 := &lambdabatch.Handler{Logger: testbed.QuietLogger(), Handler: b.Processor(nil)}
	resp, err = h2.Handle(t.Context(), ev)
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures)
	b.RequireExactlyOnce(2000, nil)
}

// TestLambdaRecordedEvent feeds the handler an SQS event in the JSON shape
// the Lambda runtime delivers (testdata/sqs-event.json).
func TestLambdaRecordedEvent(t *testing.T) {
	t.Parallel()
	b := testbed.Setup(t)
	s1 := b.AppendPosts(25)
	raw, err := os.ReadFile("testdata/sqs-event.json")
	require.NoError(t, err)
	var ev events.SQSEvent
	require.NoError(t, json.Unmarshal([]byte(strings.ReplaceAll(string(raw), "SNAPSHOT", strconv.FormatInt(s1, 10))), &ev))
	require.Len(t, ev.Records, 2)

	h := &lambdabatch.Handler{Handler: b.Processor(nil), Logger: testbed.QuietLogger()}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resp, err := h.Handle(ctx, ev)
	require.NoError(t, err)
	// The second record misses snapshot_id: poison, and without a DLQ it is
	// reported failed (the queue's redrive policy will take it).
	assert.Equal(t, []string{"2e1424d4-f796-459a-8184-9c92662be6da"}, failedIDs(resp))
	b.RequireExactlyOnce(25, nil)
}

func TestLambdaDeadLettersPoisonRecordsAtOnce(t *testing.T) {
	t.Parallel()
	api, b, q := sqstest.Setup(t, sqstest.Options{MaxReceives: 5})
	s1 := b.AppendPosts(10)
	var started int
	var done []lambdabatch.BatchDone
	h := &lambdabatch.Handler{Handler: b.Processor(nil), API: api, DLQURL: q.DLQ, Logger: testbed.QuietLogger(),
		OnStart: func() { started++ }, OnDone: func(d lambdabatch.BatchDone) { done = append(done, d) }}
	resp, err := h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{
		record("a", b.Event(s1).Encode(), ""),
		record("b", []byte("garbage"), ""),
	}})
	require.NoError(t, err)
	assert.Empty(t, resp.BatchItemFailures, "the poison record is dead-lettered, so Lambda may delete it")
	assert.Equal(t, 1, started)
	require.Len(t, done, 1)
	assert.Equal(t, 2, done[0].Records)
	assert.Equal(t, 0, done[0].Failed)
	assert.Equal(t, 1, done[0].DeadLettered)
	assert.False(t, done[0].Halted)
	assert.Len(t, done[0].Outcomes, 2)
	dead := sqstest.ReceiveAll(t, api, q.DLQ)
	require.Len(t, dead, 1)
	assert.Equal(t, "garbage", aws.ToString(dead[0].Body))
	assert.Equal(t, consumer.ReasonBadMessage, aws.ToString(dead[0].MessageAttributes[sqsqueue.AttrReason].StringValue))
	b.RequireExactlyOnce(10, nil)
}

// refusing is a model whose server refuses the configuration.
type refusing struct{ calls atomic.Int64 }

func (r *refusing) Name() string { return "test/refusing" }
func (r *refusing) Annotate(context.Context, []enrich.Item, []enrich.Answer) error {
	r.calls.Add(1)
	return fmt.Errorf("model test: HTTP 401: %w", enrich.ErrModelUnusable)
}

// TestLambdaHaltReportsTheRestFailed: a failure every record would meet
// stops the batch and reports every unfinished record failed (none is
// dead-lettered); the invocation itself succeeds, so that Lambda does not
// hand back the records already settled.
func TestLambdaHaltReportsTheRestFailed(t *testing.T) {
	t.Parallel()
	b := testbed.Setup(t)
	s1 := b.AppendPosts(10)
	model := &refusing{}
	var done []lambdabatch.BatchDone
	h := &lambdabatch.Handler{Handler: b.Processor(model), Logger: testbed.QuietLogger(),
		OnDone: func(d lambdabatch.BatchDone) { done = append(done, d) }}
	resp, err := h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{
		record("a", b.Event(s1).Encode(), ""),
		record("b", b.Event(s1).Encode(), ""),
		record("c", b.Event(s1).Encode(), ""),
	}})
	require.NoError(t, err, "failing the invocation would hand back the settled records too")
	assert.Equal(t, []string{"a", "b", "c"}, failedIDs(resp))
	require.Len(t, done, 1)
	assert.True(t, done[0].Halted)
	assert.Equal(t, 3, done[0].Failed)
	assert.Equal(t, int64(1), model.calls.Load(), "no record is started after the halt")
	assert.Empty(t, b.TargetRows())
}

// gated answers like the lexicon once open is closed.
type gated struct {
	inner   enrich.Model
	entered chan struct{} // closed at the first call
	once    sync.Once
	open    chan struct{}
}

func (g *gated) Name() string { return "test/gated" }
func (g *gated) Annotate(ctx context.Context, items []enrich.Item, out []enrich.Answer) error {
	g.once.Do(func() { close(g.entered) })
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.inner.Annotate(ctx, items, out)
}

// TestLambdaRunsOneBatchAtATime: two invocations at once in one process
// (Lambda Managed Instances) run one after the other, each with its own
// OnStart and OnDone; one that cannot start before its margin reports
// every record failed and starts nothing.
func TestLambdaRunsOneBatchAtATime(t *testing.T) {
	t.Parallel()
	b := testbed.Setup(t)
	s1 := b.AppendPosts(10)
	lex, err := enrich.NewLexicon(b.Spec)
	require.NoError(t, err)
	model := &gated{inner: lex, entered: make(chan struct{}), open: make(chan struct{})}
	var running, most atomic.Int64
	var done atomic.Int64
	h := &lambdabatch.Handler{Handler: b.Processor(model), Logger: testbed.QuietLogger(), Margin: time.Second,
		OnStart: func() {
			if n := running.Add(1); n > most.Load() {
				most.Store(n)
			}
		},
		OnDone: func(lambdabatch.BatchDone) { running.Add(-1); done.Add(1) }}

	first := make(chan events.SQSEventResponse)
	go func() { // ends when the model is opened below
		resp, err := h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{record("a", b.Event(s1).Encode(), "")}})
		assert.NoError(t, err)
		first <- resp
	}()
	<-model.entered

	// A second invocation whose margin comes before the first ends.
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	resp, err := h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{
		record("b", b.Event(s1).Encode(), ""), record("c", b.Event(s1).Encode(), "")}})
	require.NoError(t, err)
	assert.Equal(t, []string{"b", "c"}, failedIDs(resp), "not started: every record comes back")
	assert.Zero(t, done.Load(), "the waiting invocation ran nothing")

	// A third waits for the first and then runs.
	third := make(chan events.SQSEventResponse)
	go func() { // ends once the first batch has released its slot
		resp, err := h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{record("d", b.Event(s1).Encode(), "")}})
		assert.NoError(t, err)
		third <- resp
	}()
	close(model.open)
	assert.Empty(t, (<-first).BatchItemFailures)
	assert.Empty(t, (<-third).BatchItemFailures)
	assert.Equal(t, int64(2), done.Load())
	assert.Equal(t, int64(1), most.Load(), "never two batches at once")
	b.RequireExactlyOnce(10, nil)
}

// logBuffer is a logger whose JSON lines a test reads back.
func logBuffer() (*slog.Logger, *testlog.Buffer) {
	var buf testlog.Buffer
	return slog.New(slog.NewJSONHandler(&buf, nil)), &buf
}

// TestLambdaHaltPausesTheEventSource: a halt disables the function's
// event source mapping of the batch's queue through the Lambda API (and no
// other mapping), so that Lambda stops handing out batches that would
// meet the same halt; the log says how to enable it again. A batch that
// does not halt calls nothing.
func TestLambdaHaltPausesTheEventSource(t *testing.T) {
	t.Parallel()
	const queue = "arn:aws:sqs:us-east-1:000000000000:snapshots"
	api := lambdatest.Start(t,
		lambdatest.Mapping{UUID: "other-fn", Function: "someone-else", SourceARN: queue, State: "Enabled"},
		lambdatest.Mapping{UUID: "off", Function: "enricher", SourceARN: queue, State: "Disabled"},
		lambdatest.Mapping{UUID: "other-queue", Function: "enricher", SourceARN: queue + "-2", State: "Enabled"},
		lambdatest.Mapping{UUID: "ours", Function: "enricher", SourceARN: queue, State: "Enabled"},
	)
	b := testbed.Setup(t)
	s1 := b.AppendPosts(10)
	lex, err := enrich.NewLexicon(b.Spec)
	require.NoError(t, err)
	var done []lambdabatch.BatchDone
	log, buf := logBuffer()
	h := &lambdabatch.Handler{Handler: b.Processor(lex), Logger: log, Mappings: api.Client(), FunctionName: "enricher",
		OnDone: func(d lambdabatch.BatchDone) { done = append(done, d) }}
	resp, err := h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{record("ok", b.Event(s1).Encode(), "")}})
	require.NoError(t, err)
	require.Empty(t, failedIDs(resp))
	assert.Empty(t, api.Updates(), "a batch that does not halt leaves the event source alone")

	s2 := b.AppendPosts(5)
	h.Handler = b.Processor(&refusing{})
	resp, err = h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{
		record("a", b.Event(s2).Encode(), ""), record("b", b.Event(s2).Encode(), ""),
	}})
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, failedIDs(resp))
	assert.Equal(t, []string{"ours enabled=false"}, api.Updates())
	list, update := iamactions.PauseEventSource()
	assert.Equal(t, []string{list, update}, api.Actions(), "the calls are those the stack grants")
	assert.Equal(t, "Disabled", api.State("ours"))
	assert.Equal(t, "Enabled", api.State("other-fn"))
	assert.Equal(t, "Enabled", api.State("other-queue"))
	require.Len(t, done, 2)
	assert.Equal(t, lambdabatch.Paused{Disabled: []string{"ours"}, Off: []string{"off"}}, done[1].Paused)
	line := onlyLogLine(t, buf.String(), "lambda event source paused")
	assert.Equal(t, "aws lambda update-event-source-mapping --enabled --uuid ours", line["enable_with"])
	assert.Equal(t, "ERROR", line["level"])

	// A second halt (another invocation's batch) finds it off already.
	_, err = h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{record("c", b.Event(s2).Encode(), "")}})
	require.NoError(t, err)
	assert.Equal(t, []string{"ours enabled=false"}, api.Updates(), "nothing disabled twice")
	assert.Equal(t, lambdabatch.Paused{Off: []string{"off", "ours"}}, done[2].Paused)
}

// TestLambdaHaltThatCannotPauseSaysSo: without the permission (or with
// the mapping held by another change) the halt still reports the records
// failed and succeeds, and the log says the event source goes on.
func TestLambdaHaltThatCannotPauseSaysSo(t *testing.T) {
	t.Parallel()
	const queue = "arn:aws:sqs:us-east-1:000000000000:snapshots"
	b := testbed.Setup(t)
	s1 := b.AppendPosts(5)
	for _, tt := range []struct {
		name    string
		busy    bool
		refuse  string
		mapping bool
		want    string
		paused  lambdabatch.Paused
	}{
		{name: "refused", refuse: "lambda:ListEventSourceMappings", mapping: true,
			want: "not authorized to perform: lambda:ListEventSourceMappings"},
		{name: "busy", busy: true, mapping: true, paused: lambdabatch.Paused{Busy: []string{"ours"}}},
		{name: "no mapping", want: "has no event source mapping from " + queue},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var ms []lambdatest.Mapping
			if tt.mapping {
				ms = append(ms, lambdatest.Mapping{UUID: "ours", Function: "enricher", SourceARN: queue, State: "Enabled", Busy: tt.busy})
			}
			api := lambdatest.Start(t, ms...)
			api.Refuse(tt.refuse)
			log, buf := logBuffer()
			var done lambdabatch.BatchDone
			h := &lambdabatch.Handler{Handler: b.Processor(&refusing{}), Logger: log, Mappings: api.Client(), FunctionName: "enricher",
				OnDone: func(d lambdabatch.BatchDone) { done = d }}
			resp, err := h.Handle(t.Context(), events.SQSEvent{Records: []events.SQSMessage{record("a", b.Event(s1).Encode(), "")}})
			require.NoError(t, err)
			assert.Equal(t, []string{"a"}, failedIDs(resp))
			assert.True(t, done.Halted)
			assert.Equal(t, tt.paused, done.Paused)
			assert.Empty(t, api.Updates())
			if tt.busy {
				onlyLogLine(t, buf.String(), "lambda event source not paused: the mapping is being changed by another call")
			} else if tt.want != "" {
				line := onlyLogLine(t, buf.String(), "lambda event source not paused: the next batches meet the same halt and count receives towards maxReceiveCount")
				assert.Contains(t, line["err"], tt.want)
			} else {
				onlyLogLine(t, buf.String(), "lambda event source paused: no batch is received until the mapping is enabled again; fix the cause, then enable it")
			}
		})
	}
}

// onlyLogLine is the one JSON log line whose msg starts with msg.
func onlyLogLine(t *testing.T, logs, msg string) map[string]any {
	t.Helper()
	var found []map[string]any
	for l := range strings.Lines(logs) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), "log line %q", l)
		if s, _ := m["msg"].(string); strings.HasPrefix(s, msg) {
			found = append(found, m)
		}
	}
	require.Len(t, found, 1, "log lines starting %q in:\n%s", msg, logs)
	return found[0]
}
