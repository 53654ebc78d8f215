package imagebuild

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
)

// requireBootTools skips with the reason when a real boot cannot run here.
func requireBootTools(t *testing.T) Kernel {
	t.Helper()
	for _, tool := range []string{"qemu-system-x86_64", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install qemu-system-x86 e2fsprogs)", tool)
		}
	}
	if _, err := os.Stat(DefaultBusybox); err != nil {
		t.Skip("busybox-static not installed (apt-get install busybox-static)")
	}
	k, err := FindKernel(KernelPaths{}, "")
	if err != nil {
		t.Skipf("guest kernel: %v", err)
	}
	if f, err := os.Open(k.Image); err != nil {
		t.Skipf("kernel image not readable: %v", err)
	} else {
		f.Close()
	}
	return k
}

// TestBootProbeImage builds the real initramfs for the installed cloud kernel
// and a minimal rootfs whose envd is the probe script, boots them under QEMU
// microvm (TCG) and checks that /init handed over to the rootfs and that the
// guest sees what envd needs: the virtio-serial port by name, eth0, vsock,
// the sandbox account, a writable ext4 root.
func TestBootProbeImage(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
	k := requireBootTools(t)
	ctx := context.Background()
	// Unix socket paths are limited to 108 bytes; keep the work dir short.
	work, err := os.MkdirTemp("", "wib")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })

	initrd := filepath.Join(work, "initramfs.img")
	info, err := WriteInitramfs(ctx, InitramfsSpec{Kernel: k}, initrd)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"virtio_mmio", "virtio_blk", "virtio_console", "virtio_net", "vmw_vsock_virtio_transport"} {
		if !containsString(info.Modules, m) && !moduleBuiltin(t, k, m) {
			t.Fatalf("initramfs lacks %s (modules: %v)", m, info.Modules)
		}
	}
	rootfs, err := BuildProbeRootfs(ctx, work, DefaultBusybox, 64)
	if err != nil {
		t.Fatal(err)
	}

	log := slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	spec := BootSpec{
		Kernel: k.Image, Initrd: initrd, Rootfs: rootfs,
		Append:     DefaultAppend + " quiet",
		Marker:     ProbeMarker,
		SerialPort: "org.wrenn.envd",
		UserNet:    true,
	}
	// TCG boots on a loaded machine are slow, and about one in ten hangs
	// silently before the console comes up: retry only that case. A guest
	// that fails (panic, init error) makes QEMU exit and fails at once.
	var res BootResult
	for attempt := 1; ; attempt++ {
		spec.WorkDir = filepath.Join(work, "boot"+string(rune('0'+attempt)))
		bctx, cancel := context.WithTimeout(ctx, 120*time.Second)
		res, err = Boot(bctx, spec, log)
		cancel()
		if err == nil {
			break
		}
		t.Logf("attempt %d: %v\nserial:\n%s", attempt, err, res.Serial)
		if !errors.Is(err, ErrBootTimeout) || attempt == 3 {
			t.Fatalf("boot failed: %v", err)
		}
	}
	t.Logf("userspace reached %v after QEMU start; serial:\n%s", res.ToMarker, res.Serial)
	for _, want := range []string{
		"WRENN-PROBE pid=1 ",
		"WRENN-PROBE root=/dev/vda fstype=ext4 opts=rw",
		"=org.wrenn.envd",
		"WRENN-PROBE eth0 ",
		"WRENN-PROBE vsock",
		"WRENN-PROBE account user:x:1000:1000::/home/user:/bin/sh",
		ProbeDone,
	} {
		if !strings.Contains(res.Serial, want) {
			t.Errorf("serial log lacks %q", want)
		}
	}
	if os.Geteuid() == 0 && !strings.Contains(res.Serial, "WRENN-PROBE home 1000:1000") {
		t.Errorf("home/user not owned by 1000:1000 in the guest")
	}
	if !res.Exited {
		t.Errorf("guest did not power off (QEMU had to be killed)")
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func moduleBuiltin(t *testing.T, k Kernel, m string) bool {
	db, err := LoadModuleDB(k.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	return db.Builtin(m)
}

// TestBootFailurePaths checks that Boot reports a guest that never reaches
// the marker, and that no QEMU outlives the call either way.
func TestBootFailurePaths(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	k := requireBootTools(t)
	work, err := os.MkdirTemp("", "wib")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	disk := filepath.Join(work, "empty.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testlog.Writer(t), nil))
	tests := []struct {
		name    string
		spec    BootSpec
		timeout time.Duration
		wantErr error // nil: any error
	}{
		// Still booting when the context ends: killed, ErrBootTimeout.
		{"timeout", BootSpec{Kernel: k.Image, Rootfs: disk, Marker: "never"}, 500 * time.Millisecond, ErrBootTimeout},
		// QEMU refuses to start: reported at once, not as a timeout.
		{"bad kernel", BootSpec{Kernel: filepath.Join(work, "nosuch"), Rootfs: disk, Marker: "never"}, 30 * time.Second, nil},
		// No initramfs and no virtio_blk: the kernel panics, panic=1 and
		// -no-reboot make QEMU exit.
		{"kernel panic", BootSpec{Kernel: k.Image, Rootfs: disk, Marker: "never", Append: DefaultAppend + " quiet"}, 110 * time.Second, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.timeout > time.Minute && testing.Short() {
				t.Skip("boots a kernel; skipped with -short")
			}
			tt.spec.WorkDir = filepath.Join(work, strings.ReplaceAll(tt.name, " ", "-"))
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			start := time.Now()
			_, err := Boot(ctx, tt.spec, log)
			if err == nil {
				t.Fatal("boot without the marker succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && errors.Is(err, ErrBootTimeout) {
				t.Fatalf("failure reported as a timeout after %v: %v", time.Since(start), err)
			}
			if pids := processesMentioning(t, tt.spec.WorkDir); len(pids) > 0 {
				t.Fatalf("QEMU still running after Boot returned: %v", pids)
			}
		})
	}
}

// processesMentioning lists pids whose command line contains s.
func processesMentioning(t *testing.T, s string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), s) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}
