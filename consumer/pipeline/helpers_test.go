package pipeline_test

import (
	"testing"

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
