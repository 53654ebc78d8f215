package cgroup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNewRejectsBadConfig(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
	}{
		{"parent dot-dot", Config{Parent: "../etc"}},
		{"parent unclean", Config{Parent: "a//b"}},
		{"parent dot", Config{Parent: "."}},
		{"period too short", Config{CPUPeriod: time.Microsecond}},
		{"period too long", Config{CPUPeriod: 2 * time.Second}},
		{"unknown mode", Config{Mode: "v3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := New(c.cfg); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("New(%+v) = %v, want ErrInvalidArgument", c.cfg, err)
			}
		})
	}
}

func TestNewWrongHierarchy(t *testing.T) {
	dir := t.TempDir() // a plain directory is neither v1 nor v2
	for _, mode := range []Mode{ModeAuto, ModeV1, ModeV2} {
		if _, err := New(Config{Mode: mode, Root: dir}); !errors.Is(err, ErrUnsupported) {
			t.Errorf("New(mode %q on a plain dir) = %v, want ErrUnsupported", mode, err)
		}
	}
}

func TestInvalidArguments(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, "host", Config{})
	ctx := context.Background()
	ids := []string{"", ".", "..", "a/b", "a b", "x\n", strings.Repeat("a", 129)}
	for _, id := range ids {
		if _, err := e.mgr.Create(ctx, id, Limits{}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Create(%q) = %v, want ErrInvalidArgument", id, err)
		}
	}
	limits := []Limits{{VCPUs: -1}, {MemoryMB: -1}, {OverheadMB: -1}, {PIDs: -1}}
	for _, l := range limits {
		if _, err := e.mgr.Create(ctx, "sb-x", l); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("Create(%+v) = %v, want ErrInvalidArgument", l, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.mgr.Create(cctx, "sb-x", Limits{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Create with a cancelled ctx = %v", err)
	}
	if hs, _ := e.mgr.List(ctx); len(hs) != 0 {
		t.Fatalf("rejected Creates left %v", handleIDs(hs))
	}
}

// TestV2Values checks the exact strings the v2 backend writes, on a plain
// directory laid out like a cgroup2 tree (the kernel populates a group's
// control files; here the test does). Whether the kernel accepts them is
// what TestBehaviour/v2-mount checks on a host whose v2 hierarchy has the
// controllers (every pure-v2 host; not our hybrid build machines).
func TestV2Values(t *testing.T) {
	root := t.TempDir()
	group := "/wrenn/sb-1"
	files := map[string][]string{
		"":           {"cgroup.controllers", "cgroup.subtree_control"},
		"wrenn":      {"cgroup.subtree_control"},
		"wrenn/sb-1": {"cgroup.subtree_control", "cpu.max", "memory.max", "memory.swap.max", "pids.max"},
	}
	for dir, fs := range files {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			if err := os.WriteFile(filepath.Join(root, dir, f), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &v2{root: root}
	cases := []struct {
		l    Limits
		want map[string]string
	}{
		{Limits{VCPUs: 2, MemoryMB: 256, OverheadMB: 32, PIDs: 100}, map[string]string{
			"cpu.max": "200000 100000", "memory.max": "301989888", "memory.swap.max": "0", "pids.max": "100",
		}},
		{Limits{}, map[string]string{
			"cpu.max": "max 100000", "memory.max": "max", "memory.swap.max": "max", "pids.max": "max",
		}},
	}
	for _, c := range cases {
		if _, err := b.create(group, c.l, 100000); err != nil {
			t.Fatalf("create(%+v): %v", c.l, err)
		}
		for f, want := range c.want {
			got, err := os.ReadFile(filepath.Join(root, group, f))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Errorf("limits %+v: %s = %q, want %q", c.l, f, got, want)
			}
		}
		sub, _ := os.ReadFile(filepath.Join(root, "wrenn", "cgroup.subtree_control"))
		for _, c := range []string{"+cpu", "+memory", "+pids"} {
			if !strings.Contains(string(sub), c) {
				t.Errorf("parent subtree_control %q lacks %s", sub, c)
			}
		}
	}
}
