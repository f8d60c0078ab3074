package pipeline_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/enrich"
	"github.com/socialdata/enricher/internal/testbed"
)

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
