package pipeline_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/fakellm"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

// batchBed is a warehouse whose sentiment job asks the fake server through
// its Batch API.
type batchBed struct {
	*bundle
	llm  *fakellm.Server
	chat *enrich.Chat
	p    *pipeline.Processor
}

func newBatchBed(t *testing.T, llm *fakellm.Server, edit func(*enrich.Spec), opts ...testbed.ProcOpt) *batchBed {
	t.Helper()
	return newBatchBedWith(t, llm, edit, nil, opts...)
}

func newBatchBedWith(t *testing.T, llm *fakellm.Server, edit func(*enrich.Spec), hc *http.Client, opts ...testbed.ProcOpt) *batchBed {
	t.Helper()
	return newBatchBedCreate(t, llm, edit, hc, 30*time.Second, opts...)
}

// newBatchBedCreate is newBatchBedWith with the bound of one batch
// creation. The default is generous: a creation that outlives it fails, and
// a loaded CI machine must not make that happen by accident. Tests of a lost
// creation pass a short one, so that the claim grace (at least twice the
// bound) passes quickly.
func newBatchBedCreate(t *testing.T, llm *fakellm.Server, edit func(*enrich.Spec), hc *http.Client, createTimeout time.Duration, opts ...testbed.ProcOpt) *batchBed {
	t.Helper()
	b := setup(t)
	llm.StartTB(t)
	spec, err := enrich.LoadSpecWith(testbed.SentimentSpec(), enrich.Overrides{
		Provider: enrich.ProviderOpenAI, BaseURL: llm.URL() + "/v1", RowsPerRequest: 10, BatchAPI: true,
	})
	require.NoError(t, err)
	if edit != nil {
		edit(spec)
	}
	b.Spec = spec
	chat, err := enrich.NewChat(spec, enrich.ChatOptions{Logger: quietLogger(), RetryBase: time.Millisecond, CacheSize: -1, HTTPClient: hc, BatchCreateTimeout: createTimeout})
	require.NoError(t, err)
	t.Cleanup(chat.Close)
	return &batchBed{bundle: b, llm: llm, chat: chat, p: b.Processor(chat, opts...)}
}

func (bb *batchBed) pending() []storage.PendingBatch {
	bb.T.Helper()
	tgt, err := bb.Cat.LoadTable(bb.T.Context(), bb.Spec.Target.Table)
	require.NoError(bb.T, err)
	list, err := storage.PendingBatches(tgt, bb.Spec.Name)
	require.NoError(bb.T, err)
	return list
}

func (bb *batchBed) collect() []pipeline.BatchReport {
	bb.T.Helper()
	reps, err := bb.p.Collect(bb.T.Context(), "")
	require.NoError(bb.T, err)
	return reps
}

func states(reps []pipeline.BatchReport) []pipeline.BatchState {
	out := make([]pipeline.BatchState, len(reps))
	for i, r := range reps {
		out[i] = r.State
	}
	return out
}

// statusCounts counts the target's rows by _status.
func (bb *batchBed) statusCounts() map[string]int {
	out := map[string]int{}
	for _, r := range bb.TargetRows() {
		out[r[enrich.ColStatus].(string)]++
	}
	return out
}

