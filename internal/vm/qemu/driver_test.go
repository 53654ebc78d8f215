package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// The counter loop the snapshot tests run in the guest: its own session
// (so nothing envd does to a finished command's group reaches it), a
// value kept in shell memory, appended to a file ten times a second.
const counterLoop = `setsid sh -c 'echo $$ > /root/loop.pid; i=0; while :; do i=$((i+1)); echo $i >> /root/counter; sleep 0.1; done' </dev/null >/dev/null 2>&1 &`

func readCounter(t *testing.T, ctx context.Context, c *envdclient.Client) (pid string, last int) {
	t.Helper()
	out := sh(t, ctx, c, `cat /root/loop.pid; kill -0 $(cat /root/loop.pid) && echo alive; tail -n 1 /root/counter`)
	f := strings.Fields(out)
	if len(f) != 3 || f[1] != "alive" {
		t.Fatalf("counter loop state %q", out)
	}
	n, err := strconv.Atoi(f[2])
	if err != nil {
		t.Fatalf("counter %q: %v", f[2], err)
	}
	return f[0], n
}

// TestLifecycle boots one VM (on a TAP in a test-made netns when running as
// root) and takes it through exec, files, pause/resume, then five
// snapshot -> destroy -> restore cycles with a shell loop counting across
// them, a deliberately mismatched restore, and a reattach by a second
// driver after the restoring process has exited.
func TestLifecycle(t *testing.T) {
	im := needImages(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	d := newTestDriver(t, Config{})
	spec := testSpec(t, im, "qt-life")
	var netns *testNetns
	if os.Geteuid() == 0 {
		netns = newTestNetns(t)
		spec.Net = &vm.NetSpec{TapName: netns.Tap, MAC: "06:00:ac:10:00:02", NetNS: netns.Path}
	}
	start := time.Now()
	inst, err := d.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("created in %v (attempts %d)", time.Since(start), inst.(*Instance).BootAttempts())
	t.Cleanup(func() { inst.Destroy(context.Background()) })
	c := envdFor(t, ctx, inst)
	t.Logf("envd healthy %v after create started", time.Since(start))

	t.Run("exec", func(t *testing.T) {
		tests := []struct {
			script           string
			wantOut, wantErr string
			wantCode         int
		}{
			{script: "echo hello", wantOut: "hello\n"},
			{script: "echo oops >&2; exit 3", wantErr: "oops\n", wantCode: 3},
			{script: "cat /proc/1/comm", wantOut: "envd\n"},
		}
		for _, tc := range tests {
			res, err := c.Shell(ctx, tc.script, 30*time.Second)
			if err != nil {
				t.Fatalf("%q: %v", tc.script, err)
			}
			if string(res.Stdout) != tc.wantOut || string(res.Stderr) != tc.wantErr || res.ExitCode != tc.wantCode {
				t.Errorf("%q: stdout %q stderr %q code %d; want %q %q %d",
					tc.script, res.Stdout, res.Stderr, res.ExitCode, tc.wantOut, tc.wantErr, tc.wantCode)
			}
		}
	})

	t.Run("network card on the tap", func(t *testing.T) {
		if netns == nil {
			t.Skip("no TAP without root")
		}
		if got := strings.TrimSpace(sh(t, ctx, c, "cat /sys/class/net/eth0/address")); got != spec.Net.MAC {
			t.Errorf("guest eth0 mac %q, want %q", got, spec.Net.MAC)
		}
	})

	t.Run("files in and out", func(t *testing.T) {
		payload := bytes.Repeat([]byte("wrenn\x00\xff"), 40000)
		if _, err := c.Upload(ctx, "/root/up/blob.bin", bytes.NewReader(payload)); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if _, err := c.Download(ctx, "/root/up/blob.bin", &got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), payload) {
			t.Errorf("downloaded %d bytes, differ from the %d uploaded", got.Len(), len(payload))
		}
		if out := sh(t, ctx, c, "wc -c < /root/up/blob.bin"); strings.TrimSpace(out) != strconv.Itoa(len(payload)) {
			t.Errorf("guest sees %s bytes", out)
		}
	})

	t.Run("pause and resume", func(t *testing.T) {
		steps := []struct {
			name    string
			op      func(context.Context) error
			wantErr error
			want    vm.State
		}{
			{"resume while running", inst.Resume, vm.ErrWrongState, vm.StateRunning},
			{"pause", inst.Pause, nil, vm.StatePaused},
			{"pause again", inst.Pause, vm.ErrWrongState, vm.StatePaused},
			{"resume", inst.Resume, nil, vm.StateRunning},
		}
		for _, s := range steps {
			if err := s.op(ctx); !errors.Is(err, s.wantErr) {
				t.Fatalf("%s: err %v, want %v", s.name, err, s.wantErr)
			}
			if st, err := inst.State(ctx); err != nil || st != s.want {
				t.Fatalf("%s: state %s (%v), want %s", s.name, st, err, s.want)
			}
		}
		sh(t, ctx, c, "true")
	})

	sh(t, ctx, c, counterLoop+" sleep 0.5")
	loopPID, _ := readCounter(t, ctx, c)
	cur := inst
	curSpec := spec
	for cycle := 1; cycle <= 5; cycle++ {
		name := fmt.Sprintf("file-%d", cycle)
		sh(t, ctx, c, fmt.Sprintf("echo %s > /root/%s; sync", name, name))
		_, before := readCounter(t, ctx, c)
		dir := t.TempDir()
		info, err := cur.Snapshot(ctx, dir)
		if err != nil {
			t.Fatalf("cycle %d: snapshot: %v", cycle, err)
		}
		t.Logf("cycle %d: snapshot %d MiB memory, %d MiB disk in %v", cycle, info.MemBytes>>20, info.DiskBytes>>20, info.Took)
		if st, _ := cur.State(ctx); st != vm.StatePaused {
			t.Fatalf("cycle %d: state after snapshot %s, want paused", cycle, st)
		}
		if cycle == 1 {
			checkSnapshotDir(t, dir, spec)
			// The source continues after a snapshot (postmigrate -> cont).
			if err := cur.Resume(ctx); err != nil {
				t.Fatalf("resume source after snapshot: %v", err)
			}
			sh(t, ctx, c, "test -f /root/file-1")
			t.Run("mismatched restore fails with qemu's reason", func(t *testing.T) {
				testMismatchedRestore(t, ctx, d, im, dir)
			})
		}
		oldRun := curSpec.RunDir
		if err := cur.Destroy(ctx); err != nil {
			t.Fatalf("cycle %d: destroy: %v", cycle, err)
		}
		if err := cur.Destroy(ctx); err != nil {
			t.Fatalf("cycle %d: second destroy: %v", cycle, err)
		}
		select {
		case <-cur.Exited():
		default:
			t.Fatalf("cycle %d: Exited not closed after Destroy", cycle)
		}
		assertNothingLeft(t, curSpec.ID, oldRun)

		curSpec = vm.Spec{
			ID:     fmt.Sprintf("qt-life-%d", cycle),
			Rootfs: cloneRootfs(t, filepath.Join(dir, SnapshotRootfsFile)),
			RunDir: t.TempDir(),
		}
		if netns != nil {
			// A snapshot with a NIC cannot be restored without a TAP.
			if _, err := d.Restore(ctx, curSpec, dir); !errors.Is(err, vm.ErrInvalidSpec) {
				t.Fatalf("restore of a NIC snapshot without a TAP: err %v, want ErrInvalidSpec", err)
			}
			curSpec.Net = &vm.NetSpec{TapName: netns.Tap, NetNS: netns.Path}
		}
		rstart := time.Now()
		if cycle == 5 {
			cur = restoreInHelperAndReattach(t, ctx, curSpec, dir)
		} else {
			r, err := d.Restore(ctx, curSpec, dir)
			if err != nil {
				t.Fatalf("cycle %d: restore: %v", cycle, err)
			}
			cur = r
		}
		restored := cur
		t.Cleanup(func() { restored.Destroy(context.Background()) })
		c = envdclient.New(cur, envdclient.Options{Log: testLogger(t)})
		out := sh(t, ctx, c, "cat /root/file-*")
		t.Logf("cycle %d: restore to first exec %v", cycle, time.Since(rstart))
		for i := 1; i <= cycle; i++ {
			if !strings.Contains(out, fmt.Sprintf("file-%d\n", i)) {
				t.Errorf("cycle %d: file-%d missing after restore: %q", cycle, i, out)
			}
		}
		pid, after := readCounter(t, ctx, c)
		if pid != loopPID {
			t.Errorf("cycle %d: loop pid %s, want %s (the same process)", cycle, pid, loopPID)
		}
		if after < before {
			t.Errorf("cycle %d: counter went back from %d to %d", cycle, before, after)
		}
		time.Sleep(500 * time.Millisecond)
		if _, later := readCounter(t, ctx, c); later <= after {
			t.Errorf("cycle %d: counter stuck at %d after restore", cycle, later)
		}
	}
	if err := cur.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, curSpec.ID, curSpec.RunDir)
	st := d.Stats()
	t.Logf("driver stats: %+v", st)
	if st.Boots != 1 || st.Restores != 4 {
		t.Errorf("stats %+v: want 1 boot and 4 in-process restores", st)
	}
}

