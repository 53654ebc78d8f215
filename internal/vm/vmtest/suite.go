package vmtest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// SnapshotRootfsFile is the name both drivers give the rootfs copy in a
// snapshot directory; the suite clones it for the restored VM.
const SnapshotRootfsFile = "rootfs.ext4"

// NewDriver returns a driver and a bootable Spec for one subtest: the spec's
// RunDir and Rootfs must be fresh (the suite destroys what it creates, the
// provider removes the files with t.Cleanup).
type NewDriver func(t *testing.T) (vm.Driver, vm.Spec)

// Run is the behaviour suite every vm.Driver must pass.
func Run(t *testing.T, newDriver NewDriver) {
	t.Run("BootExecDestroy", func(t *testing.T) { testBootExecDestroy(t, newDriver) })
	t.Run("PauseResume", func(t *testing.T) { testPauseResume(t, newDriver) })
	t.Run("SnapshotRestore", func(t *testing.T) { testSnapshotRestore(t, newDriver) })
	t.Run("MissingKernel", func(t *testing.T) { testMissingKernel(t, newDriver) })
	t.Run("Reattach", func(t *testing.T) { testReattach(t, newDriver) })
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// boot creates a VM, registers its destruction and waits for envd.
func boot(t *testing.T, d vm.Driver, spec vm.Spec) vm.Instance {
	t.Helper()
	ctx := ctxFor(t, 2*time.Minute)
	inst, err := d.Create(ctx, spec)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = inst.Destroy(context.Background()) })
	if err := WaitEnvd(ctx, inst); err != nil {
		t.Fatalf("envd: %v", err)
	}
	return inst
}

func echoHello(t *testing.T, inst vm.Instance) {
	t.Helper()
	res, err := Exec(ctxFor(t, 30*time.Second), inst, "/bin/echo", "hello")
	if err != nil {
		t.Fatalf("exec echo: %v", err)
	}
	if res.Stdout != "hello\n" || res.ExitCode != 0 {
		t.Fatalf("echo hello: stdout %q stderr %q exit %d", res.Stdout, res.Stderr, res.ExitCode)
	}
}

// AssertGone checks that the VMM process has ended and that no socket is
// left in runDir.
func AssertGone(t *testing.T, h vm.Handle, runDir string) {
	t.Helper()
	if h.PID > 0 && pidAlive(h.PID) {
		t.Errorf("VMM pid %d still running", h.PID)
	}
	for _, p := range Sockets(runDir) {
		t.Errorf("socket left behind: %s", p)
	}
}

