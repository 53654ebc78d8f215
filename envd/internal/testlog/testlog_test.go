package testlog

import (
	"fmt"
	"testing"
)

// fakeTB records Log calls and runs its cleanups on demand.
type fakeTB struct {
	testing.TB
	lines    []string
	cleanups []func()
}

func (f *fakeTB) Log(args ...any)   { f.lines = append(f.lines, fmt.Sprint(args...)) }
func (f *fakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

func TestWriterDropsAfterCleanup(t *testing.T) {
	f := &fakeTB{}
	w := Writer(f)
	if n, err := w.Write([]byte("one\n")); n != 4 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	for _, fn := range f.cleanups {
		fn()
	}
	if n, err := w.Write([]byte("two\n")); n != 4 || err != nil {
		t.Fatalf("Write after cleanup = %d, %v", n, err)
	}
	if len(f.lines) != 1 || f.lines[0] != "one" {
		t.Fatalf("logged %q, want [one]", f.lines)
	}
}
