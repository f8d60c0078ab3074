package testbed

import (
	"testing"

	"go.uber.org/goleak"
)

// VerifyTestMain runs a package's tests and then fails the binary if a
// goroutine is left, apart from those the process keeps on purpose: the
// sqlite driver's and database/sql's (iceberg-go's SQL catalog keeps its
// connection pool for the process) and the keep-alive connections of the
// SQS and HTTP clients' shared pool.
func VerifyTestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		goleak.IgnoreAnyFunction("modernc.org/sqlite/lib.init.func1"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	)
}
