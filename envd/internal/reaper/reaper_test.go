package reaper

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// One reaper per test binary, as in envd: each loop calls wait4(-1), so a
// second one would steal the other's children. That includes a closed
// one: Close does not wait for its loop, which may still drain a queued
// SIGCHLD and reap (and drop) a child of the next test's reaper.
var testReaper *Reaper

func TestMain(m *testing.M) {
	testReaper = New()
	code := m.Run()
	testReaper.Close()
	os.Exit(code)
}

func TestStartAndExitCodes(t *testing.T) {
	cases := []struct {
		script string
		code   int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"kill -9 $$", -1},
	}
	for _, c := range cases {
		pid, ch, err := testReaper.Start("/bin/sh", []string{"sh", "-c", c.script}, &syscall.ProcAttr{})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-ch:
			if e.Code() != c.code {
				t.Errorf("%q: code %d, want %d", c.script, e.Code(), c.code)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("pid %d never reaped", pid)
		}
	}
}

func TestManyConcurrentChildren(t *testing.T) {
	const n = 50
	chans := make([]<-chan Exit, n)
	for i := range n {
		_, ch, err := testReaper.Start("/bin/true", []string{"true"}, &syscall.ProcAttr{})
		if err != nil {
			t.Fatal(err)
		}
		chans[i] = ch
	}
	for i, ch := range chans {
		select {
		case e := <-ch:
			if e.Code() != 0 {
				t.Errorf("child %d: code %d", i, e.Code())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("child %d never reaped", i)
		}
	}
}

func TestStartMissingBinary(t *testing.T) {
	if _, _, err := testReaper.Start("/no/such/binary", []string{"x"}, &syscall.ProcAttr{}); err == nil {
		t.Fatal("expected error")
	}
}