// The Batch API path end to end: events are let go once their batches are
// recorded (the watermark stays), a redelivered event submits nothing, a
// later event queues behind, and collecting writes every row exactly once
// with the watermark moved in order.
func TestBatchRowsAreCommittedExactlyOnceWhenCollected(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	llm := &fakellm.Server{BatchDelay: time.Hour, Clock: func() time.Time { return time.Unix(0, clock.Load()) }}
	bb := newBatchBed(t, llm, nil)
	ctx := t.Context()

	s1 := bb.AppendPosts(120)
	res, err := bb.p.Process(ctx, bb.Event(s1))
	require.NoError(t, err)
	require.Len(t, res, 1)
	assert.Equal(t, pipeline.OutcomeBatched, res[0].Outcome)
	assert.Equal(t, 1, res[0].Batches)
	assert.Equal(t, int64(120), res[0].BatchRows)
	assert.Zero(t, res[0].RowsWritten, "nothing is written before the answers are in")
	assert.True(t, bb.Watermark().Cursor.IsZero(), "the watermark waits for the batch")
	require.Len(t, bb.pending(), 1)
	require.Len(t, llm.Batches(), 1)
	texts := bb.pending()[0].Texts
	assert.Greater(t, texts, 100, "the sample has a few repeated and blank texts")
	assert.Equal(t, (texts+9)/10, llm.Batches()[0].Lines, "the distinct texts in lines of 10")
	assert.Equal(t, "sentiment", llm.Batches()[0].Metadata["enricher_job"])

	// A redelivery submits nothing again.
	res, err = bb.p.Process(ctx, bb.Event(s1))
	require.NoError(t, err)
	assert.Equal(t, pipeline.OutcomeUpToDate, res[0].Outcome)
	assert.Len(t, llm.Batches(), 1, "no second submission")

	// A later event queues behind the pending batch.
	s2 := bb.AppendPosts(30)
	res, err = bb.p.Process(ctx, bb.Event(s2))
	require.NoError(t, err)
	assert.Equal(t, pipeline.OutcomeBatched, res[0].Outcome)
	list := bb.pending()
	require.Len(t, list, 2)
	assert.Equal(t, list[0].To, list[1].From, "ranges follow each other")
	assert.Equal(t, storage.Cursor{SnapshotID: s2}, list[1].To)

	// Not ended yet: nothing is written.
	reps := bb.collect()
	assert.Equal(t, []pipeline.BatchState{pipeline.BatchWaiting}, states(reps), "the first batch stops the collection")
	assert.Empty(t, bb.TargetRows())

	clock.Add(int64(2 * time.Hour))
	reps = bb.collect()
	assert.Equal(t, []pipeline.BatchState{pipeline.BatchCommitted, pipeline.BatchCommitted}, states(reps))
	assert.Equal(t, int64(120), reps[0].Counts.Total())
	assert.Zero(t, reps[0].Counts[enrich.StatusFailed]+reps[0].Counts[enrich.StatusInvalidOutput])
	bb.RequireExactlyOnce(150, splitAt(120, s1, s2))
	assert.Equal(t, storage.Cursor{SnapshotID: s2}, bb.Watermark().Cursor)
	assert.Empty(t, bb.pending())
	sc := bb.statusCounts()
	assert.Equal(t, 150, sc["ok"]+sc["skipped"], "every row answered (or blank: skipped)")
	for _, r := range bb.TargetRows() {
		if r[enrich.ColStatus] != "ok" {
			continue
		}
		require.Equal(t, "openai/"+bb.Spec.Model.Name, r[enrich.ColModel])
	}
	assert.Empty(t, bb.collect(), "nothing left to collect")
	u := bb.chat.Usage()
	assert.Positive(t, u.BatchPromptTokens, "the batch's tokens are counted as batch tokens")
	assert.Zero(t, u.PromptTokens, "and none as synchronous ones")
	assert.Greater(t, u.BatchRowsSent, int64(texts), "the texts of both batches are counted as sent")
	assert.LessOrEqual(t, u.BatchRowsSent, int64(150))
	for _, r := range llm.Requests() {
		assert.NotEmpty(t, r.Batch, "every row went through the Batch API, none synchronously")
	}
}

// A range bigger than model.batch.max_rows goes as several batches, each
// ending inside a data file when it must.
func TestBigRangeIsCutIntoBatches(t *testing.T) {
	t.Parallel()
	bb := newBatchBed(t, &fakellm.Server{}, func(s *enrich.Spec) { s.Model.Batch.MaxRows = 45 })
	s1 := bb.AppendPosts(100) // one data file
	res, err := bb.p.Process(t.Context(), bb.Event(s1))
	require.NoError(t, err)
	assert.Equal(t, 3, res[0].Batches)
	list := bb.pending()
	require.Len(t, list, 3)
	assert.Equal(t, []int64{45, 45, 10}, []int64{list[0].Rows, list[1].Rows, list[2].Rows})
	assert.Equal(t, storage.Cursor{PartialSnapshotID: s1, PartialRows: 45}, list[0].To)
	reps := bb.collect()
	assert.Equal(t, []pipeline.BatchState{pipeline.BatchCommitted, pipeline.BatchCommitted, pipeline.BatchCommitted}, states(reps))
	bb.RequireExactlyOnce(100, nil)
	assert.Equal(t, storage.Cursor{SnapshotID: s1}, bb.Watermark().Cursor)
}

