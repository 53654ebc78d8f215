package fakefc_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/internal/testbin"
)

// TestBinary runs cmd/fake-firecracker the way the driver does.
func TestBinary(t *testing.T) {
	bin, err := testbin.FakeFirecracker(shortDir(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := shortDir(t)
	kernel, rootfs := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "rootfs")
	for _, f := range []string{kernel, rootfs} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfgFile := filepath.Join(dir, "vm.json")
	cfg, _ := json.Marshal(fcapi.FullVMConfig{
		BootSource:    &fcapi.BootSource{KernelImagePath: kernel},
		Drives:        []fcapi.Drive{{DriveID: "rootfs", PathOnHost: rootfs, IsRootDevice: true, IsReadOnly: fcapi.Bool(false)}},
		MachineConfig: &fcapi.MachineConfig{VCPUCount: 2, MemSizeMib: 256},
		Vsock:         &fcapi.Vsock{GuestCID: 3, UDSPath: filepath.Join(dir, "v.sock")},
	})
	if err := os.WriteFile(cfgFile, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	start := func(args ...string) (*exec.Cmd, *strings.Builder) {
		var out strings.Builder
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.Env = append(os.Environ(), "FAKE_FC_ENVD="+envdBin)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd, &out
	}
	waitAPI := func(c *fcapi.Client) fcapi.InstanceInfo {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			info, err := c.GetInstanceInfo(context.Background())
			if err == nil {
				return info
			}
			if time.Now().After(deadline) {
				t.Fatalf("api never answered: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	t.Run("config file boots the VM", func(t *testing.T) {
		before := envdPIDs(t)
		sock := filepath.Join(dir, "api.sock")
		cmd, out := start("--api-sock", sock, "--id", "cli-vm", "--config-file", cfgFile, "--boot-timer")
		c := fcapi.New(sock)
		defer c.Close()
		info := waitAPI(c)
		if info.ID != "cli-vm" || info.State != fcapi.StateRunning {
			t.Fatalf("info %+v", info)
		}
		waitGuest(t, filepath.Join(dir, "v.sock"))
		// A second instance on the same socket path exits (AddrInUse).
		second := exec.Command(bin, "--api-sock", sock)
		if b, err := second.CombinedOutput(); err == nil || !strings.Contains(string(b), "Address in use") {
			t.Fatalf("second instance: %v %s", err, b)
		}
		// SIGTERM stops it, and its envd with it.
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("did not stop on SIGINT; output:\n%s", out)
		}
		for pid := range envdPIDs(t) {
			if !before[pid] {
				t.Fatalf("envd %d outlived the VMM", pid)
			}
		}
		// The sockets stay behind, as Firecracker leaves them.
		if _, err := os.Lstat(sock); err != nil {
			t.Fatalf("api socket removed: %v", err)
		}
		os.Remove(sock)
		os.Remove(filepath.Join(dir, "v.sock"))
	})

	t.Run("no-api needs a config file", func(t *testing.T) {
		b, err := exec.Command(bin, "--no-api").CombinedOutput()
		if err == nil || !strings.Contains(string(b), "--no-api needs --config-file") {
			t.Fatalf("%v %s", err, b)
		}
	})

	t.Run("bad config file", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.json")
		_ = os.WriteFile(bad, []byte(`{"boot-source":{"kernel_image_path":"/nope"}}`), 0o644)
		b, err := exec.Command(bin, "--api-sock", filepath.Join(dir, "b.sock"), "--config-file", bad).CombinedOutput()
		if err == nil || !strings.Contains(string(b), "kernel file") {
			t.Fatalf("%v %s", err, b)
		}
	})
}
