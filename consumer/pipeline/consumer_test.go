package pipeline_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/iceberg-go/table"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/testbed"
	"github.com/socialdata/enricher/storage"
)

func TestConsumerSettlesEveryMessage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(30)
	s2 := b.AppendPosts(30)
	q := consumer.NewMemQueue()
	q.Publish(b.Event(s1).Encode())
	q.Publish([]byte("not json"))
	q.Publish(consumer.SnapshotEvent{Table: "social.unknown", SnapshotID: s1}.Encode())
	q.Publish(b.Event(s2).Encode())
	q.Publish(b.Event(s1).Encode()) // redelivery of an old event
	q.Close()

	var outcomes []consumer.MessageOutcome
	c := &consumer.Consumer{Source: q, Handler: b.Processor(nil), Logger: quietLogger(),
		OnOutcome: func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) }}
	require.NoError(t, c.Run(t.Context()))

	require.Len(t, outcomes, 5)
	actions := map[string]string{}
	var tableOrder []int64
	for _, o := range outcomes {
		actions[o.Message.ID] = o.Action
		if rep, ok := o.Report.(*pipeline.Report); ok && rep.Event.Table == "social.posts" {
			tableOrder = append(tableOrder, rep.Event.SnapshotID)
		}
	}
	assert.Equal(t, map[string]string{"m1": consumer.ActionAcked, "m2": consumer.ActionDeadLettered,
		"m3": consumer.ActionDeadLettered, "m4": consumer.ActionAcked, "m5": consumer.ActionAcked}, actions)
	assert.Equal(t, []int64{s1, s2, s1}, tableOrder, "one table's messages are handled in the order received")
	assert.Equal(t, 3, q.Acked())
	dead := q.Dead()
	require.Len(t, dead, 2)
	slices.SortFunc(dead, func(a, b consumer.DeadLetter) int { return strings.Compare(a.ID, b.ID) })
	assert.Equal(t, consumer.ReasonBadMessage, dead[0].Reason)
	assert.Equal(t, "not json", string(dead[0].Body))
	assert.Equal(t, consumer.ReasonUnknownTable, dead[1].Reason)
	assert.Contains(t, dead[1].Error, "social.unknown")
	assert.Equal(t, 1, dead[0].ReceiveCount, "dead-lettered at once, not after retries")
	b.RequireExactlyOnce(60, nil)
}

func TestShutdownReleasesWorkInFlightAndLeaksNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(500)
	q := consumer.NewMemQueue()
	q.Publish(b.Event(s1).Encode())

	g := newGate(t, b.Spec, 1) // the model stalls on its second batch
	ctx, cancel := context.WithCancel(t.Context())
	var outcomes []consumer.MessageOutcome
	c := &consumer.Consumer{Source: q, Handler: b.Processor(g), Logger: quietLogger(), Grace: 50 * time.Millisecond,
		OnOutcome: func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) }}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitClosed(t, g.Held)
	cancel() // SIGTERM: stop receiving, give the work its grace, then cancel it
	select {
	case err := <-done:
		require.NoError(t, err, "shutdown is not an error")
	case <-time.After(30 * time.Second):
		t.Fatal("consumer did not stop")
	}
	require.Len(t, outcomes, 1)
	assert.Equal(t, consumer.ActionReleased, outcomes[0].Action)
	assert.ErrorIs(t, outcomes[0].Err, context.Canceled)
	assert.Empty(t, q.Dead())
	assert.Zero(t, q.Acked())

	// The released message comes back and completes the work exactly once.
	q.Close()
	c2 := &consumer.Consumer{Source: q, Handler: b.Processor(nil), Logger: quietLogger()}
	require.NoError(t, c2.Run(t.Context()))
	assert.Equal(t, 1, q.Acked())
	b.RequireExactlyOnce(500, nil)
}

// broken is a model whose every call fails with err.
type broken struct{ err error }

func (m *broken) Name() string { return "test/broken" }
func (m *broken) Annotate(context.Context, []enrich.Item, []enrich.Answer) error {
	return m.err
}

