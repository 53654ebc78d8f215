package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// memCgroup is a memory cgroup the test makes and removes (v1 memory
// controller or v2 unified hierarchy), standing in for a sandbox's group.
type memCgroup struct {
	dir   string // the group's directory
	usage string // memory.usage_in_bytes (v1) or memory.current (v2)
	rel   string // path relative to the hierarchy root, as /proc/pid/cgroup shows it
	v1    bool
}

var cgSeq struct {
	sync.Mutex
	n int
}

func newMemCgroup(t *testing.T) *memCgroup {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cgroups need root")
	}
	cgSeq.Lock()
	cgSeq.n++
	name := fmt.Sprintf("wrenn-qt-%d-%d", os.Getpid(), cgSeq.n)
	cgSeq.Unlock()
	cg := &memCgroup{rel: "/" + name}
	switch {
	case fileExists("/sys/fs/cgroup/memory/memory.usage_in_bytes"):
		cg.dir, cg.usage, cg.v1 = "/sys/fs/cgroup/memory/"+name, "memory.usage_in_bytes", true
	case strings.Contains(readString("/sys/fs/cgroup/cgroup.subtree_control"), "memory"):
		cg.dir, cg.usage = "/sys/fs/cgroup/"+name, "memory.current"
	default:
		t.Skip("no memory cgroup controller to test with")
	}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		t.Skipf("cannot create a memory cgroup: %v", err)
	}
	t.Cleanup(func() {
		// The VMs are destroyed by then; their charge may linger briefly.
		for i := 0; i < 50; i++ {
			if err := os.Remove(cg.dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("cgroup %s not removed", cg.dir)
	})
	return cg
}

func (cg *memCgroup) add(pid int) error {
	return os.WriteFile(filepath.Join(cg.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
}

func (cg *memCgroup) usageBytes(t *testing.T) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(readString(filepath.Join(cg.dir, cg.usage))), 10, 64)
	if err != nil {
		t.Fatalf("read %s: %v", cg.usage, err)
	}
	return n
}

// holds reports whether pid's memory cgroup is this group.
func (cg *memCgroup) holds(pid int) bool {
	for _, l := range strings.Split(readString(fmt.Sprintf("/proc/%d/cgroup", pid)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		memLine := parts[0] == "0" && parts[1] == ""
		if cg.v1 {
			memLine = strings.Contains(","+parts[1]+",", ",memory,")
		}
		if memLine {
			return parts[2] == cg.rel
		}
	}
	return false
}

// rssAnon is a process's anonymous resident memory in bytes.
func rssAnon(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "RssAnon:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no RssAnon for pid %d", pid)
	return 0
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func readString(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// qmpStatus asks a QEMU that may still be creating its QMP socket for its
// run state (the driver connects only after Placement returns).
func qmpStatus(runDir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := dialQMPRetry(ctx, runPath(runDir, qmpSocket))
	if err != nil {
		return "", err
	}
	defer q.Close()
	st, err := q.QueryStatus(ctx)
	return st.Status, err
}

// placeCall is what a test Placement hook saw.
type placeCall struct {
	pid    int
	status string
	err    error
}

// recordingHook returns a Placement hook that records the pid and QEMU's
// run state, moves the VMM into cg (when set) and returns fail.
func recordingHook(runDir string, cg *memCgroup, fail error) (func(int) error, func() []placeCall) {
	var mu sync.Mutex
	var calls []placeCall
	hook := func(pid int) error {
		c := placeCall{pid: pid}
		if cg != nil {
			c.err = cg.add(pid)
		}
		c.status, _ = qmpStatus(runDir)
		mu.Lock()
		calls = append(calls, c)
		mu.Unlock()
		if c.err != nil {
			return c.err
		}
		return fail
	}
	return hook, func() []placeCall {
		mu.Lock()
		defer mu.Unlock()
		return append([]placeCall(nil), calls...)
	}
}

// minCharged is the least a booted 256 MiB guest's VMM must have charged
// to its group (the guest kernel, init and envd, QEMU's own buffers).
const minCharged = 50 << 20

// checkCharged: the VMM is in cg and cg carries its memory (at least
// minCharged, and all of the VMM's anonymous memory but a little QEMU
// may allocate before the hook runs), so the agent's group absorbed
// none of the guest's.
func checkCharged(t *testing.T, cg *memCgroup, pid int) {
	t.Helper()
	if !cg.holds(pid) {
		t.Fatalf("vmm %d is not in %s: %s", pid, cg.rel, readString(fmt.Sprintf("/proc/%d/cgroup", pid)))
	}
	usage, rss := cg.usageBytes(t), rssAnon(t, pid)
	t.Logf("group %s charged %d MiB; vmm anonymous rss %d MiB", cg.rel, usage>>20, rss>>20)
	if usage < minCharged {
		t.Errorf("group charged %d MiB, want at least %d MiB", usage>>20, minCharged>>20)
	}
	if usage < rss-16<<20 {
		t.Errorf("group charged %d MiB but the vmm holds %d MiB: the rest went to another group", usage>>20, rss>>20)
	}
}

// TestPlacement: Spec.Placement runs with QEMU's pid while the guest is
// not running (prelaunch on a boot, inmigrate on a restore), so a memory
// cgroup it moves QEMU into is charged with the guest's memory; a hook
// error aborts the start and leaves nothing; a retried boot calls it for
// each QEMU.
func TestPlacement(t *testing.T) {
	im := needImages(t)
	ctx := context.Background()
	d := newTestDriver(t, Config{})

	t.Run("control: moving after the boot leaves the charge behind", func(t *testing.T) {
		cg := newMemCgroup(t)
		spec := testSpec(t, im, "qt-place-late")
		inst, err := d.Create(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		defer inst.Destroy(ctx)
		envdFor(t, ctx, inst).Close()
		pid := inst.Handle().PID
		if err := cg.add(pid); err != nil {
			t.Fatal(err)
		}
		usage, rss := cg.usageBytes(t), rssAnon(t, pid)
		t.Logf("moved after boot: group charged %d MiB; vmm anonymous rss %d MiB", usage>>20, rss>>20)
		if cg.v1 && usage >= minCharged {
			// Without memory.move_charge_at_immigrate (v1) and always on
			// v2, charges stay where they were made; if this host moves
			// them, the test below proves nothing.
			t.Skipf("this host moves charges with the process (%d MiB)", usage>>20)
		}
	})

	var snapDir string
	parentDir := t.TempDir() // the snapshot outlives the boot subtest
	t.Run("boot", func(t *testing.T) {
		cg := newMemCgroup(t)
		spec := testSpec(t, im, "qt-place-boot")
		hook, calls := recordingHook(spec.RunDir, cg, nil)
		spec.Placement = hook
		inst, err := d.Create(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		defer inst.Destroy(ctx)
		h := inst.Handle()
		got := calls()
		if len(got) != 1 || got[0].pid != h.PID || got[0].status != "prelaunch" {
			t.Fatalf("hook calls %+v, want one with pid %d in prelaunch", got, h.PID)
		}
		if h.Spec.Placement != nil {
			t.Error("the instance keeps the hook")
		}
		c := envdFor(t, ctx, inst)
		defer c.Close()
		sh(t, ctx, c, "true")
		checkCharged(t, cg, h.PID)

		dir := parentDir
		if _, err := inst.Snapshot(ctx, dir); err != nil {
			t.Fatal(err)
		}
		snapDir = dir
	})

	t.Run("restore", func(t *testing.T) {
		if snapDir == "" {
			t.Skip("no snapshot")
		}
		cg := newMemCgroup(t)
		spec := vm.Spec{ID: "qt-place-restore", Rootfs: cloneRootfs(t, filepath.Join(snapDir, SnapshotRootfsFile)), RunDir: t.TempDir()}
		hook, calls := recordingHook(spec.RunDir, cg, nil)
		spec.Placement = hook
		inst, err := d.Restore(ctx, spec, snapDir)
		if err != nil {
			t.Fatal(err)
		}
		defer inst.Destroy(ctx)
		h := inst.Handle()
		got := calls()
		if len(got) != 1 || got[0].pid != h.PID || got[0].status != "inmigrate" {
			t.Fatalf("hook calls %+v, want one with pid %d in inmigrate", got, h.PID)
		}
		c := envdFor(t, ctx, inst)
		defer c.Close()
		sh(t, ctx, c, "true")
		checkCharged(t, cg, h.PID)
	})

	errPlace := errors.New("cgroup refused the vmm")
	t.Run("hook error aborts a boot", func(t *testing.T) {
		d := newTestDriver(t, Config{Accel: d.Stats().Accel})
		spec := testSpec(t, im, "qt-place-fail")
		hook, calls := recordingHook(spec.RunDir, nil, errPlace)
		spec.Placement = hook
		inst, err := d.Create(ctx, spec)
		if err == nil {
			inst.Destroy(ctx)
			t.Fatal("create succeeded despite the hook's error")
		}
		if !errors.Is(err, errPlace) {
			t.Fatalf("error %v does not wrap the hook's", err)
		}
		if got := calls(); len(got) != 1 || got[0].status != "prelaunch" {
			t.Fatalf("hook calls %+v", got)
		}
		assertNothingLeft(t, spec.ID, spec.RunDir)
		if st := d.Stats(); st.BootAttempts != 1 {
			t.Errorf("a hook error was retried: %+v", st)
		}
	})

	t.Run("hook error aborts a restore", func(t *testing.T) {
		if snapDir == "" {
			t.Skip("no snapshot")
		}
		spec := vm.Spec{ID: "qt-place-rfail", Rootfs: cloneRootfs(t, filepath.Join(snapDir, SnapshotRootfsFile)), RunDir: t.TempDir()}
		hook, calls := recordingHook(spec.RunDir, nil, errPlace)
		spec.Placement = hook
		inst, err := d.Restore(ctx, spec, snapDir)
		if err == nil {
			inst.Destroy(ctx)
			t.Fatal("restore succeeded despite the hook's error")
		}
		if !errors.Is(err, errPlace) {
			t.Fatalf("error %v does not wrap the hook's", err)
		}
		if got := calls(); len(got) != 1 || got[0].status != "inmigrate" {
			t.Fatalf("hook calls %+v", got)
		}
		assertNothingLeft(t, spec.ID, spec.RunDir)
	})

	t.Run("every boot attempt is placed", func(t *testing.T) {
		d := newTestDriver(t, Config{Accel: d.Stats().Accel, BootAttempts: 2})
		spec := testSpec(t, im, "qt-place-retry")
		spec.BootTimeout = 700 * time.Millisecond
		hook, calls := recordingHook(spec.RunDir, nil, nil)
		spec.Placement = hook
		if _, err := d.Create(ctx, spec); !errors.Is(err, vm.ErrBootTimeout) {
			t.Fatalf("err %v, want ErrBootTimeout", err)
		}
		got := calls()
		if len(got) != 2 || got[0].pid == got[1].pid {
			t.Fatalf("hook calls %+v, want one per attempt with different pids", got)
		}
		for _, c := range got {
			if c.status != "prelaunch" {
				t.Errorf("attempt with pid %d placed in state %q", c.pid, c.status)
			}
		}
		assertNothingLeft(t, spec.ID, spec.RunDir)
	})
}
