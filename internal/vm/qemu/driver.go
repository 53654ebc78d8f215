// Package qemu implements vm.Driver with QEMU's `microvm` machine
// (qemu-system-x86_64, verified on 7.2): KVM where the host can really run
// a guest (probed, not assumed), TCG otherwise. It owns the QEMU process,
// its QMP monitor and the files in each VM's RunDir; the guest's envd is
// reached through a virtio-serial port (internal/envdclient's SerialDialer).
// It must not import the control plane or the host agent's other packages.
//
// A VM's command line is fixed at first boot and saved with each snapshot;
// a restore replays it verbatim (only disk, sockets, name and network
// backend change) plus `-incoming defer`, because QEMU refuses a migration
// stream whose device list differs in any way.
package qemu

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// DriverName is what Name and Handle.Driver say.
const DriverName = "qemu"

// Defaults.
const (
	DefaultBootTimeout  = 20 * time.Second
	DefaultBootAttempts = 3
	DefaultStopGrace    = 3 * time.Second
	DefaultProbeTimeout = 8 * time.Second
)

// Config configures the driver. The zero value works on a host with
// qemu-system-x86_64 in PATH.
type Config struct {
	// QEMU is the emulator binary; default qemu-system-x86_64 from PATH.
	QEMU string
	// Accel is auto, kvm or tcg (AGENT_QEMU_ACCEL). auto boots a probe
	// guest under KVM once and uses TCG if it does not get going.
	Accel string
	// ProbeTimeout bounds the KVM probe boot; default 8 s.
	ProbeTimeout time.Duration
	// DriveCache is the rootfs -drive cache mode: writeback (default; the
	// host page cache, guest flushes honoured) or none (O_DIRECT, no double
	// caching; falls back to writeback where the filesystem lacks
	// O_DIRECT). Measured under TCG: a 48 MiB write+fsync took 2.6-2.9 s
	// with writeback and 4.6-4.7 s with none; reads and snapshots alike.
	DriveCache string
	// BootTimeout bounds one boot attempt when Spec.BootTimeout is 0.
	BootTimeout time.Duration
	// BootAttempts is how many times a boot that hangs is killed and
	// retried (TCG boots were seen to hang about once in ten); default 3.
	BootAttempts int
	// ReadyMarker, when set, is console text that also counts as "guest
	// running" besides the envd channel answering its handshake.
	ReadyMarker string
	// TSCKHz is passed to TCG guests as tsc_early_khz so their kernel does
	// not calibrate the TSC against the emulated PIT, which hangs the boot
	// on a busy host. 0: measure the host's rate once; negative: never.
	TSCKHz int64
	// StopGrace is how long Destroy waits after QMP quit before SIGKILL.
	StopGrace time.Duration
	Log       *slog.Logger
}

// Stats counts the driver's boots and the retries they needed.
type Stats struct {
	Boots          int64  `json:"boots"`           // successful creates
	BootAttempts   int64  `json:"boot_attempts"`   // QEMU starts for creates
	BootRetries    int64  `json:"boot_retries"`    // attempts killed after hanging
	Restores       int64  `json:"restores"`        // successful restores
	RestoreRetries int64  `json:"restore_retries"` // restore attempts killed after hanging
	Accel          string `json:"accel"`           // resolved accelerator ("" before the first boot)
	AccelReason    string `json:"accel_reason,omitempty"`
}

// Driver is the QEMU microvm vm.Driver.
type Driver struct {
	cfg Config
	log *slog.Logger

	accelMu     sync.Mutex
	accel       string
	accelReason string

	tscOnce sync.Once
	tscKHz  int64

	boots, bootAttempts, bootRetries atomic.Int64
	restores, restoreRetries         atomic.Int64
}

var _ vm.Driver = (*Driver)(nil)

