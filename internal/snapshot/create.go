package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// CreateSpec describes one sandbox to make from a template snapshot.
type CreateSpec struct {
	ID       string
	Template string
	Version  string // "" = the newest
	// RunDir is the VM's private directory (sockets, logs), created by the
	// caller; it must not be shared with another VM.
	RunDir string
	// Rootfs is where the sandbox's own rootfs clone goes; it is created
	// here and removed by Sandbox.Destroy or when the create fails.
	Rootfs string
	// Net attaches the sandbox to a TAP. The template must have been
	// built with a network card for that (not yet: templates boot
	// without one), so it is nil for now.
	Net *vm.NetSpec
	// Init is sent to envd's /init once the VM runs. A zero Timestamp is
	// replaced by the current time (the restored clock is the template's).
	Init envdclient.InitRequest
	// Placement is passed to the driver's Restore as vm.Spec.Placement: it
	// puts the VMM in its cgroup before the template memory is loaded.
	Placement func(pid int) error
}

// Timings says where a create spent its time.
type Timings struct {
	Ensure      time.Duration     // finding (or building) the template snapshot
	Clone       time.Duration     // the rootfs clone
	CloneMethod filesystem.Method // reflink or sparse-copy
	Restore     time.Duration     // driver.Restore: VMM start to guest running
	Init        time.Duration     // envd /init, including the channel handshake
	Total       time.Duration
}

// Sandbox is a VM restored from a template snapshot, with envd initialised.
type Sandbox struct {
	ID       string
	Instance vm.Instance
	// Envd is a client for the sandbox's envd, already sending the
	// access token from CreateSpec.Init.
	Envd     *envdclient.Client
	Rootfs   string
	Template *Template
	Timings  Timings

	destroyOnce sync.Once
	destroyErr  error
}

// Destroy stops the VM and removes the rootfs clone. Idempotent; the
// RunDir is the caller's.
func (s *Sandbox) Destroy(ctx context.Context) error {
	s.destroyOnce.Do(func() {
		s.Envd.Close()
		err := s.Instance.Destroy(ctx)
		s.destroyErr = errors.Join(err, filesystem.Remove(s.Rootfs))
	})
	return s.destroyErr
}

// undoStack runs cleanup steps in reverse, once, when a create fails.
type undoStack []func(context.Context)

func (u undoStack) run(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for i := len(u) - 1; i >= 0; i-- {
		u[i](ctx)
	}
}

// CreateFromTemplate makes a sandbox: it ensures the template's snapshot,
// clones the snapshot's rootfs to spec.Rootfs, restores the snapshot into
// spec.RunDir and posts /init (token, env vars, hostname, clock). On any
// error nothing is left: no VM process, no socket, no clone.
func (m *TemplateManager) CreateFromTemplate(ctx context.Context, spec CreateSpec) (sb *Sandbox, err error) {
	start := time.Now()
	if spec.ID == "" || spec.RunDir == "" || spec.Rootfs == "" {
		return nil, fmt.Errorf("create sandbox: %w: id, run dir and rootfs are required", vm.ErrInvalidSpec)
	}
	if _, err := os.Stat(spec.Rootfs); err == nil {
		return nil, fmt.Errorf("create sandbox %s: %w: rootfs %s already exists", spec.ID, vm.ErrInvalidSpec, spec.Rootfs)
	}
	log := m.log.With("sandbox_id", spec.ID, "template", spec.Template)
	var tm Timings
	t, err := m.Ensure(ctx, spec.Template, spec.Version)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	tm.Ensure = time.Since(start)

	var undo undoStack
	defer func() {
		if err != nil {
			undo.run(ctx)
		}
	}()
	step := time.Now()
	undo = append(undo, func(context.Context) { _ = filesystem.Remove(spec.Rootfs) })
	if tm.CloneMethod, err = filesystem.Clone(ctx, t.Rootfs(), spec.Rootfs); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	tm.Clone = time.Since(step)

	step = time.Now()
	inst, err := m.cfg.Driver.Restore(ctx, vm.Spec{
		ID: spec.ID, Rootfs: spec.Rootfs, RunDir: spec.RunDir, Net: spec.Net,
		BootTimeout: m.cfg.BootTimeout, Placement: spec.Placement,
	}, t.Dir)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	undo = append(undo, func(ctx context.Context) {
		if err := inst.Destroy(ctx); err != nil {
			log.Error("destroy vm of failed create", "err", err)
		}
	})
	tm.Restore = time.Since(step)

	step = time.Now()
	c := envdclient.New(inst, envdclient.Options{Log: log})
	if err = m.initEnvd(ctx, c, inst, spec.Init); err != nil {
		c.Close()
		return nil, fmt.Errorf("create sandbox %s: %w", spec.ID, err)
	}
	tm.Init = time.Since(step)
	tm.Total = time.Since(start)
	log.Debug("sandbox created from template", "ensure", tm.Ensure, "clone", tm.Clone,
		"clone_method", tm.CloneMethod, "restore", tm.Restore, "init", tm.Init, "total", tm.Total)
	return &Sandbox{ID: spec.ID, Instance: inst, Envd: c, Rootfs: spec.Rootfs, Template: t, Timings: tm}, nil
}

// initEnvd posts /init, retrying transport failures (the channel may need
// a few handshakes after the restore) until ReadyTimeout. envd refusing
// the request (an HTTP error) is not retried.
func (m *TemplateManager) initEnvd(ctx context.Context, c *envdclient.Client, inst vm.Instance, in envdclient.InitRequest) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ReadyTimeout)
	defer cancel()
	stampNow := in.Timestamp.IsZero()
	wait := 10 * time.Millisecond
	for tries := 1; ; tries++ {
		if stampNow {
			in.Timestamp = time.Now()
		}
		err := c.Init(ctx, in)
		if err == nil {
			return nil
		}
		var herr *envdclient.HTTPError
		if errors.As(err, &herr) {
			return fmt.Errorf("envd init: %w", err)
		}
		c.Reset()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-inst.Exited():
			t.Stop()
			return fmt.Errorf("envd init: vm exited (last: %w)", err)
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("envd init: no answer within %s after %d tries (last: %w)", m.cfg.ReadyTimeout, tries, err)
		}
		wait = min(wait*2, 500*time.Millisecond)
	}
}