// Failed lines, rows missing from an answer and an expired batch's rest are
// asked again synchronously when few, and every row ends ok.
func TestUnansweredRowsAreAskedAgainSynchronously(t *testing.T) {
	t.Parallel()
	var lineN atomic.Int64
	llm := &fakellm.Server{
		BatchLineFault: func(string, []byte) fakellm.BatchLineFault {
			switch lineN.Add(1) {
			case 1:
				return fakellm.ErrorLine
			case 2:
				return fakellm.ServerErrorLine
			case 3:
				return fakellm.SkipLine
			}
			return fakellm.LineAnswered
		},
		Fault: func(r *fakellm.Request) fakellm.Fault {
			if r.Batch != "" && r.N%4 == 0 {
				return fakellm.DropRow
			}
			return fakellm.None
		},
	}
	bb := newBatchBed(t, llm, nil)
	s1 := bb.AppendPosts(100)
	_, err := bb.p.Process(t.Context(), bb.Event(s1))
	require.NoError(t, err)
	reps := bb.collect()
	require.Equal(t, []pipeline.BatchState{pipeline.BatchCommitted}, states(reps))
	assert.Greater(t, reps[0].Retried, 30, "three lines of 10 failed, plus dropped rows")
	sc := bb.statusCounts()
	assert.Equal(t, 100, sc["ok"]+sc["skipped"], "every row answered in the end (or blank: skipped)")
	sync := 0
	for _, r := range llm.Requests() {
		if r.Batch == "" {
			sync++
		}
	}
	assert.Positive(t, sync, "the retries went as chat requests")
	assert.Len(t, llm.Batches(), 1)
	bb.RequireExactlyOnce(100, nil)
}

// With retry: batch, unanswered rows go as a new batch (in smaller
// request lines); when the attempts are spent, they are written failed
// with the reason.
func TestUnansweredRowsGoAsANewBatchThenFail(t *testing.T) {
	t.Parallel()
	llm := &fakellm.Server{
		BatchEnd: func(b fakellm.BatchInfo) fakellm.BatchEnd {
			if b.N == 1 {
				return fakellm.BatchEnd{Status: fakellm.BatchExpired, Answered: 6}
			}
			return fakellm.BatchEnd{Status: fakellm.BatchFailed, Code: "token_limit_exceeded", Message: "enqueued token limit reached"}
		},
	}
	bb := newBatchBed(t, llm, func(s *enrich.Spec) {
		s.Model.Batch.Retry = enrich.BatchRetryBatch
		s.Model.Batch.Attempts = 2
	})
	s1 := bb.AppendPosts(100)
	_, err := bb.p.Process(t.Context(), bb.Event(s1))
	require.NoError(t, err)

	texts := bb.pending()[0].Texts
	reps := bb.collect()
	require.Equal(t, []pipeline.BatchState{pipeline.BatchRetried}, states(reps))
	assert.Equal(t, texts-60, reps[0].Retried, "6 lines of 10 answered before the batch expired")
	batches := llm.Batches()
	require.Len(t, batches, 2)
	assert.Equal(t, (texts-60+4)/5, batches[1].Lines, "in lines of 5: each retry halves the rows per request")
	assert.Empty(t, bb.TargetRows(), "nothing is written while a retry is pending")
	assert.Len(t, bb.pending()[0].Attempts, 2)

	reps = bb.collect()
	require.Equal(t, []pipeline.BatchState{pipeline.BatchCommitted}, states(reps))
	sc := bb.statusCounts()
	assert.GreaterOrEqual(t, sc["ok"], 60, "the rows of the 6 answered lines (and rows repeating their texts)")
	assert.Positive(t, sc["failed"])
	assert.Equal(t, 100, sc["ok"]+sc["failed"])
	for _, r := range bb.TargetRows() {
		if r[enrich.ColStatus] == "failed" {
			assert.Contains(t, r[enrich.ColError], "token_limit_exceeded", "the reason of the last attempt")
		}
	}
	bb.RequireExactlyOnce(100, nil)
	assert.Len(t, llm.Batches(), 2)
}

