package snapshot

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem/fstest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/qemu"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/qemu/qemutest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fstest.CleanupImages()
	os.Exit(code)
}

// testTimeout bounds a boot attempt: the test machine has two cores shared
// with other suites, and TCG boots there have taken 17 s.
const testTimeout = 60 * time.Second

func testLogger(t testing.TB) *slog.Logger { return qemutest.Logger(t) }

func testDriver(t testing.TB, kernel string) *qemu.Driver { return qemutest.Driver(t, kernel) }

// testManager is a TemplateManager over registry with a private cache.
func testManager(t testing.TB, registry string, mutate ...func(*Config)) *TemplateManager {
	t.Helper()
	r, err := filesystem.NewRegistry(registry)
	if err != nil {
		t.Fatal(err)
	}
	// The accelerator probe boots the test registry's kernel (registry
	// itself may be one with the kernel deliberately missing).
	base, err := filesystem.NewRegistry(fstest.MinimalRegistry(t))
	if err != nil {
		t.Fatal(err)
	}
	k, err := base.Kernel()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Driver: testDriver(t, k.Image), Images: r, CacheDir: filepath.Join(t.TempDir(), "tmpl"),
		BootTimeout: testTimeout, Log: testLogger(t),
	}
	for _, f := range mutate {
		f(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sandboxSpec is a CreateSpec with a fresh run dir and clone path.
func sandboxSpec(t testing.TB, id, template string) CreateSpec {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o750); err != nil {
		t.Fatal(err)
	}
	return CreateSpec{ID: id, Template: template, RunDir: run, Rootfs: filepath.Join(dir, "rootfs.ext4")}
}

func sh(t testing.TB, ctx context.Context, c *envdclient.Client, script string) string {
	t.Helper()
	res, err := c.Shell(ctx, script, 30*time.Second)
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("exec %q: exit %d, stderr %q", script, res.ExitCode, res.Stderr)
	}
	return string(res.Stdout)
}

// qemuFor lists live QEMU processes whose command line names id (the
// driver passes -name guest=<id>).
func qemuFor(id string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.Contains(args[0], "qemu") {
			continue
		}
		for _, a := range args {
			if strings.HasPrefix(a, "guest="+id) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// leftovers lists sockets and files under dir other than those allowed.
func leftovers(dir string, allowed func(rel string, d fs.DirEntry) bool) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if !allowed(rel, d) {
			out = append(out, rel)
		}
		return nil
	})
	return out
}
