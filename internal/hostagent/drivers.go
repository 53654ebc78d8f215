package hostagent

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn-sandbox/internal/config"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/qemu"
)

// kvmGetAPIVersion is KVM_GET_API_VERSION (_IO(0xAE, 0)).
const kvmGetAPIVersion = 0xAE00

// kvmUsable reports whether /dev/kvm opens and answers the API version
// ioctl with the stable version 12.
func kvmUsable() bool {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion)
	return err == nil && v == 12
}

// ResolveVMM picks the driver for AGENT_VMM=auto: firecracker where its
// binary and a usable /dev/kvm exist, else qemu. It returns the choice and
// why.
func ResolveVMM(cfg config.Agent) (string, string) {
	if cfg.VMM != config.VMMAuto {
		return cfg.VMM, "configured"
	}
	bin := cfg.FirecrackerBin
	if bin == "" {
		p, err := exec.LookPath("firecracker")
		if err != nil {
			return config.VMMQEMU, "no firecracker binary in PATH"
		}
		bin = p
	}
	if _, err := os.Stat(bin); err != nil {
		return config.VMMQEMU, "firecracker binary: " + err.Error()
	}
	if !kvmUsable() {
		return config.VMMQEMU, "/dev/kvm missing or unusable"
	}
	return config.VMMFirecracker, "firecracker binary and /dev/kvm found"
}

// newDriver builds the VM driver and says how to tell whether a snapshot
// directory it wrote has a network card.
func newDriver(cfg config.Agent, log *slog.Logger) (vm.Driver, func(string) bool, error) {
	name, why := ResolveVMM(cfg)
	log.Info("vm driver chosen", "vmm", name, "reason", why)
	switch name {
	case config.VMMQEMU:
		if err := qemu.Available(cfg.QEMUBin); err != nil {
			return nil, nil, err
		}
		d, err := qemu.New(qemu.Config{QEMU: cfg.QEMUBin, Accel: cfg.QEMUAccel, BootTimeout: cfg.BootTimeout / 2, Log: log})
		if err != nil {
			return nil, nil, err
		}
		hasNIC := func(dir string) bool {
			m, err := qemu.ReadSnapshotMeta(dir)
			return err == nil && m.Machine.NIC
		}
		return d, hasNIC, nil
	case config.VMMFirecracker:
		bin := cfg.FirecrackerBin
		if bin == "" {
			bin, _ = exec.LookPath("firecracker")
		}
		bin, _ = filepath.Abs(bin)
		fc := firecracker.Config{Firecracker: bin, BootTimeout: cfg.BootTimeout / 2, Log: log}
		if cfg.JailerBin != "" {
			fc.Jailer = &firecracker.JailerConfig{Binary: cfg.JailerBin}
		}
		d, err := firecracker.New(fc)
		if err != nil {
			return nil, nil, err
		}
		// Firecracker snapshots always keep the network interface the VM
		// booted with; the template manager boots templates without one.
		return d, func(string) bool { return false }, nil
	}
	return nil, nil, fmt.Errorf("unknown vmm %q", name)
}