// A crash between creating a batch and recording its ID: the batch is
// found by its input file and adopted, never created twice; a crash
// before the batch was created: it is created once, after the grace.
func TestCrashAroundBatchCreationNeverPaysTwice(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		created bool // the server created the batch before the "crash"
	}{
		{"after the create", true},
		{"before the create", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, crash := context.WithCancel(t.Context())
			defer crash()
			var once sync.Once
			llm := &fakellm.Server{}
			var cut cutCreate
			if tt.created {
				llm.BatchEnd = func(fakellm.BatchInfo) fakellm.BatchEnd {
					once.Do(crash) // the client gives up while the server creates
					return fakellm.BatchEnd{}
				}
			} else {
				cut.on.Store(true) // the create never reaches the server
			}
			bb := newBatchBedCreate(t, llm, nil, &http.Client{Transport: &cut}, 200*time.Millisecond, func(o *pipeline.Options) { o.BatchClaimGrace = 500 * time.Millisecond })
			s1 := bb.AppendPosts(40)
			_, err := bb.p.Process(ctx, bb.Event(s1))
			require.Error(t, err)
			list := bb.pending()
			require.Len(t, list, 1, "the input file is recorded before the batch is created")
			require.Empty(t, list[0].Last().Batch)
			if tt.created {
				require.Len(t, llm.Batches(), 1)
			} else {
				require.Empty(t, llm.Batches())
				cut.on.Store(false)
			}

			assert.Equal(t, []pipeline.BatchState{pipeline.BatchClaimed}, states(bb.collect()), "within the grace the recorder finishes")
			time.Sleep(550 * time.Millisecond)
			reps := bb.collect()
			require.NotEmpty(t, reps)
			assert.Equal(t, pipeline.BatchCreated, reps[0].State)
			assert.Len(t, llm.Batches(), 1, "one batch, however it came about")
			if len(reps) == 1 {
				reps = bb.collect()
			} else {
				reps = reps[1:]
			}
			assert.Equal(t, []pipeline.BatchState{pipeline.BatchCommitted}, states(reps))
			bb.RequireExactlyOnce(40, nil)
			assert.Len(t, llm.Batches(), 1)
		})
	}
}

// cutCreate is a transport that, while on, fails every batch creation as
// if the network were down.
type cutCreate struct{ on atomic.Bool }

func (c *cutCreate) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.on.Load() && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/batches") {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// A crash after the answers are downloaded and before the commit: the next
// collection downloads them again and commits once; nothing is submitted
// again.
func TestCrashBeforeTheCollectingCommit(t *testing.T) {
	t.Parallel()
	ctx, crash := context.WithCancel(t.Context())
	var once sync.Once
	bb := newBatchBed(t, &fakellm.Server{}, nil, func(o *pipeline.Options) {
		o.OnStage = func(_, stage string, _ time.Duration) {
			if stage == "enrich" {
				once.Do(crash)
			}
		}
	})
	s1 := bb.AppendPosts(50)
	_, err := bb.p.Process(t.Context(), bb.Event(s1))
	require.NoError(t, err)
	_, err = bb.p.Collect(ctx, "")
	require.ErrorIs(t, err, context.Canceled)
	assert.Empty(t, bb.TargetRows())
	require.Len(t, bb.pending(), 1, "the batch is still pending")

	reps := bb.collect()
	assert.Equal(t, []pipeline.BatchState{pipeline.BatchCommitted}, states(reps))
	bb.RequireExactlyOnce(50, nil)
	assert.Len(t, bb.llm.Batches(), 1)
	assert.Empty(t, bb.pending())
}

// batch_api: auto sends small ranges synchronously and big ones as
// batches; while a batch is pending, every range queues behind it.
func TestAutoBatchesOnlyBigRanges(t *testing.T) {
	t.Parallel()
	bb := newBatchBed(t, &fakellm.Server{BatchDelay: time.Hour}, func(s *enrich.Spec) {
		s.Model.BatchAPI = enrich.BatchAuto
		s.Model.Batch.MinRows = 100
	})
	ctx := t.Context()
	s1 := bb.AppendPosts(20)
	res, err := bb.p.Process(ctx, bb.Event(s1))
	require.NoError(t, err)
	assert.Equal(t, pipeline.OutcomeEnriched, res[0].Outcome, "20 rows < min_rows: synchronous")
	assert.Empty(t, bb.llm.Batches())

	s2 := bb.AppendPosts(150)
	res, err = bb.p.Process(ctx, bb.Event(s2))
	require.NoError(t, err)
	assert.Equal(t, pipeline.OutcomeBatched, res[0].Outcome)

	s3 := bb.AppendPosts(5)
	res, err = bb.p.Process(ctx, bb.Event(s3))
	require.NoError(t, err)
	assert.Equal(t, pipeline.OutcomeBatched, res[0].Outcome, "behind a pending batch even a small range waits its turn")
	assert.Len(t, bb.llm.Batches(), 2)
	assert.Equal(t, storage.Cursor{SnapshotID: s1}, bb.Watermark().Cursor)
	assert.Len(t, bb.TargetRows(), 20)
}