// twoJobs is a processor with a job on a broken model listed first and
// the sentiment job on the lexicon behind it, both reading the posts.
func twoJobs(t *testing.T, b *bundle, failure error) *pipeline.Processor {
	t.Helper()
	spec, err := enrich.LoadSpec(testbed.SentimentSpec())
	require.NoError(t, err)
	spec.Name, spec.Target.Table = "first", "social.posts_first"
	lex, err := enrich.NewLexicon(b.Spec)
	require.NoError(t, err)
	p, err := pipeline.NewProcessor(b.Cat, []pipeline.Job{{Spec: spec, Model: &broken{failure}}, {Spec: b.Spec, Model: lex}},
		pipeline.Options{Allocator: b.Mem, Logger: quietLogger(), Workers: 2, BatchRows: 64})
	require.NoError(t, err)
	return p
}

// TestOneFailingJobHoldsBackNoOther: the jobs of one table stand on their
// own watermarks, so a job that fails (its model down, its schema wrong)
// does not keep the others from their rows, and the message's fate is
// what the failing job needs.
func TestOneFailingJobHoldsBackNoOther(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		failure   error
		wantClass consumer.Class
	}{
		{name: "passing failure: released", failure: errors.New("connection refused"), wantClass: consumer.ClassRetry},
		{name: "permanent failure: dead-lettered", failure: consumer.Permanent(consumer.ReasonSchemaMismatch, errors.New("bad schema")), wantClass: consumer.ClassPermanent},
		{name: "halt: stops the consumer", failure: enrich.ErrModelUnusable, wantClass: consumer.ClassHalt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			s1 := b.AppendPosts(50)
			p := twoJobs(t, b, tt.failure)
			rep, err := p.Handle(t.Context(), &consumer.Message{ID: "m", Body: b.Event(s1).Encode()})
			require.Error(t, err)
			class, _ := consumer.Classify(err)
			assert.Equal(t, tt.wantClass, class, "err: %v", err)
			assert.Contains(t, err.Error(), "job first")
			res := rep.(*pipeline.Report).Results
			require.Len(t, res, 2, "every job ran")
			assert.Equal(t, pipeline.OutcomeFailed, res[0].Outcome)
			require.Error(t, res[0].Err)
			assert.Equal(t, pipeline.OutcomeEnriched, res[1].Outcome)
			require.NoError(t, res[1].Err)
			b.RequireExactlyOnce(50, nil)

			// status tells the failing job from the other, with why.
			st, err := p.Status(t.Context())
			require.NoError(t, err)
			require.Len(t, st, 2)
			require.NotNil(t, st[0].LastFailure, "the failing job's failure is recorded on its target")
			assert.True(t, st[0].Failing)
			assert.Equal(t, tt.wantClass.String(), st[0].LastFailure.Class)
			assert.Equal(t, s1, st[0].LastFailure.Snapshot)
			assert.Contains(t, st[0].LastFailure.Error, "job first")
			if tt.wantClass == consumer.ClassPermanent {
				assert.Equal(t, consumer.ReasonSchemaMismatch, st[0].LastFailure.Reason)
			}
			assert.Nil(t, st[1].LastFailure, "the other job did not fail")
			assert.False(t, st[1].Failing)

			// The redelivery is a no-op for the job that is done.
			rep, _ = p.Handle(t.Context(), &consumer.Message{ID: "m", Body: b.Event(s1).Encode()})
			assert.Equal(t, pipeline.OutcomeUpToDate, rep.(*pipeline.Report).Results[1].Outcome)
			b.RequireExactlyOnce(50, nil)
		})
	}
}

// TestFailuresOfSeveralJobsCombine: the message takes the class of its
// most urgent job: a halt over a retry over a dead-letter.
func TestFailuresOfSeveralJobsCombine(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(10)
	spec2, err := enrich.LoadSpec(testbed.SentimentSpec())
	require.NoError(t, err)
	spec2.Name, spec2.Target.Table = "second", "social.posts_second"
	perm := consumer.Permanent(consumer.ReasonSchemaMismatch, errors.New("bad schema"))
	p, err := pipeline.NewProcessor(b.Cat, []pipeline.Job{
		{Spec: b.Spec, Model: &broken{perm}},
		{Spec: spec2, Model: &broken{errors.New("timeout")}},
	}, pipeline.Options{Allocator: b.Mem, Logger: quietLogger(), Workers: 1, BatchRows: 64})
	require.NoError(t, err)
	_, err = p.Process(t.Context(), b.Event(s1))
	class, _ := consumer.Classify(err)
	assert.Equal(t, consumer.ClassRetry, class, "one job may pass later: retry, do not dead-letter: %v", err)
	_, isPerm := consumer.IsPermanent(err)
	assert.False(t, isPerm)
	assert.Contains(t, err.Error(), "bad schema", "the text still names every job's failure")
	assert.Contains(t, err.Error(), "timeout")
}

