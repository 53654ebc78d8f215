package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/jailer"
)

// DriverName is Name() and Handle.Driver.
const DriverName = "firecracker"

// RootfsMode says how the rootfs path baked into snapshots is kept stable
// (see the package comment).
type RootfsMode string

const (
	RootfsPrivateMount RootfsMode = "private-mount"
	RootfsDirect       RootfsMode = "direct"
	rootfsJail         RootfsMode = "jail" // set by Config.Jailer
)

// Defaults.
const (
	DefaultDriveDir    = "/run/wrenn-fc-drive"
	DefaultGuestCIDR   = "169.254.0.21/30"
	DefaultGateway     = "169.254.0.22"
	DefaultBootArgs    = "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd"
	DefaultBootTimeout = 10 * time.Second
	DefaultStopGrace   = 500 * time.Millisecond
	guestCID           = 3
)

// JailerConfig runs firecracker under the jailer. The jail id is the
// sandbox id (it must satisfy jailer.ValidateID). The driver never passes
// --daemonize or --new-pid-ns: the jailer execs firecracker in place, so the
// process the driver started (and waits for) is the VMM itself. With cgroup
// v2 the driver removes <cgroup>/<parent>/<id> after the VM; with v1 the
// caller must.
type JailerConfig struct {
	Binary         string // the jailer executable
	UID, GID       int
	ChrootBaseDir  string
	CgroupVersion  int
	ParentCgroup   string
	Cgroups        []string
	ResourceLimits []string
}

func (j *JailerConfig) config(spec vm.Spec, firecracker string) jailer.Config {
	c := jailer.Config{
		ID: spec.ID, ExecFile: firecracker, UID: j.UID, GID: j.GID, ChrootBaseDir: j.ChrootBaseDir,
		CgroupVersion: j.CgroupVersion, ParentCgroup: j.ParentCgroup, Cgroups: j.Cgroups,
		ResourceLimits: j.ResourceLimits,
	}
	if spec.Net != nil {
		c.NetNS = spec.Net.NetNS
	}
	return c
}

// Config configures the driver.
type Config struct {
	// Firecracker is the firecracker executable (absolute path).
	Firecracker string
	// Env is the VMM's environment (nil: the agent's).
	Env []string
	// Jailer, when set, starts firecracker under the jailer.
	Jailer *JailerConfig
	// RootfsMode without a jailer: RootfsPrivateMount (default) or
	// RootfsDirect.
	RootfsMode RootfsMode
	// DriveDir is the fixed directory the private mount namespace covers
	// with its tmpfs (DefaultDriveDir). It stays empty on the host.
	DriveDir string
	// BootArgs is the kernel command line before the driver's ip= and
	// Spec.KernelArgs (DefaultBootArgs).
	BootArgs string
	// GuestCIDR and Gateway are the guest's fixed eth0 address and route,
	// the same for every sandbox (each has its own network namespace), so
	// snapshots restore unchanged.
	GuestCIDR string
	Gateway   string
	// LogLevel of Firecracker's own log (fcapi.LevelWarning by default).
	LogLevel string
	// TrackDirtyPages enables dirty page tracking (needed for efficient
	// Diff snapshots; costs some guest performance).
	TrackDirtyPages bool
	// BootTimeout is used when Spec.BootTimeout is zero.
	BootTimeout time.Duration
	// StopGrace is how long Destroy waits after Ctrl-Alt-Del before
	// SIGKILL (negative: kill at once).
	StopGrace time.Duration
	Log       *slog.Logger
}

// Driver is the Firecracker vm.Driver.
type Driver struct {
	cfg Config
	log *slog.Logger
}

var _ vm.Driver = (*Driver)(nil)

// New checks cfg and fills in defaults.
func New(cfg Config) (*Driver, error) {
	if cfg.Firecracker == "" || !filepath.IsAbs(cfg.Firecracker) {
		return nil, fmt.Errorf("firecracker binary %q: an absolute path is required", cfg.Firecracker)
	}
	if cfg.Jailer != nil && (cfg.Jailer.Binary == "" || !filepath.IsAbs(cfg.Jailer.Binary)) {
		return nil, fmt.Errorf("jailer binary %q: an absolute path is required", cfg.Jailer.Binary)
	}
	if cfg.RootfsMode == "" {
		cfg.RootfsMode = RootfsPrivateMount
	}
	if cfg.RootfsMode != RootfsPrivateMount && cfg.RootfsMode != RootfsDirect {
		return nil, fmt.Errorf("unknown rootfs mode %q", cfg.RootfsMode)
	}
	if cfg.DriveDir == "" {
		cfg.DriveDir = DefaultDriveDir
	}
	if cfg.BootArgs == "" {
		cfg.BootArgs = DefaultBootArgs
	}
	if cfg.GuestCIDR == "" {
		cfg.GuestCIDR = DefaultGuestCIDR
	}
	if cfg.Gateway == "" {
		cfg.Gateway = DefaultGateway
	}
	if _, _, err := net.ParseCIDR(cfg.GuestCIDR); err != nil {
		return nil, fmt.Errorf("guest cidr: %w", err)
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = fcapi.LevelWarning
	}
	if cfg.BootTimeout <= 0 {
		cfg.BootTimeout = DefaultBootTimeout
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Driver{cfg: cfg, log: log.With("driver", DriverName)}, nil
}

// Name is "firecracker".
func (d *Driver) Name() string { return DriverName }

// Capabilities of the Firecracker driver.
func (d *Driver) Capabilities() vm.Capabilities {
	return vm.Capabilities{Snapshot: true, DiffSnapshot: true, Reattach: true, Vsock: true}
}

// checkSpec validates spec and the files a boot (or restore) needs.
func checkSpec(spec vm.Spec, needKernel bool) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if needKernel && spec.MemoryFile != "" {
		return fmt.Errorf("file-backed guest memory: %w", vm.ErrNotSupported)
	}
	files := []string{spec.Rootfs}
	if needKernel {
		files = append(files, spec.Kernel)
		if spec.Initrd != "" {
			files = append(files, spec.Initrd)
		}
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || !fi.Mode().IsRegular() {
			if err == nil {
				err = errors.New("not a regular file")
			}
			return fmt.Errorf("%w: %s: %w", vm.ErrInvalidSpec, f, err)
		}
	}
	if fi, err := os.Stat(spec.RunDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: run dir %s must exist", vm.ErrInvalidSpec, spec.RunDir)
	}
	if spec.Net != nil && spec.Net.TapName == "" {
		return fmt.Errorf("%w: net without a tap name", vm.ErrInvalidSpec)
	}
	return nil
}

