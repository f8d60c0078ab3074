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
