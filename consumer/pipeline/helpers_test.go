package pipeline_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/socialdata/enricher/internal/testbed"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The sqlite driver and iceberg-go keep these for the process.
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		goleak.IgnoreAnyFunction("modernc.org/sqlite/lib.init.func1"),
		// Keep-alive connections of the SQS clients' shared pool.
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	)
}

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