// replay --only-status failed through the Batch API: one batch for the
// failed rows; interrupted while it runs and run again, it waits for the
// same batch (no second submission) and replaces the rows once.
func TestReplayThroughTheBatchAPI(t *testing.T) {
	t.Parallel()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	llm := &fakellm.Server{
		BatchDelay: time.Hour,
		Clock:      func() time.Time { return time.Unix(0, clock.Load()) },
		BatchEnd: func(b fakellm.BatchInfo) fakellm.BatchEnd {
			if b.N == 1 {
				return fakellm.BatchEnd{Status: fakellm.BatchExpired, Answered: 5}
			}
			return fakellm.BatchEnd{}
		},
	}
	bb := newBatchBed(t, llm, func(s *enrich.Spec) {
		s.Model.Batch.Attempts = 1 // what the first batch leaves is written failed
		s.Model.Batch.Poll = "10ms"
	})
	ctx := t.Context()
	s1 := bb.AppendPosts(100)
	_, err := bb.p.Process(ctx, bb.Event(s1))
	require.NoError(t, err)
	clock.Add(int64(2 * time.Hour))
	require.Equal(t, []pipeline.BatchState{pipeline.BatchCommitted}, states(bb.collect()))
	failed := bb.statusCounts()["failed"]
	require.Positive(t, failed, "the expired batch left rows failed")

	req := pipeline.ReplayRequest{Job: bb.Spec.Name, From: s1, To: s1, OnlyStatus: []enrich.Status{enrich.StatusFailed}}
	rctx, interrupt := context.WithCancel(ctx)
	defer interrupt()
	var seen []pipeline.BatchState
	req.OnBatch = func(r pipeline.BatchReport) {
		seen = append(seen, r.State)
		if r.State == pipeline.BatchWaiting {
			interrupt() // Ctrl-C while the batch runs
		}
	}
	_, err = bb.p.Replay(rctx, req)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, []pipeline.BatchState{pipeline.BatchCreated, pipeline.BatchWaiting}, seen)
	require.Len(t, llm.Batches(), 2)
	assert.Equal(t, failed, bb.statusCounts()["failed"], "nothing replaced yet")

	clock.Add(int64(2 * time.Hour))
	req.OnBatch = nil
	res, err := bb.p.Replay(ctx, req)
	require.NoError(t, err)
	assert.Len(t, llm.Batches(), 2, "the replay run again waits for its recorded batch")
	assert.Equal(t, 1, res.Commits)
	assert.Equal(t, int64(failed), res.RowsRead)
	sc := bb.statusCounts()
	assert.Zero(t, sc["failed"])
	assert.Equal(t, 100, sc["ok"]+sc["skipped"])
	bb.RequireExactlyOnce(100, nil)
	tgt, err := bb.Cat.LoadTable(ctx, bb.Spec.Target.Table)
	require.NoError(t, err)
	list, err := storage.ReplayBatches(tgt, bb.Spec.Name)
	require.NoError(t, err)
	assert.Empty(t, list, "the replacement removed its batch record")
	assert.Equal(t, storage.Cursor{SnapshotID: s1}, bb.Watermark().Cursor, "a replay moves no watermark")
}

// refusingCreate answers every batch creation with a 400, as a provider
// refuses a file over its limits or a batch over the enqueued-token quota.
type refusingCreate struct{ n atomic.Int64 }

