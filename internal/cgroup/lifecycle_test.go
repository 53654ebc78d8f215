package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func testDeleteBusy(t *testing.T, e *env) {
	ctx := context.Background()
	h, err := e.mgr.Create(ctx, "sb-busy", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, "exec sleep 100")
	if err := e.mgr.AddProcess(ctx, h, p.pid()); err != nil {
		t.Fatal(err)
	}
	if err := e.mgr.Delete(ctx, h); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), strconv.Itoa(p.pid())) {
		t.Fatalf("Delete with a live process = %v, want ErrBusy naming pid %d", err, p.pid())
	}
	if _, err := e.mgr.Load(ctx, h); err != nil {
		t.Fatalf("group gone after refused Delete: %v", err)
	}
	_ = p.cmd.Process.Kill()
	_ = p.wait(t, 5*time.Second)
	for i := range 2 {
		if err := e.mgr.Delete(ctx, h); err != nil {
			t.Fatalf("Delete #%d after exit: %v", i+1, err)
		}
	}
	if _, err := e.mgr.Load(ctx, h); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load after Delete = %v, want ErrNotFound", err)
	}
	if _, err := e.mgr.Stats(ctx, h); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stats after Delete = %v, want ErrNotFound", err)
	}
	for _, d := range e.mgr.b.dirs(h.Group) {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s still there: %v", d, err)
		}
	}
}

// A VMM that was SIGKILLed but not yet reaped by its parent is a zombie;
// the kernel already released it from the group, so Delete must work.
func testDeleteZombie(t *testing.T, e *env) {
	ctx := context.Background()
	h, err := e.mgr.Create(ctx, "sb-zombie", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "sleep", "100")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := e.mgr.AddProcess(ctx, h, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// No Wait: wait until /proc shows the zombie state, then delete.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process never became a zombie: %s", b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := e.mgr.Delete(ctx, h); err != nil {
		t.Fatalf("Delete with an unreaped zombie: %v", err)
	}
}

func testKillTree(t *testing.T, e *env) {
	ctx := context.Background()
	h, err := e.mgr.Create(ctx, "sb-kill", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, "read _; sleep 100 & sleep 100 & echo forked; wait")
	if err := e.mgr.AddProcess(ctx, h, p.pid()); err != nil {
		t.Fatal(err)
	}
	p.next(t)
	if got := p.readLine(t, 5*time.Second); got != "forked" {
		t.Fatalf("script said %q", got)
	}
	pids, err := e.mgr.Procs(ctx, h)
	if err != nil || len(pids) != 3 {
		t.Fatalf("Procs = %v, %v; want the shell and two sleeps", pids, err)
	}
	if err := e.mgr.Kill(ctx, h); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if pids, _ := e.mgr.Procs(ctx, h); len(pids) != 0 {
		t.Fatalf("Procs after Kill = %v", pids)
	}
	if err := p.wait(t, 5*time.Second); err == nil {
		t.Fatal("killed shell exited 0")
	}
	if err := e.mgr.Delete(ctx, h); err != nil {
		t.Fatalf("Delete after Kill: %v", err)
	}
	if err := e.mgr.Kill(ctx, h); err != nil {
		t.Fatalf("Kill of a deleted group: %v", err)
	}
}

func testLoadAfterRestart(t *testing.T, e *env) {
	ctx := context.Background()
	h, err := e.mgr.Create(ctx, "sb-restart", limitsFor(e, Limits{MemoryMB: 128}))
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, "exec sleep 100")
	if err := e.mgr.AddProcess(ctx, h, p.pid()); err != nil {
		t.Fatal(err)
	}
	// A new Manager with the same config stands for the restarted agent.
	m2, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []Handle{h, {SandboxID: h.SandboxID}} {
		got, err := m2.Load(ctx, in)
		if err != nil || got != h {
			t.Fatalf("Load(%+v) = %+v, %v; want %+v", in, got, err, h)
		}
	}
	pids, err := m2.Procs(ctx, h)
	if err != nil || !slices.Equal(pids, []int{p.pid()}) {
		t.Fatalf("Procs after restart = %v, %v", pids, err)
	}
	bad := []Handle{
		{SandboxID: h.SandboxID, Mode: h.Mode, Group: "/elsewhere/" + h.SandboxID},
		{SandboxID: h.SandboxID, Mode: otherMode(h.Mode), Group: h.Group},
		{SandboxID: "../escape"},
		{},
	}
	for _, b := range bad {
		if _, err := m2.Load(ctx, b); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Load(%+v) = %v, want ErrInvalidArgument", b, err)
		}
		if err := m2.Delete(ctx, b); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Delete(%+v) = %v, want ErrInvalidArgument", b, err)
		}
	}
	if _, err := m2.Load(ctx, Handle{SandboxID: "sb-never"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load of a never-created group = %v, want ErrNotFound", err)
	}
}

func otherMode(m Mode) Mode {
	if m == ModeV1 {
		return ModeV2
	}
	return ModeV1
}

func testListLeakCheck(t *testing.T, e *env) {
	ctx := context.Background()
	before, err := e.mgr.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"sb-c", "sb-a", "sb-b"}
	var hs []Handle
	for _, id := range ids {
		h, err := e.mgr.Create(ctx, id, limitsFor(e, Limits{VCPUs: 1, MemoryMB: 32, PIDs: 5}))
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	during, err := e.mgr.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := handleIDs(during), append(handleIDs(before), "sb-a", "sb-b", "sb-c"); !slices.Equal(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	for _, h := range hs {
		if err := e.mgr.Delete(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	after, err := e.mgr.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(handleIDs(after), handleIDs(before)) {
		t.Fatalf("leak: before %v, after %v", handleIDs(before), handleIDs(after))
	}
	if err := e.mgr.RemoveParent(ctx); err != nil {
		t.Fatalf("RemoveParent: %v", err)
	}
	if err := e.mgr.RemoveParent(ctx); err != nil {
		t.Fatalf("second RemoveParent: %v", err)
	}
}

// testStartInside starts a process directly inside the group on v2
// (CLONE_INTO_CGROUP); v1 has no such thing and must say so.
func testStartInside(t *testing.T, e *env) {
	ctx := context.Background()
	h, err := e.mgr.Create(ctx, "sb-inside", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := e.mgr.OpenDir(ctx, h)
	if e.mgr.Mode() == ModeV1 {
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("OpenDir on v1 = %v, want ErrUnsupported", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("OpenDir: %v", err)
	}
	cmd := exec.CommandContext(ctx, "sleep", "100")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	err = cmd.Start()
	f.Close()
	if err != nil {
		t.Fatalf("start inside the group: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pids, err := e.mgr.Procs(ctx, h)
	if err != nil || !slices.Equal(pids, []int{cmd.Process.Pid}) {
		t.Fatalf("Procs = %v, %v; want [%d] without AddProcess", pids, err, cmd.Process.Pid)
	}
	if _, err := e.mgr.OpenDir(ctx, Handle{SandboxID: "sb-none"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenDir of a missing group = %v, want ErrNotFound", err)
	}
}