// meddler answers like the lexicon, but runs first (once, before its
// first answer) — while the chunk it answers for is being written, after
// that chunk's commit was pinned to the target's current snapshot.
type meddler struct {
	inner enrich.Model
	first func(ctx context.Context) error
	once  sync.Once
	err   error
	items atomic.Int64 // rows sent to the model
}

func newMeddler(t *testing.T, spec *enrich.Spec, first func(ctx context.Context) error) *meddler {
	l, err := enrich.NewLexicon(spec)
	require.NoError(t, err)
	return &meddler{inner: l, first: first}
}

func (m *meddler) Name() string { return m.inner.Name() }

func (m *meddler) Annotate(ctx context.Context, items []enrich.Item, out []enrich.Answer) error {
	m.once.Do(func() { m.err = m.first(ctx) })
	m.items.Add(int64(len(items)))
	return m.inner.Annotate(ctx, items, out)
}

func requireNoOrphans(b *bundle) {
	b.T.Helper()
	tgt, err := b.Cat.LoadTable(b.T.Context(), b.Spec.Target.Table)
	require.NoError(b.T, err)
	orphans, err := storage.Orphans(b.T.Context(), tgt, storage.OrphanOptions{})
	require.NoError(b.T, err)
	require.Empty(b.T, orphans, "data files of failed commits are removed")
}

// A commit that loses to a writer other than the job (here another job's
// commit on the same target) keeps its chunk: its data files are committed
// again, and no row is enriched twice.
func TestConflictWithAnotherWriterKeepsTheChunk(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(500)
	m := newMeddler(t, b.Spec, func(ctx context.Context) error {
		tgt, err := b.Cat.LoadTable(ctx, b.Spec.Target.Table)
		if err != nil {
			return err
		}
		sc, err := table.SchemaToArrowSchema(tgt.Schema(), nil, false, false)
		if err != nil {
			return err
		}
		_, _, err = storage.AppendChunk(ctx, tgt, &storage.Commit{Job: "other", SourceTable: "social.elsewhere",
			After: storage.Cursor{SnapshotID: 7}, Schema: sc, Batches: func(func(arrow.RecordBatch, error) bool) {}})
		return err
	})
	res, err := b.Processor(m).Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	require.NoError(t, m.err)
	assert.Equal(t, 1, res[0].Conflicts)
	assert.Equal(t, 1, res[0].Commits)
	assert.Equal(t, int64(500), res[0].RowsWritten)
	b.RequireExactlyOnce(500, func(int64) int64 { return s1 })
	assert.Equal(t, s1, b.Watermark().SnapshotID)
	sent := int64(0)
	for _, r := range b.TargetRows() {
		if r[enrich.ColStatus] != string(enrich.StatusSkipped) {
			sent++
		}
	}
	assert.Equal(t, sent, m.items.Load(), "every row was sent to the model once")
	requireNoOrphans(b)
}

// A commit that loses to another consumer of the same job, which committed
// the same rows first, drops its chunk and deletes its data files; the
// re-plan finds nothing left to do.
func TestConflictWithARacingConsumerDropsTheChunk(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.ManyFiles()
	s1 := b.AppendPostsBatched(600, 200)
	other := b.Processor(nil)
	var otherRes []pipeline.Result
	m := newMeddler(t, b.Spec, func(ctx context.Context) error {
		var err error
		otherRes, err = other.Process(ctx, b.Event(s1))
		return err
	})
	res, err := b.Processor(m, func(o *pipeline.Options) { o.ChunkRows = 200 }).Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	require.NoError(t, m.err)
	require.Len(t, otherRes, 1)
	assert.Equal(t, int64(600), otherRes[0].RowsWritten, "the racing consumer wrote the range")
	assert.Equal(t, 1, res[0].Conflicts)
	assert.Zero(t, res[0].RowsWritten, "the loser wrote nothing")
	b.RequireExactlyOnce(600, func(int64) int64 { return s1 })
	requireNoOrphans(b)
}