func (c *refusingCreate) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/batches") {
		c.n.Add(1)
		return &http.Response{StatusCode: http.StatusBadRequest, Status: "400 Bad Request", Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"error":{"message":"enqueued token limit reached","type":"invalid_request_error","code":"token_limit_exceeded"}}`)), Request: r}, nil
	}
	return http.DefaultTransport.RoundTrip(r)
}

// A batch the provider refuses to create is not tried again and again:
// the refusal ends the attempt, its rows are asked synchronously (retry:
// sync) or, with no attempt left, written failed with the reason.
func TestARefusedBatchEndsItsAttempt(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		retry    string
		attempts int
		want     string
	}{
		{enrich.BatchRetrySync, 2, "ok"},
		{enrich.BatchRetryBatch, 1, "failed"},
	} {
		t.Run(tt.retry, func(t *testing.T) {
			t.Parallel()
			rc := &refusingCreate{}
			bb := newBatchBedWith(t, &fakellm.Server{}, func(s *enrich.Spec) {
				s.Model.Batch.Retry = tt.retry
				s.Model.Batch.Attempts = tt.attempts
			}, &http.Client{Transport: rc})
			s1 := bb.AppendPosts(40)
			_, err := bb.p.Process(t.Context(), bb.Event(s1))
			require.NoError(t, err, "the refusal is recorded; the message is done")
			list := bb.pending()
			require.Len(t, list, 1)
			assert.Contains(t, list[0].Last().Refused, "enqueued token limit reached")

			reps := bb.collect()
			require.Equal(t, []pipeline.BatchState{pipeline.BatchCommitted}, states(reps))
			assert.Equal(t, int64(1), rc.n.Load(), "one create, never repeated")
			sc := bb.statusCounts()
			assert.Equal(t, 40, sc[tt.want]+sc["skipped"])
			if tt.want == "failed" {
				for _, r := range bb.TargetRows() {
					if r[enrich.ColStatus] == "failed" {
						assert.Contains(t, r[enrich.ColError], "enqueued token limit reached")
					}
				}
			}
			bb.RequireExactlyOnce(40, nil)
		})
	}
}

// The rows a collected batch writes count in enricher_rows_total like any
// others, and batches are counted by what became of them.
func TestMetricsCountBatchesAndTheirRows(t *testing.T) {
	t.Parallel()
	bb := newBatchBed(t, &fakellm.Server{}, nil)
	reg := prometheus.NewRegistry()
	m := pipeline.NewMetrics(reg)
	q := consumer.NewMemQueue()
	q.Publish(bb.Event(bb.AppendPosts(60)).Encode())
	q.Close()
	c := &consumer.Consumer{Source: q, Handler: bb.p, Logger: quietLogger(), OnOutcome: m.Observe}
	require.NoError(t, c.Run(t.Context()))
	job := map[string]string{"job": "sentiment", "event": "submitted"}
	assert.Equal(t, 1.0, counterValue(t, reg, "enricher_batches_total", job))
	reps := bb.collect()
	require.Len(t, reps, 1)
	m.ObserveBatch(reps[0])
	job["event"] = "committed"
	assert.Equal(t, 1.0, counterValue(t, reg, "enricher_batches_total", job))
	assert.Equal(t, int64(60), reps[0].Counts.Total())
	for status, n := range reps[0].Counts {
		assert.Equal(t, float64(n), counterValue(t, reg, "enricher_rows_total", map[string]string{"job": "sentiment", "status": string(status)}))
	}
}

// hookCreate runs a function before the n-th batch creation goes out.
type hookCreate struct {
	n    atomic.Int64
	at   int64
	hook func()
}

func (h *hookCreate) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/batches") && h.n.Add(1) == h.at {
		h.hook()
	}
	return http.DefaultTransport.RoundTrip(r)
}

// A collection that commits while an event is still submitting its
// batches (run's collector next to an event of a big range) moves the
// watermark; the event's next record keeps it there, never moving it
// back, and every row ends written once.
func TestCollectingWhileAnEventSubmitsKeepsTheWatermark(t *testing.T) {
	t.Parallel()
	hook := &hookCreate{at: 2}
	// The hook's collection runs inside the second creation's request, so it
	// counts against that creation's bound (newBatchBedWith's is generous).
	bb := newBatchBedWith(t, &fakellm.Server{}, func(s *enrich.Spec) { s.Model.Batch.MaxRows = 45 }, &http.Client{Transport: hook})
	var collected []pipeline.BatchReport
	hook.hook = func() {
		reps, err := bb.p.Collect(t.Context(), "")
		assert.NoError(t, err)
		collected = append(collected, reps...)
	}
	s1 := bb.AppendPosts(100)
	res, err := bb.p.Process(t.Context(), bb.Event(s1))
	require.NoError(t, err)
	assert.Equal(t, 3, res[0].Batches)
	require.Equal(t, []pipeline.BatchState{pipeline.BatchCommitted, pipeline.BatchClaimed}, states(collected),
		"the first batch was collected while the second was being created (recorded, claimed by its creator)")
	assert.Equal(t, storage.Cursor{PartialSnapshotID: s1, PartialRows: 45}, bb.Watermark().Cursor, "the later records kept the collection's watermark")
	require.Len(t, bb.pending(), 2)
	assert.Equal(t, []pipeline.BatchState{pipeline.BatchCommitted, pipeline.BatchCommitted}, states(bb.collect()))
	bb.RequireExactlyOnce(100, nil)
	assert.Equal(t, storage.Cursor{SnapshotID: s1}, bb.Watermark().Cursor)
	assert.Len(t, bb.llm.Batches(), 3)
}
