//go:build unix

package enrich_test

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/socialdata/enricher/enrich"
)

// TestLoadSpecRefusesAFIFO: opening a FIFO blocks until someone writes to
// it; the loader refuses it without opening it.
func TestLoadSpecRefusesAFIFO(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "job.yaml")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	done := make(chan error, 1)
	go func() {
		_, err := enrich.LoadSpec(fifo)
		done <- err
	}()
	select {
	case err := <-done:
		assert.EqualError(t, err, fifo+": is a FIFO, not a regular file: a config or job spec must be a regular file")
	case <-time.After(10 * time.Second):
		t.Fatal("LoadSpec blocked on a FIFO")
	}
}