func (d *Driver) bootTimeout(spec vm.Spec) time.Duration {
	if spec.BootTimeout > 0 {
		return spec.BootTimeout
	}
	return d.cfg.BootTimeout
}

// Create boots a new VM. On any error the process is killed and every file
// the driver made is removed.
func (d *Driver) Create(ctx context.Context, spec vm.Spec) (vm.Instance, error) {
	if err := checkSpec(spec, true); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.bootTimeout(spec))
	defer cancel()
	start := time.Now()
	in, err := d.launch(ctx, spec)
	if err != nil {
		return nil, err
	}
	if err := d.boot(ctx, in); err != nil {
		return nil, in.fail(ctx, "boot", err)
	}
	d.log.Info("vm booted", "sandbox_id", spec.ID, "pid", in.proc.pid, "took", time.Since(start))
	return in, nil
}

// launch prepares the files, starts the VMM, calls spec.Placement with its
// pid and waits for its API.
func (d *Driver) launch(ctx context.Context, spec vm.Spec) (*instance, error) {
	p, err := d.paths(spec)
	if err != nil {
		return nil, err
	}
	if err := p.prepare(spec); err != nil {
		_ = p.cleanup()
		return nil, fmt.Errorf("prepare vm %s: %w", spec.ID, err)
	}
	argv := append([]string{d.cfg.Firecracker}, p.firecrackerArgs(spec.ID)...)
	if p.jailCfg != nil {
		ja, err := p.jailCfg.Args(p.firecrackerArgs(spec.ID)...)
		if err != nil {
			_ = p.cleanup()
			return nil, fmt.Errorf("%w: %w", vm.ErrInvalidSpec, err)
		}
		argv = append([]string{d.cfg.Jailer.Binary}, ja...)
	}
	env := d.cfg.Env
	if env == nil {
		env = os.Environ()
	}
	pr, err := startProc(argv, env, p.console, p.ns)
	if err != nil {
		_ = p.cleanup()
		return nil, fmt.Errorf("launch vmm for %s: %w", spec.ID, err)
	}
	place := spec.Placement
	spec.Placement = nil // the instance does not keep the caller's hook
	in := newInstance(d, spec, p, pr)
	if place != nil {
		// Nothing maps guest memory before InstanceStart or a snapshot
		// load, which the caller runs after launch returns.
		if err := place(pr.pid); err != nil {
			return nil, in.fail(ctx, "place vmm", err)
		}
	}
	if err := in.waitAPI(ctx); err != nil {
		return nil, in.fail(ctx, "wait for api socket", err)
	}
	return in, nil
}

// Reattach takes over a running VMM from its persisted handle.
func (d *Driver) Reattach(ctx context.Context, h vm.Handle) (vm.Instance, error) {
	if h.Driver != DriverName {
		return nil, fmt.Errorf("handle of driver %q: %w", h.Driver, vm.ErrInvalidSpec)
	}
	p, err := d.paths(h.Spec)
	if err != nil {
		return nil, err
	}
	if h.PID <= 0 || !alive(h.PID) {
		return nil, fmt.Errorf("reattach %s: pid %d is gone: %w", h.ID, h.PID, vm.ErrNotFound)
	}
	if !cmdlineHas(h.PID, p.apiSockArg) {
		return nil, fmt.Errorf("reattach %s: pid %d is not this VM's firecracker: %w", h.ID, h.PID, vm.ErrNotFound)
	}
	api := fcapi.New(p.apiSock)
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := api.GetInstanceInfo(cctx); err != nil {
		api.Close()
		return nil, fmt.Errorf("reattach %s: api not answering: %w: %w", h.ID, err, vm.ErrNotFound)
	}
	pr, err := watchPID(h.PID)
	if err != nil {
		api.Close()
		return nil, fmt.Errorf("reattach %s: %w: %w", h.ID, err, vm.ErrNotFound)
	}
	in := &instance{d: d, spec: h.Spec, paths: p, proc: pr, api: api}
	d.log.Info("vm reattached", "sandbox_id", h.ID, "pid", h.PID)
	return in, nil
}
