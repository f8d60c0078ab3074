//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestASecondSignalExitsAtOnce: ingest blocked opening a FIFO that nobody
// writes to cannot see the first SIGINT (the open is a system call that
// the cancelled context does not reach), so the process stays; the second
// SIGINT ends it at once with status 130 and says so.
func TestASecondSignalExitsAtOnce(t *testing.T) {
	t.Parallel()
	_, cfg := newDemo(t, "--generate", "1")
	fifo := filepath.Join(t.TempDir(), "posts.fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	c := startChild(t, "cli", nil, "ingest", "--config", cfg, "--posts", fifo, "--log-format", "json", "--log-level", "debug")
	require.True(t, c.waitFor("reading posts", 1), "the child ended first:\n%s", c.logs())
	waitBlockedInOpen(t, c.cmd.Process.Pid)

	require.NoError(t, c.cmd.Process.Signal(syscall.SIGINT))
	select {
	case <-c.done:
		t.Fatalf("the first SIGINT ended the child, which was to be blocked in the open:\n%s", c.logs())
	case <-time.After(time.Second):
	}
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGINT))
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the second SIGINT did not end the child either:\n%s", c.logs()) // the cleanup kills it
	}
	err := c.wait()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "exit: %v\n%s", err, c.logs())
	assert.Equal(t, 130, ee.ExitCode())
	assert.Contains(t, c.logs(), "enricher: interrupt received again: exiting now")
}

// waitBlockedInOpen waits until a thread of process pid waits in the
// kernel for the other end of a FIFO (Linux names the wait
// wait_for_partner in /proc/PID/task/TID/wchan). Where /proc does not
// tell, it gives the process a second to get there.
func waitBlockedInOpen(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/wchan", pid))
		named := false
		for _, task := range tasks {
			w, err := os.ReadFile(task)
			if err != nil || len(w) == 0 || string(w) == "0" {
				continue
			}
			named = true
			if string(w) == "wait_for_partner" {
				return
			}
		}
		if !named { // no /proc, or wchan hidden
			time.Sleep(time.Second)
			return
		}
	}
	t.Fatal("the child never blocked opening the FIFO")
}
