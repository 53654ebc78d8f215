package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/vmtest"
)

func create(t *testing.T, d *Driver, spec vm.Spec) *instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vi, err := d.Create(ctx, spec)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { _ = vi.Destroy(context.Background()) })
	return vi.(*instance)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// testNetNS creates a network namespace for the test and deletes it after.
func testNetNS(t *testing.T) string {
	t.Helper()
	name := "wrenn-fc-test-" + strings.ReplaceAll(filepath.Base(shortDir(t, "ns")), "ns", "")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "delete", name).Run() })
	return "/var/run/netns/" + name
}

// TestBootSequence checks what the driver configured, as the VMM reports
// it, and where the VMM runs (its own mount namespace, the sandbox's
// network namespace).
func TestBootSequence(t *testing.T) {
	requireRoot(t)
	driveDir := shortDir(t, "fcdrv")
	d := newTestDriver(t, testConfig(t, RootfsPrivateMount, driveDir))
	spec := testSpec(t)
	spec.VCPUs, spec.MemoryMB = 2, 256
	spec.KernelArgs = "init=/sbin/envd"
	spec.Net = &vm.NetSpec{TapName: "tap-sbx", MAC: "06:00:AC:10:00:02", NetNS: testNetNS(t)}
	in := create(t, d, spec)

	ctx := context.Background()
	cfg, err := in.api.GetVMConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantArgs := "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd ip=169.254.0.21::169.254.0.22:255.255.255.252::eth0:off init=/sbin/envd"
	switch {
	case cfg.BootSource == nil || cfg.BootSource.KernelImagePath != spec.Kernel || cfg.BootSource.BootArgs != wantArgs:
		t.Fatalf("boot source %+v", cfg.BootSource)
	case len(cfg.Drives) != 1 || cfg.Drives[0].PathOnHost != filepath.Join(driveDir, "rootfs.ext4") || !cfg.Drives[0].IsRootDevice ||
		cfg.Drives[0].IsReadOnly == nil || *cfg.Drives[0].IsReadOnly:
		t.Fatalf("drives %+v", cfg.Drives)
	case cfg.MachineConfig == nil || cfg.MachineConfig.VCPUCount != 2 || cfg.MachineConfig.MemSizeMib != 256:
		t.Fatalf("machine %+v", cfg.MachineConfig)
	case len(cfg.NetworkInterfaces) != 1 || cfg.NetworkInterfaces[0] != (fcapi.NetworkInterface{IfaceID: "eth0", HostDevName: "tap-sbx", GuestMAC: "06:00:AC:10:00:02"}):
		t.Fatalf("net %+v", cfg.NetworkInterfaces)
	case cfg.Vsock == nil || cfg.Vsock.GuestCID != 3 || cfg.Vsock.UDSPath != filepath.Join(spec.RunDir, "v.sock"):
		t.Fatalf("vsock %+v", cfg.Vsock)
	case cfg.Entropy == nil:
		t.Fatal("no entropy device")
	case cfg.Logger == nil || cfg.Logger.LogPath != filepath.Join(spec.RunDir, "firecracker.log") || cfg.Metrics == nil:
		t.Fatalf("logger %+v metrics %+v", cfg.Logger, cfg.Metrics)
	}
	pid := in.Handle().PID
	if got, want := inode(t, "/proc/"+strconv.Itoa(pid)+"/ns/net"), inode(t, spec.Net.NetNS); got != want {
		t.Fatalf("VMM netns inode %d, want %d", got, want)
	}
	if inode(t, "/proc/"+strconv.Itoa(pid)+"/ns/mnt") == inode(t, "/proc/self/ns/mnt") {
		t.Fatal("VMM shares the agent's mount namespace")
	}
	// Inside its namespace the drive path resolves to this VM's rootfs.
	target, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/root" + filepath.Join(driveDir, "rootfs.ext4"))
	if err != nil || target != spec.Rootfs {
		t.Fatalf("drive link in the VMM's namespace: %q %v", target, err)
	}
	if ents, _ := os.ReadDir(driveDir); len(ents) != 0 {
		t.Fatal("the private tmpfs leaked into the host namespace")
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := vmtest.WaitEnvd(wctx, in); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreMovesTapAndVsock: a restore uses the new TAP and a vsock
// socket in the new RunDir; the old ones are not touched.
func TestRestoreMovesTapAndVsock(t *testing.T) {
	requireRoot(t)
	d := newTestDriver(t, testConfig(t, RootfsPrivateMount, shortDir(t, "fcdrv")))
	spec := testSpec(t)
	spec.Net = &vm.NetSpec{TapName: "tap-a", MAC: "06:00:AC:10:00:02"}
	in := create(t, d, spec)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snap := shortDir(t, "fcsnap")
	info, err := in.SnapshotWith(ctx, snap, SnapshotOptions{Diff: true})
	if err != nil {
		t.Fatal(err)
	}
	if info.MemBytes != 128<<20 {
		t.Fatalf("mem bytes %d", info.MemBytes)
	}
	var meta snapshotMeta
	if err := readJSON(filepath.Join(snap, snapMetaName), &meta); err != nil || meta.Type != fcapi.SnapshotDiff || meta.TapName != "tap-a" {
		t.Fatalf("meta %+v %v", meta, err)
	}
	if b, _ := os.ReadFile(filepath.Join(snap, snapRootfsName)); string(b) != "fake rootfs.ext4\n" {
		t.Fatalf("rootfs copy %q", b)
	}

	spec2 := testSpec(t)
	spec2.Net = &vm.NetSpec{TapName: "tap-b", MAC: "06:00:AC:10:00:02"}
	r, err := d.Restore(ctx, spec2, snap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Destroy(context.Background()) })
	cfg, err := r.(*instance).api.GetVMConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NetworkInterfaces[0].HostDevName != "tap-b" || cfg.Vsock.UDSPath != filepath.Join(spec2.RunDir, "v.sock") {
		t.Fatalf("restored net %+v vsock %+v", cfg.NetworkInterfaces, cfg.Vsock)
	}
	if err := vmtest.WaitEnvd(ctx, r); err != nil {
		t.Fatal(err)
	}
	if res, err := vmtest.Exec(ctx, r, "/bin/echo", "restored"); err != nil || res.Stdout != "restored\n" {
		t.Fatalf("exec on the restored VM: %+v %v", res, err)
	}
	if _, err := vmtest.Exec(ctx, r, "/bin/echo", "restored"); err != nil {
		t.Fatal(err)
	}
	// The source VM is still there, paused, and can resume.
	if err := in.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := vmtest.WaitEnvd(ctx, in); err != nil {
		t.Fatal(err)
	}
	// A restore without the network the snapshot had is refused.
	spec3 := testSpec(t)
	if _, err := d.Restore(ctx, spec3, snap); !errors.Is(err, vm.ErrInvalidSpec) {
		t.Fatalf("restore without net: %v", err)
	}
}

// TestDirectModeRestore: without a private mount the rootfs path baked into
// the snapshot must be the spec's.
func TestDirectModeRestore(t *testing.T) {
	d := newTestDriver(t, testConfig(t, RootfsDirect, ""))
	spec := testSpec(t)
	in := create(t, d, spec)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snap := shortDir(t, "fcsnap")
	if _, err := in.Snapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := in.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	other := testSpec(t)
	if _, err := d.Restore(ctx, other, snap); !errors.Is(err, vm.ErrInvalidSpec) || !strings.Contains(err.Error(), "private-mount") {
		t.Fatalf("restore onto another path: %v", err)
	}
	if ents, _ := os.ReadDir(other.RunDir); len(ents) != 0 {
		t.Fatal("refused restore left files")
	}
	same := spec
	same.RunDir = shortDir(t, "fcrun")
	r, err := d.Restore(ctx, same, snap)
	if err != nil {
		t.Fatalf("restore onto the same rootfs path: %v", err)
	}
	defer r.Destroy(ctx)
	if err := vmtest.WaitEnvd(ctx, r); err != nil {
		t.Fatal(err)
	}
}

// TestStaleSocketsRemoved: Firecracker refuses to start over an existing
// socket path, so leftovers of a crashed VM must not block a new one.
func TestStaleSocketsRemoved(t *testing.T) {
	d := newTestDriver(t, testConfig(t, RootfsDirect, ""))
	spec := testSpec(t)
	for _, f := range []string{apiSockName, vsockName} {
		if err := os.WriteFile(filepath.Join(spec.RunDir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	in := create(t, d, spec)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := vmtest.WaitEnvd(ctx, in); err != nil {
		t.Fatal(err)
	}
}

// TestVMMDiesUnderneath: a VMM killed from outside closes Exited, reports
// stopped, and Destroy still cleans up.
func TestVMMDiesUnderneath(t *testing.T) {
	before := processesOf(envdBin)
	d := newTestDriver(t, testConfig(t, RootfsDirect, ""))
	spec := testSpec(t)
	in := create(t, d, spec)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := vmtest.WaitEnvd(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(in.Handle().PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-in.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("Exited not closed")
	}
	if st, err := in.State(ctx); err != nil || st != vm.StateStopped {
		t.Fatalf("state %q %v", st, err)
	}
	if err := in.Pause(ctx); !errors.Is(err, vm.ErrWrongState) {
		t.Fatalf("pause a dead VM: %v", err)
	}
	if _, err := in.DialEnvd(ctx); !errors.Is(err, vm.ErrWrongState) {
		t.Fatalf("dial a dead VM: %v", err)
	}
	if err := in.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(spec.RunDir); len(ents) != 0 {
		t.Fatalf("run dir not empty: %d entries", len(ents))
	}
	// The fake's envd died with it (Pdeathsig), as a guest dies with its VMM.
	deadline := time.Now().Add(5 * time.Second)
	for {
		leaked := 0
		for pid := range processesOf(envdBin) {
			if !before[pid] {
				leaked++
			}
		}
		if leaked == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d envd processes outlived their VMM", leaked)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHandleJSON(t *testing.T) {
	d := newTestDriver(t, testConfig(t, RootfsDirect, ""))
	spec := testSpec(t)
	in := create(t, d, spec)
	b, err := json.Marshal(in.Handle())
	if err != nil {
		t.Fatal(err)
	}
	var h vm.Handle
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	if h.Driver != "firecracker" || h.ID != spec.ID || h.PID != in.proc.pid || h.Sockets["api"] != in.paths.apiSock || h.Sockets["vsock"] != in.paths.vsockHost {
		t.Fatalf("handle %+v", h)
	}
	// A handle of another driver, or a pid that is not this VM's VMM, is refused.
	other := h
	other.Driver = "qemu"
	if _, err := d.Reattach(context.Background(), other); err == nil {
		t.Fatal("reattached a qemu handle")
	}
	wrongPID := h
	wrongPID.PID = os.Getpid()
	if _, err := d.Reattach(context.Background(), wrongPID); !errors.Is(err, vm.ErrNotFound) {
		t.Fatalf("reattach to a foreign pid: %v", err)
	}
}
