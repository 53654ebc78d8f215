package initsys

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		in    string
		state byte
		flags uint64
		ok    bool
	}{
		{"1234 (sleep) S 1 1234 1234 0 -1 4194560 100 0", 'S', 4194560, true},
		{"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0", 'S', 2129984, true},
		{"77 (a) b (c)) Z 1 77 77 0 -1 4194316 0", 'Z', 4194316, true},
		{"77 (noflags) R 1", 0, 0, false},
		{"garbage", 0, 0, false},
	}
	for _, tt := range tests {
		state, flags, ok := parseStat([]byte(tt.in))
		if state != tt.state || flags != tt.flags || ok != tt.ok {
			t.Errorf("parseStat(%q) = %c %d %v; want %c %d %v", tt.in, state, flags, ok, tt.state, tt.flags, tt.ok)
		}
	}
}

func TestUserProcessesFakeProc(t *testing.T) {
	proc := t.TempDir()
	write := func(pid, stat string) {
		dir := filepath.Join(proc, pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("1", "1 (envd) S 0 1 1 0 -1 4194560 0")
	write("2", "2 (kthreadd) S 0 0 0 0 -1 2129984 0")           // PF_KTHREAD set
	write("15", "15 (kworker/0:1) I 2 0 0 0 -1 69238880 0")     // PF_KTHREAD set
	write("40", "40 (sh) S 1 40 40 0 -1 4194560 0")             // user process
	write("41", "41 (my (odd) name) R 40 40 40 0 -1 4194304 0") // user process
	write("42", "42 (defunct) Z 1 42 42 0 -1 4227084 0")        // zombie
	write("99", "99 (self) R 1 99 99 0 -1 4194304 0")           // self
	if err := os.MkdirAll(filepath.Join(proc, "sys"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := userProcesses(proc, 99)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{40, 41}; !slices.Equal(got, want) {
		t.Fatalf("userProcesses = %v, want %v", got, want)
	}
	// Against the real /proc, our own pid is excluded and kernel threads
	// (kthreadd is pid 2 in the init pid namespace) are never listed.
	real, err := userProcesses("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(real, os.Getpid()) || slices.Contains(real, 2) {
		t.Fatalf("real userProcesses lists self or kthreadd: %v", real)
	}
}

func TestKillAll(t *testing.T) {
	tests := []struct {
		name     string
		dieOn    unix.Signal // the fake processes exit on this signal; 0 = never
		wantSigs []unix.Signal
	}{
		{name: "exit on SIGTERM", dieOn: unix.SIGTERM, wantSigs: []unix.Signal{unix.SIGTERM}},
		{name: "need SIGKILL", dieOn: unix.SIGKILL, wantSigs: []unix.Signal{unix.SIGTERM, unix.SIGKILL}},
		{name: "unkillable", dieOn: 0, wantSigs: []unix.Signal{unix.SIGTERM, unix.SIGKILL}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var sent []unix.Signal
			alive := []int{40, 41}
			kill := func(pid int, sig unix.Signal) error {
				mu.Lock()
				defer mu.Unlock()
				if pid != -1 {
					return fmt.Errorf("kill(%d): want -1", pid)
				}
				sent = append(sent, sig)
				if sig == tt.dieOn {
					alive = nil
				}
				return nil
			}
			list := func() ([]int, error) {
				mu.Lock()
				defer mu.Unlock()
				return slices.Clone(alive), nil
			}
			start := time.Now()
			killAll(slog.New(slog.DiscardHandler), 100*time.Millisecond, kill, list)
			if !slices.Equal(sent, tt.wantSigs) {
				t.Fatalf("signals sent %v, want %v", sent, tt.wantSigs)
			}
			if tt.dieOn == unix.SIGTERM && time.Since(start) > 80*time.Millisecond {
				t.Fatalf("killAll waited the full grace although everything exited")
			}
		})
	}
}

type recordHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.mu.Lock()
	h.msgs = append(h.msgs, b.String())
	h.mu.Unlock()
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }
func (h *recordHandler) all() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.msgs, "\n")
}

func TestWatchSignalsRoutesSIGTERMToShutdown(t *testing.T) {
	if IsPID1() {
		t.Skip("the test binary is PID 1; a real shutdown would follow")
	}
	h := &recordHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	WatchSignals(ctx, slog.New(h), time.Millisecond)
	// Outside PID 1 Shutdown refuses, so this only proves the routing.
	if err := unix.Kill(os.Getpid(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(h.all(), ErrNotPID1.Error()) {
		if time.Now().After(deadline) {
			t.Fatalf("SIGTERM did not reach Shutdown; logs:\n%s", h.all())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(h.all(), "signal=terminated") {
		t.Fatalf("shutdown log lacks the signal:\n%s", h.all())
	}
}
