package pipeline_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/consumer"
	"github.com/socialdata/enricher/consumer/pipeline"
	"github.com/socialdata/enricher/internal/testbed"
)

func TestMain(m *testing.M) { testbed.VerifyTestMain(m) }

// bundle is the shared per-test warehouse.
type bundle = testbed.Bundle

var (
	setup       = testbed.Setup
	quietLogger = testbed.QuietLogger
	newGate     = testbed.NewGate
	waitClosed  = testbed.WaitClosed
	itoa        = testbed.Itoa
	iceLess     = testbed.IceLess
)

// splitAt is the snapOf of bundle.RequireExactlyOnce for posts appended in
// two snapshots: posts up to last came from first, the others from second.
func splitAt(last, first, second int64) func(id int64) int64 {
	return func(id int64) int64 {
		if id <= last {
			return first
		}
		return second
	}
}

// enrichFirst appends n posts and has a processor of the job's own model
// (with opts) enrich them: a job that has caught up with its first
// snapshot. It returns that snapshot and the processor.
func enrichFirst(b *bundle, n int, opts ...testbed.ProcOpt) (int64, *pipeline.Processor) {
	b.T.Helper()
	s1 := b.AppendPosts(n)
	p := b.Processor(nil, opts...)
	_, err := p.Process(b.T.Context(), b.Event(s1))
	require.NoError(b.T, err)
	return s1, p
}

// cancelAtChunk is an Options.OnChunk that calls cancel (as a shutdown
// would) once chunk n has committed.
func cancelAtChunk(n int, cancel context.CancelFunc) func(pipeline.ChunkCommitted) {
	return func(c pipeline.ChunkCommitted) {
		if c.Chunk == n {
			cancel()
		}
	}
}

// requirePermanent checks that err is a permanent failure with reason.
func requirePermanent(t *testing.T, err error, reason string) {
	t.Helper()
	got, ok := consumer.IsPermanent(err)
	require.True(t, ok, "want a permanent error, got %v", err)
	assert.Equal(t, reason, got)
}
