// Package testlog routes log output to a test's log. Only tests import it.
package testlog

import (
	"io"
	"strings"
	"sync"
	"testing"
)

type writer struct {
	t    testing.TB
	mu   *sync.Mutex
	done *bool
}

// Writer returns an io.Writer that sends each write to t.Log until t's
// cleanup runs. Goroutines that outlive the test (a VM watcher, a server
// still shutting down) may log after that; those lines are dropped, since
// testing forbids logging once a test has finished.
func Writer(t testing.TB) io.Writer {
	w := writer{t: t, mu: &sync.Mutex{}, done: new(bool)}
	t.Cleanup(func() {
		w.mu.Lock()
		*w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !*w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
