package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
)

// instance is one Firecracker VM.
type instance struct {
	d     *Driver
	spec  vm.Spec
	paths *vmPaths
	proc  *proc
	api   *fcapi.Client

	mu        sync.Mutex // serialises state changes (pause, snapshot, destroy)
	destroyed bool
}

var _ vm.Instance = (*instance)(nil)

func newInstance(d *Driver, spec vm.Spec, p *vmPaths, pr *proc) *instance {
	return &instance{d: d, spec: spec, paths: p, proc: pr, api: fcapi.New(p.apiSock)}
}

func (in *instance) ID() string { return in.spec.ID }

func (in *instance) Handle() vm.Handle {
	return vm.Handle{
		Driver: DriverName, ID: in.spec.ID, PID: in.proc.pid, Spec: in.spec,
		Sockets: map[string]string{"api": in.paths.apiSock, "vsock": in.paths.vsockHost},
	}
}

func (in *instance) Exited() <-chan struct{} { return in.proc.exited }

// waitAPI waits until the API socket answers GET /, the process dies, or
// ctx ends.
func (in *instance) waitAPI(ctx context.Context) error {
	for {
		if in.proc.done() {
			return errors.New("firecracker exited before serving its api")
		}
		if _, err := os.Stat(in.paths.apiSock); err == nil {
			cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			_, err := in.api.GetInstanceInfo(cctx)
			cancel()
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-in.proc.exited:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// fail tears the half-made VM down and returns a clear error: what failed,
// the cause, whether the boot deadline passed, and the tail of the VMM's
// console and log.
func (in *instance) fail(ctx context.Context, what string, cause error) error {
	timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded)
	tail := in.outputTail()
	if derr := in.Destroy(context.WithoutCancel(ctx)); derr != nil {
		in.d.log.Warn("cleanup after failed start", "sandbox_id", in.spec.ID, "err", derr)
	}
	err := fmt.Errorf("vm %s: %s: %w", in.spec.ID, what, cause)
	if timedOut {
		err = fmt.Errorf("vm %s: %s: %w after %s: %w", in.spec.ID, what, vm.ErrBootTimeout, in.d.bootTimeout(in.spec), cause)
	}
	if tail != "" {
		err = fmt.Errorf("%w\nvmm output:\n%s", err, tail)
	}
	return err
}

// outputTail is the end of the console capture and Firecracker's log.
func (in *instance) outputTail() string {
	var parts []string
	for _, f := range []string{in.paths.console, in.paths.logHost} {
		if t := tailFile(f, 2048); t != "" {
			parts = append(parts, t)
		}
	}
	return strings.Join(parts, "\n")
}

func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

// State asks the VMM; a VMM that has exited is StateStopped.
func (in *instance) State(ctx context.Context) (vm.State, error) {
	if in.proc.done() {
		return vm.StateStopped, nil
	}
	info, err := in.api.GetInstanceInfo(ctx)
	if err != nil {
		if in.proc.done() {
			return vm.StateStopped, nil
		}
		return "", fmt.Errorf("vm %s state: %w", in.spec.ID, err)
	}
	switch info.State {
	case fcapi.StateRunning:
		return vm.StateRunning, nil
	case fcapi.StatePaused:
		return vm.StatePaused, nil
	default:
		return vm.StateStopped, nil
	}
}

// setState moves the VM from one state to the other with PATCH /vm.
func (in *instance) setState(ctx context.Context, from, to vm.State, patch string) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.destroyed {
		return fmt.Errorf("vm %s is destroyed: %w", in.spec.ID, vm.ErrWrongState)
	}
	cur, err := in.State(ctx)
	if err != nil {
		return err
	}
	if cur != from {
		return fmt.Errorf("vm %s is %s, want %s: %w", in.spec.ID, cur, from, vm.ErrWrongState)
	}
	if err := in.api.PatchVM(ctx, patch); err != nil {
		return fmt.Errorf("vm %s to %s: %w", in.spec.ID, to, err)
	}
	return nil
}

// Pause stops the vCPUs (PATCH /vm Paused).
func (in *instance) Pause(ctx context.Context) error {
	return in.setState(ctx, vm.StateRunning, vm.StatePaused, fcapi.VMPaused)
}

// Resume restarts the vCPUs (PATCH /vm Resumed).
func (in *instance) Resume(ctx context.Context) error {
	return in.setState(ctx, vm.StatePaused, vm.StateRunning, fcapi.VMResumed)
}

// DialEnvd opens a stream to envd over hybrid vsock.
func (in *instance) DialEnvd(ctx context.Context) (net.Conn, error) {
	if in.proc.done() {
		return nil, fmt.Errorf("vm %s has exited: %w", in.spec.ID, vm.ErrWrongState)
	}
	return DialHybridVsock(ctx, in.paths.vsockHost, EnvdPort)
}

// Destroy stops the VMM and removes what the driver created: Ctrl-Alt-Del
// for a running VM (a guest that powers off makes Firecracker exit), then
// SIGKILL to the VMM's process group after the grace period; then the
// sockets, logs and jail. Idempotent.
func (in *instance) Destroy(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.destroyed {
		in.destroyed = true
		in.stop(ctx)
		in.api.Close()
	}
	if !in.proc.done() {
		return fmt.Errorf("vm %s: firecracker pid %d did not exit after SIGKILL", in.spec.ID, in.proc.pid)
	}
	if err := in.paths.cleanup(); err != nil {
		return fmt.Errorf("vm %s cleanup: %w", in.spec.ID, err)
	}
	return nil
}

func (in *instance) stop(ctx context.Context) {
	grace := in.d.cfg.StopGrace
	if grace > 0 && !in.proc.done() {
		cctx, cancel := context.WithTimeout(ctx, grace)
		info, err := in.api.GetInstanceInfo(cctx)
		if err == nil && info.State == fcapi.StateRunning && in.api.SendCtrlAltDel(cctx) == nil {
			select {
			case <-in.proc.exited:
			case <-cctx.Done():
			}
		}
		cancel()
	}
	for i := 0; i < 3 && !in.proc.done(); i++ {
		killGroup(in.proc.pid)
		select {
		case <-in.proc.exited:
		case <-time.After(2 * time.Second):
		}
	}
	// Whatever else ran in the VMM's process group (the jailer's child,
	// helpers) got the SIGKILL too; give the kernel a moment to finish
	// them so "destroyed" means no process is left.
	waitGroupGone(in.proc.pid, 2*time.Second)
}
