package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// Instance is one QEMU microVM. Methods are safe for concurrent use.
type Instance struct {
	d       *Driver
	spec    vm.Spec
	m       machine
	tmpl    []string
	proc    *process
	envd    *envdclient.SerialDialer
	version QEMUVersion
	log     *slog.Logger

	attempts int // QEMU starts this instance needed (1 = no retry)

	opMu sync.Mutex // serialises state-changing operations

	qmpMu sync.Mutex
	qmp   *QMP

	destroyOnce sync.Once
	destroyErr  error
}

var _ vm.Instance = (*Instance)(nil)

// ID implements vm.Instance.
func (i *Instance) ID() string { return i.spec.ID }

// BootAttempts is how many QEMU starts this instance took (1 when the
// first one worked; 0 for a reattached instance).
func (i *Instance) BootAttempts() int { return i.attempts }

// QEMUVersion is the running QEMU's version.
func (i *Instance) QEMUVersion() QEMUVersion { return i.version }

// Accel is the accelerator the VM runs under.
func (i *Instance) Accel() string { return i.m.Accel }

// EnvdDialer is the instance's envd channel.
func (i *Instance) EnvdDialer() *envdclient.SerialDialer { return i.envd }

// Handle implements vm.Instance.
func (i *Instance) Handle() vm.Handle {
	return vm.Handle{
		Driver: DriverName,
		ID:     i.spec.ID,
		PID:    i.proc.pid,
		Spec:   i.spec,
		Sockets: map[string]string{
			"qmp":    runPath(i.spec.RunDir, qmpSocket),
			"envd":   runPath(i.spec.RunDir, envdSocket),
			"serial": runPath(i.spec.RunDir, serialLog),
			"log":    runPath(i.spec.RunDir, qemuLog),
		},
	}
}

// Exited implements vm.Instance.
func (i *Instance) Exited() <-chan struct{} { return i.proc.exited }

// monitor returns a live QMP connection, reconnecting if the old one ended
// while QEMU still runs.
func (i *Instance) monitor(ctx context.Context) (*QMP, error) {
	i.qmpMu.Lock()
	defer i.qmpMu.Unlock()
	if i.qmp != nil {
		select {
		case <-i.qmp.Done():
		default:
			return i.qmp, nil
		}
	}
	if !i.proc.alive() {
		return nil, fmt.Errorf("vm %s: qemu has exited: %w", i.spec.ID, vm.ErrWrongState)
	}
	q, err := DialQMP(ctx, runPath(i.spec.RunDir, qmpSocket))
	if err != nil {
		return nil, fmt.Errorf("vm %s: reconnect qmp: %w", i.spec.ID, err)
	}
	i.qmp = q
	return q, nil
}

func (i *Instance) status(ctx context.Context) (StatusInfo, error) {
	q, err := i.monitor(ctx)
	if err != nil {
		return StatusInfo{}, err
	}
	return q.QueryStatus(ctx)
}

// State implements vm.Instance.
func (i *Instance) State(ctx context.Context) (vm.State, error) {
	if !i.proc.alive() {
		return vm.StateStopped, nil
	}
	st, err := i.status(ctx)
	if err != nil {
		if !i.proc.alive() {
			return vm.StateStopped, nil
		}
		return "", err
	}
	return mapStatus(st.Status), nil
}

// mapStatus maps QEMU's RunState to vm.State.
func mapStatus(s string) vm.State {
	switch s {
	case "running":
		return vm.StateRunning
	case "shutdown", "guest-panicked", "internal-error", "io-error":
		return vm.StateStopped
	default: // paused, postmigrate, prelaunch, inmigrate, finish-migrate, suspended...
		return vm.StatePaused
	}
}

// Pause implements vm.Instance (QMP stop). ErrWrongState unless running.
func (i *Instance) Pause(ctx context.Context) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	st, err := i.status(ctx)
	if err != nil {
		return fmt.Errorf("pause %s: %w", i.spec.ID, err)
	}
	if st.Status != "running" {
		return fmt.Errorf("pause %s: vm is %s: %w", i.spec.ID, st.Status, vm.ErrWrongState)
	}
	if err := i.qmpExec(ctx, "stop", nil, nil); err != nil {
		return fmt.Errorf("pause %s: %w", i.spec.ID, err)
	}
	return nil
}

