package firecracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/internal/testbin"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/vmtest"
)

// Built once in TestMain: the fake firecracker and the envd it starts.
var fakeBin, envdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fc-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if envdBin, err = testbin.Envd(dir); err == nil {
		fakeBin, err = testbin.FakeFirecracker(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "build test binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the private-mount mode unshares a mount namespace")
	}
}

func shortDir(t *testing.T, pattern string) string {
	t.Helper()
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

var vmSeq atomic.Int64

// testConfig is a driver config that runs the fake, with a private drive
// dir per test instead of /run.
func testConfig(t *testing.T, mode RootfsMode, driveDir string) Config {
	return Config{
		Firecracker: fakeBin,
		Env:         append(os.Environ(), "FAKE_FC_ENVD="+envdBin),
		RootfsMode:  mode,
		DriveDir:    driveDir,
		Log:         slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// testSpec makes a kernel, a rootfs and a run dir for one VM.
func testSpec(t *testing.T) vm.Spec {
	t.Helper()
	files := shortDir(t, "fcimg")
	spec := vm.Spec{
		ID:          fmt.Sprintf("sbx-%d", vmSeq.Add(1)),
		VCPUs:       1,
		MemoryMB:    128,
		Kernel:      filepath.Join(files, "vmlinux"),
		Rootfs:      filepath.Join(files, "rootfs.ext4"),
		RunDir:      shortDir(t, "fcrun"),
		BootTimeout: 20 * time.Second,
	}
	for _, f := range []string{spec.Kernel, spec.Rootfs} {
		if err := os.WriteFile(f, []byte("fake "+filepath.Base(f)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return spec
}

func newTestDriver(t *testing.T, cfg Config) *Driver {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSuite runs the shared driver suite against the fake Firecracker.
func TestSuite(t *testing.T) {
	requireRoot(t)
	driveDir := shortDir(t, "fcdrv")
	vmtest.Run(t, func(t *testing.T) (vm.Driver, vm.Spec) {
		return newTestDriver(t, testConfig(t, RootfsPrivateMount, driveDir)), testSpec(t)
	})
	// The mount point stays empty on the host: every tmpfs was private.
	if ents, _ := os.ReadDir(driveDir); len(ents) != 0 {
		t.Fatalf("drive dir has %d entries on the host", len(ents))
	}
}

func TestBootFailures(t *testing.T) {
	scripts := shortDir(t, "fcbin")
	write := func(name, body string) string {
		p := filepath.Join(scripts, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name     string
		bin      string
		timeout  time.Duration
		mutate   func(*vm.Spec)
		want     error
		contains string
	}{
		{name: "vmm never serves its api", bin: write("hang", "while :; do sleep 0.2; done"), timeout: time.Second,
			want: vm.ErrBootTimeout, contains: "wait for api socket"},
		{name: "vmm exits at once", bin: write("boom", "echo 'boom: /dev/kvm missing' >&2; exit 1"),
			contains: "boom: /dev/kvm missing"},
		{name: "missing kernel", bin: fakeBin, want: vm.ErrInvalidSpec, contains: "nope",
			mutate: func(s *vm.Spec) { s.Kernel = filepath.Join(s.RunDir, "nope") }},
		{name: "missing rootfs", bin: fakeBin, want: vm.ErrInvalidSpec, contains: "nope",
			mutate: func(s *vm.Spec) { s.Rootfs = filepath.Join(s.RunDir, "nope") }},
		{name: "run dir missing", bin: fakeBin, want: vm.ErrInvalidSpec,
			mutate: func(s *vm.Spec) { s.RunDir = filepath.Join(s.RunDir, "nope") }},
		{name: "too many vcpus for firecracker", bin: fakeBin, contains: "number of vCPUs",
			mutate: func(s *vm.Spec) { s.VCPUs = 64 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, RootfsDirect, "")
			cfg.Firecracker = tc.bin
			d := newTestDriver(t, cfg)
			spec := testSpec(t)
			if tc.timeout > 0 {
				spec.BootTimeout = tc.timeout
			}
			if tc.mutate != nil {
				tc.mutate(&spec)
			}
			start := time.Now()
			inst, err := d.Create(context.Background(), spec)
			if err == nil {
				_ = inst.Destroy(context.Background())
				t.Fatal("create succeeded")
			}
			t.Logf("error (after %s): %v", time.Since(start), err)
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if tc.contains != "" && !strings.Contains(err.Error(), tc.contains) {
				t.Fatalf("error %q does not contain %q", err, tc.contains)
			}
			// Nothing left: no file in the run dir, no process of ours.
			if ents, _ := os.ReadDir(spec.RunDir); len(ents) != 0 {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Fatalf("run dir not empty: %v", names)
			}
			if pids := procsMentioning(spec.RunDir); len(pids) != 0 {
				t.Fatalf("processes started for this VM still running: %v", pids)
			}
		})
	}
}
