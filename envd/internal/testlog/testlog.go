// Package testlog sends log output to a test's log. It is for tests only.
package testlog

import (
	"io"
	"strings"
	"sync"
	"testing"
)

// Writer returns an io.Writer that passes each write, minus its trailing
// newline, to t.Log. Once t's cleanup runs, writes are dropped: a handler
// goroutine or server still winding down may log after the test has
// finished, and testing panics if t.Log is called then.
func Writer(t testing.TB) io.Writer {
	w := &writer{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
	})
	return w
}

type writer struct {
	t      testing.TB
	mu     sync.Mutex // held across t.Log so Cleanup waits for a write in progress
	closed bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
