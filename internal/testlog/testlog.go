// Package testlog holds what tests share to read logs, with nothing but
// the standard library, so that a test binary that uses it (a fuzz target's
// included) compiles nothing more. Test code only.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer collects what several goroutines write (log lines of a model, a
// pipeline, a handler) for a test to read while they may still write.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
