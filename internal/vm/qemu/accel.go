package qemu

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Accelerator choices for Config.Accel (AGENT_QEMU_ACCEL).
const (
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// probeMarker is printed by every Linux kernel very early on the console.
const probeMarker = "Linux version"

// cpuFor returns the -cpu model for an accelerator: the host's CPU under
// KVM, QEMU's "max" model under TCG.
func cpuFor(accel string) string {
	if accel == AccelKVM {
		return "host"
	}
	return "max"
}

// probeKVM boots kernel under -accel kvm with no disk and reports whether
// the guest got as far as printing its banner. A /dev/kvm that exists but
// cannot run a stock kernel (paravirtualised nested setups) fails here:
// QEMU aborts or the guest never prints. Nothing is left running.
func probeKVM(ctx context.Context, bin, kernel string, timeout time.Duration) (bool, string, error) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return false, "no /dev/kvm", nil
	}
	if kernel == "" {
		return false, "", fmt.Errorf("kvm probe needs a kernel")
	}
	dir, err := os.MkdirTemp("", "wrenn-kvm-probe-")
	if err != nil {
		return false, "", fmt.Errorf("kvm probe dir: %w", err)
	}
	defer os.RemoveAll(dir)
	serial := filepath.Join(dir, "serial.log")
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin,
		"-M", "microvm,x-option-roms=off", "-accel", "kvm", "-cpu", "host",
		"-m", "128", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
		"-kernel", kernel, "-append", "console=ttyS0 panic=-1", "-no-reboot",
		"-serial", "file:"+serial)
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return false, "", fmt.Errorf("start kvm probe: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			out, _ := os.ReadFile(serial)
			if bytes.Contains(out, []byte(probeMarker)) {
				return true, "", nil
			}
			return false, fmt.Sprintf("qemu exited (%v): %s", err, strings.TrimSpace(stderr.String())), nil
		case <-tick.C:
			out, _ := os.ReadFile(serial)
			if bytes.Contains(out, []byte(probeMarker)) {
				cancel()
				<-done
				return true, "", nil
			}
		case <-ctx.Done():
			<-done
			if err := context.Cause(ctx); err != nil && ctx.Err() != context.DeadlineExceeded {
				return false, "", fmt.Errorf("kvm probe: %w", err)
			}
			return false, "guest printed nothing in " + timeout.String(), nil
		}
	}
}