// Resume implements vm.Instance (QMP cont). It also resumes a VM left in
// postmigrate by Snapshot. ErrWrongState when already running.
func (i *Instance) Resume(ctx context.Context) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	st, err := i.status(ctx)
	if err != nil {
		return fmt.Errorf("resume %s: %w", i.spec.ID, err)
	}
	switch st.Status {
	case "paused", "postmigrate", "prelaunch", "suspended":
	default:
		return fmt.Errorf("resume %s: vm is %s: %w", i.spec.ID, st.Status, vm.ErrWrongState)
	}
	if err := i.qmpExec(ctx, "cont", nil, nil); err != nil {
		return fmt.Errorf("resume %s: %w", i.spec.ID, err)
	}
	return nil
}

func (i *Instance) qmpExec(ctx context.Context, cmd string, args, out any) error {
	q, err := i.monitor(ctx)
	if err != nil {
		return err
	}
	return q.Execute(ctx, cmd, args, out)
}

// DialEnvd implements vm.Instance: a new yamux stream on the envd channel,
// (re)establishing the session when needed. It fails at once when QEMU
// has exited.
func (i *Instance) DialEnvd(ctx context.Context) (net.Conn, error) {
	if !i.proc.alive() {
		return nil, fmt.Errorf("dial envd %s: qemu has exited: %w", i.spec.ID, vm.ErrWrongState)
	}
	ctx, stop := cancelOnExit(ctx, i.proc)
	defer stop()
	c, err := i.envd.DialEnvd(ctx)
	if err != nil {
		if errors.Is(context.Cause(ctx), errQEMUExited) {
			return nil, fmt.Errorf("dial envd %s: qemu exited: %w", i.spec.ID, err)
		}
		return nil, fmt.Errorf("dial envd %s: %w", i.spec.ID, err)
	}
	return c, nil
}

// Reset drops the envd channel's session; the next DialEnvd handshakes
// again (breaking any stale guest session at once). envdclient.Client's
// Reset calls it.
func (i *Instance) Reset() { i.envd.Reset() }

// Detach closes the agent's connections to the VM (QMP, envd channel)
// and leaves QEMU running, as an agent that shuts down for an upgrade
// does; a later Reattach with Handle takes the VM over again. The Instance
// must not be used afterwards.
func (i *Instance) Detach() {
	i.envd.Close()
	i.qmpMu.Lock()
	if i.qmp != nil {
		i.qmp.Close()
		i.qmp = nil
	}
	i.qmpMu.Unlock()
}

// Destroy implements vm.Instance: QMP quit, SIGKILL after the grace
// period, then the driver's files in RunDir are removed. Idempotent.
func (i *Instance) Destroy(ctx context.Context) error {
	i.destroyOnce.Do(func() { i.destroyErr = i.destroy(ctx) })
	if i.destroyErr != nil {
		return i.destroyErr
	}
	select {
	case <-i.proc.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("destroy %s: %w", i.spec.ID, ctx.Err())
	}
}

func (i *Instance) destroy(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	i.envd.Close()
	if i.proc.alive() {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		if q, err := i.monitor(qctx); err == nil {
			if err := q.Quit(qctx); err != nil {
				i.log.Debug("qmp quit failed", "err", err)
			}
		}
		cancel()
		t := time.NewTimer(i.d.cfg.StopGrace)
		select {
		case <-i.proc.exited:
		case <-t.C:
			i.log.Warn("qemu ignored quit; killing it", "grace", i.d.cfg.StopGrace)
		}
		t.Stop()
	}
	kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := i.proc.kill(kctx); err != nil {
		return fmt.Errorf("destroy %s: %w", i.spec.ID, err)
	}
	i.qmpMu.Lock()
	if i.qmp != nil {
		i.qmp.Close()
	}
	i.qmpMu.Unlock()
	removeRunFiles(i.spec.RunDir)
	return nil
}