// New returns a driver. It checks the accelerator setting but starts
// nothing; the KVM probe runs on the first boot.
func New(cfg Config) (*Driver, error) {
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	switch cfg.Accel {
	case "":
		cfg.Accel = AccelAuto
	case AccelAuto, AccelKVM, AccelTCG:
	default:
		return nil, fmt.Errorf("qemu accel %q: want auto, kvm or tcg", cfg.Accel)
	}
	switch cfg.DriveCache {
	case "", "none", "writeback":
	default:
		return nil, fmt.Errorf("qemu drive cache %q: want none or writeback", cfg.DriveCache)
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.BootTimeout <= 0 {
		cfg.BootTimeout = DefaultBootTimeout
	}
	if cfg.BootAttempts <= 0 {
		cfg.BootAttempts = DefaultBootAttempts
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{cfg: cfg, log: cfg.Log.With("vmm", DriverName)}
	if cfg.Accel != AccelAuto {
		d.accel, d.accelReason = cfg.Accel, "configured"
	}
	return d, nil
}

// Available reports whether the QEMU binary can be found.
func Available(bin string) error {
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	if _, err := exec.LookPath(bin); err != nil {
		return fmt.Errorf("qemu binary: %w", err)
	}
	return nil
}

// Name implements vm.Driver.
func (d *Driver) Name() string { return DriverName }

// Capabilities implements vm.Driver.
func (d *Driver) Capabilities() vm.Capabilities {
	return vm.Capabilities{Snapshot: true, Reattach: true, MemoryFile: true}
}

// Stats returns the driver's counters.
func (d *Driver) Stats() Stats {
	d.accelMu.Lock()
	accel, reason := d.accel, d.accelReason
	d.accelMu.Unlock()
	return Stats{
		Boots:          d.boots.Load(),
		BootAttempts:   d.bootAttempts.Load(),
		BootRetries:    d.bootRetries.Load(),
		Restores:       d.restores.Load(),
		RestoreRetries: d.restoreRetries.Load(),
		Accel:          accel,
		AccelReason:    reason,
	}
}

// Accel resolves the accelerator, running the KVM probe with kernel the
// first time when configured as auto. The result is cached.
func (d *Driver) Accel(ctx context.Context, kernel string) (string, error) {
	d.accelMu.Lock()
	defer d.accelMu.Unlock()
	if d.accel != "" {
		return d.accel, nil
	}
	start := time.Now()
	ok, why, err := probeKVM(ctx, d.cfg.QEMU, kernel, d.cfg.ProbeTimeout)
	if err != nil {
		return "", fmt.Errorf("probe kvm: %w", err)
	}
	if ok {
		d.accel, d.accelReason = AccelKVM, "probe booted a guest under kvm"
	} else {
		d.accel, d.accelReason = AccelTCG, "kvm unusable: "+why
	}
	d.log.Info("qemu accelerator chosen", "accel", d.accel, "reason", d.accelReason, "probe_took", time.Since(start))
	return d.accel, nil
}

// tcgTSCArg is the kernel argument that spares a TCG guest its TSC
// calibration ("" when the rate is unknown or disabled).
func (d *Driver) tcgTSCArg() string {
	d.tscOnce.Do(func() {
		d.tscKHz = d.cfg.TSCKHz
		if d.tscKHz == 0 {
			d.tscKHz = measureTSCKHz(100 * time.Millisecond)
			d.log.Debug("host tsc rate measured", "khz", d.tscKHz)
		}
	})
	if d.tscKHz <= 0 {
		return ""
	}
	return fmt.Sprintf("tsc_early_khz=%d", d.tscKHz)
}

// driveCache picks the -drive cache mode for a rootfs.
func (d *Driver) driveCache(rootfs string) string {
	if d.cfg.DriveCache != "none" {
		return "writeback"
	}
	fd, err := unix.Open(rootfs, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		d.log.Warn("rootfs does not support O_DIRECT; using cache=writeback", "rootfs", rootfs, "err", err)
		return "writeback"
	}
	unix.Close(fd)
	return "none"
}

// checkFile fails with vm.ErrInvalidSpec when a file the VM needs is missing.
func checkFile(what, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w", vm.ErrInvalidSpec, what, path, err)
	}
	if st.IsDir() {
		return fmt.Errorf("%w: %s %s is a directory", vm.ErrInvalidSpec, what, path)
	}
	return nil
}

func checkDir(what, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w", vm.ErrInvalidSpec, what, path, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: %s %s is not a directory", vm.ErrInvalidSpec, what, path)
	}
	return nil
}

// bootTimeout is one attempt's deadline for spec.
func (d *Driver) bootTimeout(spec vm.Spec) time.Duration {
	if spec.BootTimeout > 0 {
		return spec.BootTimeout
	}
	return d.cfg.BootTimeout
}

// retryableError marks a failed attempt that a fresh QEMU may get past.
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }
