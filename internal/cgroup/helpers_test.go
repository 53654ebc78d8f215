package cgroup

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// requireRoot skips tests that write cgroup files unless we are root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: writes cgroup files")
	}
}

func randSuffix(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// env is one hierarchy a behaviour test runs against.
type env struct {
	name  string
	cfg   Config
	mgr   *Manager
	ctrls map[string]bool // controllers usable for limits: cpu, memory, pids
}

// newEnv makes a Manager with a private parent and removes every group it
// left plus the parent when the test ends.
func newEnv(t *testing.T, name string, cfg Config) *env {
	t.Helper()
	cfg.Parent = "wrenn-test-" + randSuffix(t)
	cfg.Logger = testLogger(t)
	if cfg.DeleteTimeout == 0 {
		cfg.DeleteTimeout = 500 * time.Millisecond
	}
	m, err := New(cfg)
	if errors.Is(err, ErrUnsupported) {
		t.Skipf("%s: %v", name, err)
	}
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e := &env{name: name, cfg: cfg, mgr: m, ctrls: map[string]bool{}}
	switch b := m.b.(type) {
	case *v1:
		e.ctrls["cpu"] = b.present["cpu"]
		e.ctrls["memory"] = b.present["memory"]
		e.ctrls["pids"] = b.present["pids"]
	case *v2:
		avail, err := b.available()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"cpu", "memory", "pids"} {
			e.ctrls[c] = avail[c]
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		hs, err := m.List(ctx)
		if err != nil {
			t.Errorf("cleanup list: %v", err)
		}
		for _, h := range hs {
			_ = m.Kill(ctx, h)
			if err := m.Delete(ctx, h); err != nil {
				t.Errorf("cleanup delete %s: %v", h.SandboxID, err)
			}
		}
		if err := m.RemoveParent(ctx); err != nil {
			t.Errorf("cleanup parent: %v", err)
		}
	})
	return e
}

// hostEnv is the machine's own hierarchy, detected as in production.
func hostEnv(t *testing.T) *env {
	requireRoot(t)
	return newEnv(t, "host", Config{})
}

// mountedV2Env mounts a cgroup2 file system of our own. On a hybrid host it
// is the (mostly controller-less) unified hierarchy; on a pure v2 host it is
// the same hierarchy as /sys/fs/cgroup with every controller.
func mountedV2Env(t *testing.T) *env {
	requireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "cgroup2", 0, ""); err != nil {
		t.Skipf("cannot mount cgroup2 at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return newEnv(t, "v2-mount", Config{Mode: ModeV2, Root: dir})
}

// kernelFile reads a control file of h for controller ctrl.
func (e *env) kernelFile(t *testing.T, h Handle, ctrl, file string) string {
	t.Helper()
	root := e.cfg.Root
	if root == "" {
		root = DefaultRoot
	}
	p := filepath.Join(root, h.Group, file)
	if e.mgr.Mode() == ModeV1 {
		p = filepath.Join(root, ctrl, h.Group, file)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return strings.TrimSpace(string(b))
}

// proc is a test child process; it is killed and reaped at cleanup.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	done  chan error
}

// start runs `sh -c script`. The script usually begins with `read _` so it
// does nothing until the test moved it into a group and calls go().
func start(t *testing.T, script string) *proc {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), "sh", "-c", script)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %q: %v", script, err)
	}
	p := &proc{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), done: make(chan error, 1)}
	go func() {
		// Drain stdout only after the test read what it wanted; Wait needs
		// the pipe closed, which happens when the process exits.
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// next writes a line to the script's stdin (releasing a `read _`).
func (p *proc) next(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, "\n"); err != nil {
		t.Fatalf("write stdin: %v", err)
	}
}

// readLine reads one stdout line, failing after timeout.
func (p *proc) readLine(t *testing.T, timeout time.Duration) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		s, _ := p.out.ReadString('\n')
		ch <- strings.TrimSpace(s)
	}()
	select {
	case s := <-ch:
		return s
	case <-time.After(timeout):
		t.Fatalf("no output within %s", timeout)
		return ""
	}
}

// wait returns the exit error, failing after timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // cleanup reads it again
		return err
	case <-time.After(timeout):
		t.Fatalf("process did not exit within %s", timeout)
		return nil
	}
}

func handleIDs(hs []Handle) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.SandboxID
	}
	return out
}