func checkSnapshotDir(t *testing.T, dir string, spec vm.Spec) {
	t.Helper()
	meta, err := ReadSnapshotMeta(dir)
	if err != nil {
		t.Fatal(err)
	}
	if meta.MemoryMB != spec.MemoryMB || meta.VCPUs != spec.VCPUs || meta.Kernel != spec.Kernel ||
		meta.Initrd != spec.Initrd || meta.QEMUVersion == "" || len(meta.Args) == 0 {
		t.Errorf("snapshot meta %+v does not describe the VM", meta)
	}
	joined := strings.Join(meta.Args, " ")
	for _, want := range []string{"microvm,x-option-roms=off", "virtio-mmio.force-legacy=false", "virtserialport,chardev=envd,name=" + EnvdPortName, phRootfs, phRunDir} {
		if !strings.Contains(joined, want) {
			t.Errorf("snapshot args lack %q: %s", want, joined)
		}
	}
	for _, f := range []string{SnapshotMemFile, SnapshotRootfsFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("snapshot file %s: %v", f, err)
		}
	}
}

// testMismatchedRestore restores a snapshot whose machine lost a device:
// QEMU refuses the stream and exits 1; the error carries its message and
// nothing is left behind.
func testMismatchedRestore(t *testing.T, ctx context.Context, d *Driver, im testImages, dir string) {
	meta, err := ReadSnapshotMeta(dir)
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for i := 0; i < len(meta.Args); i++ {
		next := ""
		if i+1 < len(meta.Args) {
			next = meta.Args[i+1]
		}
		// Drop the envd port, and the NIC so no TAP is needed.
		if (meta.Args[i] == "-device" && (strings.HasPrefix(next, "virtserialport") || strings.HasPrefix(next, "virtio-net"))) ||
			meta.Args[i] == "-netdev" {
			i++
			continue
		}
		args = append(args, meta.Args[i])
	}
	meta.Args = args
	meta.Machine.NIC = false
	bad := t.TempDir()
	data, _ := json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(bad, SnapshotMetaFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, SnapshotMemFile), filepath.Join(bad, SnapshotMemFile)); err != nil {
		t.Fatal(err)
	}
	spec := vm.Spec{ID: "qt-mismatch", Rootfs: cloneRootfs(t, filepath.Join(dir, SnapshotRootfsFile)), RunDir: t.TempDir()}
	_, err = d.Restore(ctx, spec, bad)
	if err == nil {
		t.Fatal("restore with a different device list succeeded")
	}
	if !strings.Contains(err.Error(), "savevm section") && !strings.Contains(err.Error(), "load of migration failed") {
		t.Errorf("error does not carry qemu's reason: %v", err)
	}
	t.Logf("mismatch error: %v", err)
	assertNothingLeft(t, spec.ID, spec.RunDir)
}

