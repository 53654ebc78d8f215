package qemu

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// testBootTimeout is generous: the test machine has two cores shared with
// other test suites, and a TCG boot there has been seen to take 17 s.
const testBootTimeout = 60 * time.Second

// tWriter routes a logger's lines to t.Log.

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newTestDriver(t testing.TB, cfg Config) *Driver {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = testLogger(t)
	}
	if cfg.Accel == "" {
		cfg.Accel = os.Getenv("AGENT_QEMU_ACCEL")
	}
	if cfg.BootAttempts == 0 {
		cfg.BootAttempts = 2
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// cloneRootfs gives a VM its own copy of an image, as the agent does.
func cloneRootfs(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "rootfs.ext4")
	if _, err := CloneFile(src, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

func testSpec(t testing.TB, im testImages, id string) vm.Spec {
	return vm.Spec{
		ID: id, VCPUs: 1, MemoryMB: 256,
		Kernel: im.Kernel, Initrd: im.Initrd,
		KernelArgs:  "quiet",
		Rootfs:      cloneRootfs(t, im.Rootfs),
		RunDir:      t.TempDir(),
		BootTimeout: testBootTimeout,
	}
}

// qemuPIDsFor lists live QEMU processes started for id.
func qemuPIDsFor(id string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if isOurQEMU(pid, id) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// assertNothingLeft checks that no QEMU for id runs and that the driver
// left no file in runDir.
func assertNothingLeft(t testing.TB, id, runDir string) {
	t.Helper()
	if pids := qemuPIDsFor(id); len(pids) > 0 {
		t.Errorf("qemu for %s still running: %v", id, pids)
	}
	ents, err := os.ReadDir(runDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left in run dir: %s", e.Name())
	}
}

// envdFor returns a Client on an instance's envd channel, healthy.
func envdFor(t testing.TB, ctx context.Context, inst vm.Instance) *envdclient.Client {
	t.Helper()
	c := envdclient.New(inst, envdclient.Options{Log: testLogger(t)})
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, _, err := c.WaitHealthy(hctx, envdclient.Backoff{}); err != nil {
		t.Fatalf("envd not healthy: %v", err)
	}
	return c
}

// sh runs a shell script in the guest and fails the test unless it exits 0.
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

// testNetns is a network namespace with one TAP, made and removed by the
// test (guest traffic stays inside it).
type testNetns struct {
	Name, Path, Tap string
}

func newTestNetns(t testing.TB) *testNetns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces and TAP devices need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 (ip) is not installed")
	}
	n := &testNetns{Name: fmt.Sprintf("wrenn-qt-%d", os.Getpid()), Tap: "tap0"}
	n.Path = "/var/run/netns/" + n.Name
	ipCmd(t, "netns", "add", n.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.Name).Run() })
	ipCmd(t, "-n", n.Name, "tuntap", "add", "dev", n.Tap, "mode", "tap")
	ipCmd(t, "-n", n.Name, "link", "set", n.Tap, "up")
	return n
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out.String())
	}
}

// percentile returns the p-th percentile (0-100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1)*p/100 + 0.5)
	return sorted[i]
}
