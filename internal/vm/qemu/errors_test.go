package qemu

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// TestCreateInvalidSpec: missing files and bad fields fail before QEMU
// starts, with vm.ErrInvalidSpec and the offending path or value.
func TestCreateInvalidSpec(t *testing.T) {
	im := needImages(t)
	d := newTestDriver(t, Config{Accel: AccelTCG})
	missing := filepath.Join(t.TempDir(), "nope")
	tests := []struct {
		name   string
		mutate func(*vm.Spec)
		want   string
	}{
		{"missing kernel", func(s *vm.Spec) { s.Kernel = missing }, missing},
		{"missing initrd", func(s *vm.Spec) { s.Initrd = missing }, missing},
		{"missing rootfs", func(s *vm.Spec) { s.Rootfs = missing }, missing},
		{"missing run dir", func(s *vm.Spec) { s.RunDir = missing }, missing},
		{"rootfs is a directory", func(s *vm.Spec) { s.Rootfs = t.TempDir() }, "is a directory"},
		{"no kernel", func(s *vm.Spec) { s.Kernel = "" }, "kernel, rootfs and run dir are required"},
		{"tiny memory", func(s *vm.Spec) { s.MemoryMB = 16 }, "memory"},
		{"id with a comma", func(s *vm.Spec) { s.ID = "a,b" }, `"a,b"`},
		{"tap name with a comma", func(s *vm.Spec) { s.Net = &vm.NetSpec{TapName: "tap0,script=/x"} }, "tap name"},
		{"bad mac", func(s *vm.Spec) { s.Net = &vm.NetSpec{TapName: "tap0", MAC: "zz"} }, "mac"},
		{"missing netns", func(s *vm.Spec) { s.Net = &vm.NetSpec{TapName: "tap0", NetNS: missing} }, missing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := vm.Spec{ID: "qt-invalid", VCPUs: 1, MemoryMB: 128, Kernel: im.Kernel, Initrd: im.Initrd, Rootfs: im.Rootfs, RunDir: t.TempDir()}
			run := spec.RunDir
			tc.mutate(&spec)
			_, err := d.Create(context.Background(), spec)
			if !errors.Is(err, vm.ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrInvalidSpec mentioning %q", err, tc.want)
			}
			assertNothingLeft(t, spec.ID, run)
		})
	}
	if st := d.Stats(); st.BootAttempts != 0 {
		t.Errorf("qemu was started for invalid specs: %+v", st)
	}
}

// TestNeverHealthy: a guest that cannot start envd, and a boot that does
// not finish in time, fail with a clear error and leave nothing behind;
// only the hang is retried, and the retry is counted.
func TestNeverHealthy(t *testing.T) {
	im := needImages(t)
	ctx := context.Background()

	t.Run("rootfs without envd", func(t *testing.T) {
		d := newTestDriver(t, Config{})
		spec := testSpec(t, im, "qt-noenvd")
		spec.Rootfs = cloneRootfs(t, im.NoEnvdRootfs)
		start := time.Now()
		_, err := d.Create(ctx, spec)
		if err == nil {
			t.Fatal("create succeeded without envd in the rootfs")
		}
		t.Logf("failed after %v: %v", time.Since(start), err)
		if errors.Is(err, vm.ErrBootTimeout) {
			t.Errorf("a guest that powered off was reported as a timeout")
		}
		for _, want := range []string{"qemu stopped before the guest was up", "envd is not an executable"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q", want)
			}
		}
		assertNothingLeft(t, spec.ID, spec.RunDir)
		if st := d.Stats(); st.BootAttempts != 1 || st.BootRetries != 0 {
			t.Errorf("stats %+v: a guest failure must not be retried", st)
		}
	})

	t.Run("boot that does not finish in time", func(t *testing.T) {
		d := newTestDriver(t, Config{BootAttempts: 2})
		spec := testSpec(t, im, "qt-hang")
		spec.BootTimeout = 700 * time.Millisecond
		_, err := d.Create(ctx, spec)
		if !errors.Is(err, vm.ErrBootTimeout) {
			t.Fatalf("err %v, want ErrBootTimeout", err)
		}
		if !strings.Contains(err.Error(), "no answer from the guest within 700ms") {
			t.Errorf("unclear error: %v", err)
		}
		assertNothingLeft(t, spec.ID, spec.RunDir)
		if st := d.Stats(); st.BootAttempts != 2 || st.BootRetries != 1 || st.Boots != 0 {
			t.Errorf("stats %+v: want 2 attempts, 1 retry, 0 boots", st)
		}
	})
}