// Sockets lists the Unix sockets under dir.
func Sockets(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err == nil && de.Type()&fs.ModeSocket != 0 {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func pidAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

func testBootExecDestroy(t *testing.T, newDriver NewDriver) {
	d, spec := newDriver(t)
	inst := boot(t, d, spec)
	if inst.ID() != spec.ID {
		t.Fatalf("id %q, want %q", inst.ID(), spec.ID)
	}
	if st, err := inst.State(ctxFor(t, 10*time.Second)); err != nil || st != vm.StateRunning {
		t.Fatalf("state %q %v", st, err)
	}
	echoHello(t, inst)
	h := inst.Handle()
	if err := inst.Destroy(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if err := inst.Destroy(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatalf("second destroy: %v", err)
	}
	select {
	case <-inst.Exited():
	default:
		t.Fatal("Exited not closed after Destroy")
	}
	AssertGone(t, h, spec.RunDir)
}

func testPauseResume(t *testing.T, newDriver NewDriver) {
	d, spec := newDriver(t)
	inst := boot(t, d, spec)
	ctx := ctxFor(t, time.Minute)
	if err := inst.Resume(ctx); !errors.Is(err, vm.ErrWrongState) {
		t.Fatalf("resume while running: %v, want ErrWrongState", err)
	}
	if err := inst.Pause(ctx); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if st, err := inst.State(ctx); err != nil || st != vm.StatePaused {
		t.Fatalf("state after pause %q %v", st, err)
	}
	if err := inst.Pause(ctx); !errors.Is(err, vm.ErrWrongState) {
		t.Fatalf("pause while paused: %v, want ErrWrongState", err)
	}
	if err := Health(ctx, inst, 3*time.Second); err == nil {
		t.Fatal("envd answered while the VM was paused")
	}
	if err := inst.Resume(ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if st, err := inst.State(ctx); err != nil || st != vm.StateRunning {
		t.Fatalf("state after resume %q %v", st, err)
	}
	if err := WaitEnvd(ctx, inst); err != nil {
		t.Fatal(err)
	}
	echoHello(t, inst)
}

func testSnapshotRestore(t *testing.T, newDriver NewDriver) {
	d, spec := newDriver(t)
	if !d.Capabilities().Snapshot {
		t.Skip("driver has no snapshots")
	}
	inst := boot(t, d, spec)
	snapDir := t.TempDir()
	ctx := ctxFor(t, 2*time.Minute)
	info, err := inst.Snapshot(ctx, snapDir)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if info.Dir != snapDir || info.MemBytes <= 0 || info.DiskBytes <= 0 {
		t.Fatalf("snapshot info %+v", info)
	}
	if st, err := inst.State(ctx); err != nil || st != vm.StatePaused {
		t.Fatalf("state after snapshot %q %v (want paused)", st, err)
	}
	h := inst.Handle()
	if err := inst.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	AssertGone(t, h, spec.RunDir)

	// Restore into a new RunDir and a clone of the snapshot's rootfs.
	_, spec2 := newDriver(t)
	spec2.ID = spec.ID + "-r"
	if err := copyFile(filepath.Join(snapDir, SnapshotRootfsFile), spec2.Rootfs); err != nil {
		t.Fatal(err)
	}
	r, err := d.Restore(ctx, spec2, snapDir)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Cleanup(func() { _ = r.Destroy(context.Background()) })
	if st, err := r.State(ctx); err != nil || st != vm.StateRunning {
		t.Fatalf("restored state %q %v", st, err)
	}
	if err := WaitEnvd(ctx, r); err != nil {
		t.Fatal(err)
	}
	echoHello(t, r)
	h2 := r.Handle()
	if err := r.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	AssertGone(t, h2, spec2.RunDir)
}

func testMissingKernel(t *testing.T, newDriver NewDriver) {
	d, spec := newDriver(t)
	spec.Kernel = filepath.Join(spec.RunDir, "no-such-kernel")
	before, _ := os.ReadDir(spec.RunDir)
	_, err := d.Create(ctxFor(t, time.Minute), spec)
	if !errors.Is(err, vm.ErrInvalidSpec) {
		t.Fatalf("create with a missing kernel: %v, want ErrInvalidSpec", err)
	}
	if !strings.Contains(err.Error(), "no-such-kernel") {
		t.Errorf("error does not name the kernel: %v", err)
	}
	after, _ := os.ReadDir(spec.RunDir)
	if len(after) != len(before) {
		t.Errorf("run dir changed: %d entries before, %d after", len(before), len(after))
	}
}

func testReattach(t *testing.T, newDriver NewDriver) {
	d, spec := newDriver(t)
	if !d.Capabilities().Reattach {
		t.Skip("driver cannot reattach")
	}
	inst := boot(t, d, spec)
	// The agent persists the handle as JSON and restarts.
	b, err := json.Marshal(inst.Handle())
	if err != nil {
		t.Fatal(err)
	}
	var h vm.Handle
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	d2, _ := newDriver(t)
	ctx := ctxFor(t, time.Minute)
	r, err := d2.Reattach(ctx, h)
	if err != nil {
		t.Fatalf("reattach: %v", err)
	}
	if st, err := r.State(ctx); err != nil || st != vm.StateRunning {
		t.Fatalf("reattached state %q %v", st, err)
	}
	echoHello(t, r)
	if err := r.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("Exited not closed for the reattached VM")
	}
	AssertGone(t, h, spec.RunDir)
	if _, err := d2.Reattach(ctx, h); !errors.Is(err, vm.ErrNotFound) {
		t.Fatalf("reattach to a destroyed VM: %v, want ErrNotFound", err)
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