// restoreInHelperAndReattach restores the snapshot from a separate process
// (this test binary in helper mode) that exits right after, as an agent
// that dies would; QEMU must survive it, and a new driver reattaches.
func restoreInHelperAndReattach(t *testing.T, ctx context.Context, spec vm.Spec, dir string) vm.Instance {
	t.Helper()
	specJSON, _ := json.Marshal(spec)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperRestore$", "-test.v")
	cmd.Env = append(os.Environ(), "WRENN_QEMU_HELPER_SPEC="+string(specJSON), "WRENN_QEMU_HELPER_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper restore: %v\n%s", err, out)
	}
	var h vm.Handle
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "HANDLE "); ok {
			if err := json.Unmarshal([]byte(rest), &h); err != nil {
				t.Fatal(err)
			}
		}
	}
	if h.PID == 0 {
		t.Fatalf("helper printed no handle:\n%s", out)
	}
	if !isOurQEMU(h.PID, spec.ID) {
		t.Fatalf("qemu %d did not survive the process that started it", h.PID)
	}
	t.Cleanup(func() {
		if isOurQEMU(h.PID, spec.ID) {
			syscall.Kill(h.PID, syscall.SIGKILL)
		}
	})
	d2 := newTestDriver(t, Config{})
	t.Run("reattach rejects stale handles", func(t *testing.T) {
		for _, bad := range []vm.Handle{
			{Driver: DriverName, ID: spec.ID, PID: os.Getpid(), Spec: spec},
			{Driver: DriverName, ID: "someone-else", PID: h.PID, Spec: spec},
			{Driver: DriverName, ID: spec.ID, PID: 1 << 22, Spec: spec},
		} {
			if _, err := d2.Reattach(ctx, bad); !errors.Is(err, vm.ErrNotFound) {
				t.Errorf("reattach %+v: err %v, want ErrNotFound", bad, err)
			}
		}
	})
	inst, err := d2.Reattach(ctx, h)
	if err != nil {
		t.Fatalf("reattach: %v", err)
	}
	if st, err := inst.State(ctx); err != nil || st != vm.StateRunning {
		t.Fatalf("reattached state %s (%v)", st, err)
	}
	return inst
}

// TestHelperRestore is not a test: restoreInHelperAndReattach runs the
// test binary with it to restore a VM from another process and exit.
func TestHelperRestore(t *testing.T) {
	specJSON := os.Getenv("WRENN_QEMU_HELPER_SPEC")
	if specJSON == "" {
		return // only does something when TestLifecycle runs it as a helper process
	}
	var spec vm.Spec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		t.Fatal(err)
	}
	d := newTestDriver(t, Config{})
	inst, err := d.Restore(context.Background(), spec, os.Getenv("WRENN_QEMU_HELPER_DIR"))
	if err != nil {
		t.Fatal(err)
	}
	h, _ := json.Marshal(inst.Handle())
	fmt.Printf("HANDLE %s\n", h)
	// Exit without Destroy, leaving QEMU to the next agent.
}