// TestARecordedFailureBeforeACommitIsNotFailing: once the job commits
// after its last recorded failure, status keeps the record but no longer
// calls the job failing; a long error is cut, and recording on a target
// that does not exist yet is no error.
func TestARecordedFailureBeforeACommitIsNotFailing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	require.NoError(t, b.Cat.RecordFailure(t.Context(), b.Spec.Target.Table, b.Spec.Name,
		storage.JobFailure{At: time.Now().UTC(), Class: "retry", Error: "no target yet"}))
	p := b.Processor(nil)
	s1 := b.AppendPosts(10)
	_, err := p.Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	st, err := p.Status(t.Context())
	require.NoError(t, err)
	assert.Nil(t, st[0].LastFailure, "nothing was recorded before the target existed")

	require.NoError(t, b.Cat.RecordFailure(t.Context(), b.Spec.Target.Table, b.Spec.Name,
		storage.JobFailure{At: time.Now().UTC().Add(-time.Hour), Class: "retry", Error: strings.Repeat("é", 2000), Snapshot: 7}))
	st, err = p.Status(t.Context())
	require.NoError(t, err)
	require.NotNil(t, st[0].LastFailure)
	assert.False(t, st[0].Failing, "the job committed after it")
	assert.LessOrEqual(t, len(st[0].LastFailure.Error), 1000+len("…"))
	assert.True(t, utf8.ValidString(st[0].LastFailure.Error), "cut at a character boundary")

	require.NoError(t, b.Cat.RecordFailure(t.Context(), b.Spec.Target.Table, b.Spec.Name,
		storage.JobFailure{At: time.Now().UTC().Add(time.Second), Class: "halt", Error: "401"}))
	st, err = p.Status(t.Context())
	require.NoError(t, err)
	assert.False(t, st[0].Failing, "a failure after the last commit holds nothing back while nothing is behind")
	b.AppendPosts(5)
	st, err = p.Status(t.Context())
	require.NoError(t, err)
	assert.True(t, st[0].Failing, "new rows wait behind it")
}

// TestATargetPropertyThatFailsEveryWriteHalts: another tool sets a
// property on the target that its writers cannot use (an LZO codec,
// which iceberg-go does not write). Every commit would fail alike, so the
// consumer halts with the property named instead of cycling the queue's
// messages into the dead-letter queue; once the property is fixed, the
// next run commits every row once.
func TestATargetPropertyThatFailsEveryWriteHalts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s1 := b.AppendPosts(20)
	_, err := b.Processor(nil).Process(t.Context(), b.Event(s1))
	require.NoError(t, err)
	setTargetProps := func(props map[string]string) {
		tgt, err := b.Cat.LoadTable(t.Context(), b.Spec.Target.Table)
		require.NoError(t, err)
		txn := tgt.NewTransaction()
		require.NoError(t, txn.SetProperties(props))
		_, err = txn.Commit(t.Context())
		require.NoError(t, err)
	}
	setTargetProps(map[string]string{table.ParquetCompressionKey: "lzo"})

	s2 := b.AppendPosts(20)
	q := consumer.NewMemQueue()
	q.Publish(b.Event(s2).Encode())
	q.Publish(b.Event(s2).Encode())
	q.Close()
	var outcomes []consumer.MessageOutcome
	c := &consumer.Consumer{Source: q, Handler: b.Processor(nil), Logger: quietLogger(),
		OnOutcome: func(o consumer.MessageOutcome) { outcomes = append(outcomes, o) }}
	// Without the halt the message would come back again and again.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err = c.Run(ctx)
	var he *consumer.HaltError
	require.ErrorAs(t, err, &he)
	require.ErrorIs(t, err, storage.ErrTableProperty)
	assert.Contains(t, err.Error(), `property write.parquet.compression-codec="lzo": iceberg-go cannot write lzo; want one of`)
	assert.Contains(t, err.Error(), "social.posts_sentiment")
	require.Len(t, outcomes, 1, "nothing is started after the halt")
	assert.Equal(t, consumer.ActionReleased, outcomes[0].Action)
	assert.Empty(t, q.Dead())
	assert.Zero(t, q.Acked())

	setTargetProps(map[string]string{table.ParquetCompressionKey: "zstd"})
	c = &consumer.Consumer{Source: q, Handler: b.Processor(nil), Logger: quietLogger()}
	require.NoError(t, c.Run(t.Context()))
	assert.Equal(t, 2, q.Acked())
	b.RequireExactlyOnce(40, nil)
}
