// Package integration holds end-to-end tests and benchmarks with real
// QEMU VMs: the issue-3 ones here (a Debian template running Python; the
// boot, lifecycle and template-snapshot benchmarks behind
// docs/benchmarks.md; a prototype of file-backed guest memory for
// restores) and the host agent's (agent_*_test.go). The driver suite,
// snapshot integrity and template-snapshot behaviour are tested next to
// their packages (internal/vm/qemu, internal/snapshot).
package integration

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem/fstest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/snapshot"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/qemu"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/qemu/qemutest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fstest.CleanupImages()
	os.Exit(code)
}

// qBootTimeout bounds one boot attempt on this shared two-core machine.
const qBootTimeout = 60 * time.Second

func qLogger(t testing.TB) *slog.Logger { return qemutest.Logger(t) }

func qemuDriver(t testing.TB, kernel string) *qemu.Driver { return qemutest.Driver(t, kernel) }

// openRegistry opens an image openRegistry directory.
func openRegistry(t testing.TB, dir string) (*filesystem.Registry, filesystem.Kernel) {
	t.Helper()
	r, err := filesystem.NewRegistry(dir)
	if err != nil {
		t.Fatal(err)
	}
	k, err := r.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	return r, k
}

// tmplManager is a TemplateManager on a private cache.
func tmplManager(t testing.TB, dir string, mutate ...func(*snapshot.Config)) *snapshot.TemplateManager {
	t.Helper()
	r, k := openRegistry(t, dir)
	cfg := snapshot.Config{
		Driver: qemuDriver(t, k.Image), Images: r, CacheDir: filepath.Join(t.TempDir(), "tmpl"),
		BootTimeout: qBootTimeout, Log: qLogger(t),
	}
	for _, f := range mutate {
		f(&cfg)
	}
	m, err := snapshot.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tmplSpec is a CreateSpec with a fresh run dir and clone path.
func tmplSpec(t testing.TB, id, template string) snapshot.CreateSpec {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o750); err != nil {
		t.Fatal(err)
	}
	return snapshot.CreateSpec{ID: id, Template: template, RunDir: run, Rootfs: filepath.Join(dir, "rootfs.ext4")}
}

// guestSh runs a shell script in the guest and fails unless it exits 0.
func guestSh(t testing.TB, ctx context.Context, c *envdclient.Client, script string) string {
	t.Helper()
	res, err := c.Shell(ctx, script, time.Minute)
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("exec %q: exit %d, stderr %q", script, res.ExitCode, res.Stderr)
	}
	return string(res.Stdout)
}
