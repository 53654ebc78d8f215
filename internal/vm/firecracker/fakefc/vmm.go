// Package fakefc is a fake Firecracker VMM for tests on machines where the
// real one cannot run. It serves the Firecracker REST API on a Unix socket
// with Firecracker's validation, state machine and error shapes (400 +
// fault_message), and stands in for the guest with a real envd started as a
// host process: the hybrid-vsock UDS bridges `CONNECT 49983` to it, pause
// and resume are SIGSTOP and SIGCONT, and a guest shutdown ends the VMM.
//
// What it cannot do, and does not pretend to: run a kernel, or snapshot
// process memory. A snapshot writes a JSON description of the machine and a
// sparse memory file of the right size; a load checks them and boots a fresh
// envd. Tests that need guest state to survive a restore need a real VMM.
//
// Not imitated: guest-initiated vsock connections (<uds_path>_<port>), the
// 1023-connection vsock limit, rate limiters (accepted, not enforced), the
// MMDS network endpoint, the balloon's guest side, serial output, seccomp
// and timing. Fault texts are close to Firecracker's but not guaranteed
// identical.
//
// The package is used in-process by tests and by cmd/fake-firecracker. It
// imports the fcapi types for answers but checks request bodies against its
// own schema table (schema.go). It must not import the driver.
package fakefc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
)

// Version is what the fake reports as its Firecracker version: the release
// whose API it imitates.
const Version = "1.16.1"

// EnvdPort is the guest port envd listens on; the only vsock port the fake
// guest answers.
const EnvdPort = 49983

// Config configures one fake VMM (one process in cmd/fake-firecracker).
type Config struct {
	APISock     string // required unless NoAPI
	ID          string // instance id reported by GET /
	LogPath     string // --log-path: the logger is configured at start
	Level       string // --level
	MetricsPath string // --metrics-path
	// EnvdPath is the envd binary started at InstanceStart (the "guest").
	// Empty: the guest never answers on vsock.
	EnvdPath string
	EnvdArgs []string // extra envd arguments
	// MaxPayload caps a request body (default fcapi.MaxPayload); MMDSLimit
	// caps the MMDS data store (default MaxPayload).
	MaxPayload int64
	MMDSLimit  int64
	Log        *slog.Logger
}

// Instance states (GET /).
const (
	stateNotStarted = fcapi.StateNotStarted
	stateRunning    = fcapi.StateRunning
	statePaused     = fcapi.StatePaused
)

// VMM is one fake Firecracker. API requests are handled one at a time, as
// Firecracker does.
type VMM struct {
	cfg Config
	log *slog.Logger

	mu             sync.Mutex // serialises API requests and guards all below
	state          string
	bootConfigured bool // a boot-specific resource was set: no snapshot load
	bootSource     *fcapi.BootSource
	drives         []fcapi.Drive
	machine        fcapi.MachineConfig
	ifaces         []fcapi.NetworkInterface
	vsockCfg       *fcapi.Vsock
	vsock          *vsockDevice
	entropy        *fcapi.Entropy
	serial         *fcapi.Serial
	logger         *fcapi.Logger
	logFile        *os.File
	metrics        *fcapi.Metrics
	mmds           any
	mmdsConfig     *fcapi.MMDSConfig
	balloon        *fcapi.Balloon
	pendingCAD     bool // Ctrl-Alt-Del sent while paused
	guest          *guest

	exitOnce sync.Once
	done     chan struct{}
	exitCode int
	exitErr  error
}

// New returns a fake VMM in the "Not started" state.
func New(cfg Config) *VMM {
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = fcapi.MaxPayload
	}
	if cfg.MMDSLimit <= 0 {
		cfg.MMDSLimit = cfg.MaxPayload
	}
	if cfg.ID == "" {
		cfg.ID = "anonymous-instance"
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &VMM{
		cfg:     cfg,
		log:     log.With("fake_fc", cfg.ID),
		state:   stateNotStarted,
		machine: fcapi.MachineConfig{VCPUCount: 1, MemSizeMib: 128},
		done:    make(chan struct{}),
	}
}

// Start applies the command-line logger and metrics settings.
func (v *VMM) Start() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cfg.LogPath != "" {
		l := fcapi.Logger{LogPath: v.cfg.LogPath, Level: v.cfg.Level}
		if err := v.setLogger(l); err != nil {
			return fmt.Errorf("--log-path: %w", err)
		}
	}
	if v.cfg.MetricsPath != "" {
		if err := v.setMetrics(fcapi.Metrics{MetricsPath: v.cfg.MetricsPath}); err != nil {
			return fmt.Errorf("--metrics-path: %w", err)
		}
	}
	return nil
}

// Serve answers API requests on cfg.APISock until ctx ends or the VMM
// exits (guest shutdown, failed snapshot load). Like Firecracker it refuses
// to start when the socket path exists, and it leaves the socket file
// behind when it stops: removing stale sockets is the caller's job.
func (v *VMM) Serve(ctx context.Context) error {
	if _, err := os.Lstat(v.cfg.APISock); err == nil {
		return fmt.Errorf("bind api socket %s: %w", v.cfg.APISock, errAddrInUse)
	}
	ln, err := net.Listen("unix", v.cfg.APISock)
	if err != nil {
		return fmt.Errorf("bind api socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	srv := &http.Server{Handler: v, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case <-v.done:
	case err := <-errc:
		v.Exit(1, err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	v.Close()
	return v.exitErr
}

// Done is closed when the VMM decides to exit.
func (v *VMM) Done() <-chan struct{} { return v.done }

// ExitCode is the process exit code once Done is closed.
func (v *VMM) ExitCode() int { return v.exitCode }

// Exit makes the VMM stop (as Firecracker does when the guest shuts down or
// a snapshot load fails).
func (v *VMM) Exit(code int, err error) {
	v.exitOnce.Do(func() {
		v.exitCode, v.exitErr = code, err
		if err != nil {
			v.log.Info("vmm exiting", "code", code, "err", err)
		}
		close(v.done)
	})
}

// Close stops the guest and the vsock device. Safe to call more than once.
func (v *VMM) Close() {
	v.Exit(0, nil)
	v.mu.Lock()
	g, dev, lf := v.guest, v.vsock, v.logFile
	v.guest, v.vsock, v.logFile = nil, nil, nil
	v.mu.Unlock()
	if dev != nil {
		dev.close()
	}
	if g != nil {
		g.kill()
	}
	if lf != nil {
		_ = lf.Close()
	}
}

var errAddrInUse = errors.New("Address in use (os error 98)")

// logf writes one line to the configured Firecracker log file, if any.
func (v *VMM) logf(format string, args ...any) {
	if v.logFile == nil {
		return
	}
	fmt.Fprintf(v.logFile, "%s [%s:main] %s\n", time.Now().UTC().Format(time.RFC3339Nano), v.cfg.ID, fmt.Sprintf(format, args...))
}

// guestPort is envd's loopback port, or 0 without a running guest.
func (v *VMM) guestPort() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.guest == nil {
		return 0
	}
	return v.guest.port
}

// runState is the current instance state.
func (v *VMM) runState() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.state
}
