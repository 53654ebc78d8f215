package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// Destroy stops the sandbox's VM and releases everything it holds.
// Destroying a sandbox that does not exist succeeds. When a release fails
// the sandbox stays (with the error) and a repeat retries what is left.
func (m *Manager) Destroy(ctx context.Context, sid string) error {
	if err := id.ValidateSandboxID(sid); err != nil {
		return err
	}
	sb, err := m.lockExisting(sid)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer sb.op.Unlock()
	ctx = context.WithoutCancel(ctx)
	rec := sb.record().Clone()
	rec.Status, rec.Error = models.StatusStopped, ""
	if err := m.save(sb, rec); err != nil {
		return fmt.Errorf("destroy %s: %w", sid, err)
	}
	inst, _ := sb.detach()
	if err := m.releaseAll(ctx, rec, inst, true); err != nil {
		rec.Error = err.Error()
		_ = m.save(sb, rec)
		return fmt.Errorf("destroy %s: %w", sid, err)
	}
	if err := m.cfg.State.Remove(sid); err != nil {
		return fmt.Errorf("destroy %s: %w", sid, err)
	}
	m.forget(sb)
	m.log.Info("sandbox destroyed", "sandbox_id", sid)
	return nil
}

// releaseAll releases everything rec names: the VM (inst, or the one its
// handle names, or any process still using its run directory), cgroup,
// network, disk clone and run directory, and with withSnapshot its
// hibernation snapshot. Every step runs even when an earlier one fails;
// each is idempotent.
func (m *Manager) releaseAll(ctx context.Context, rec *agentstate.Record, inst vm.Instance, withSnapshot bool) error {
	var errs []error
	if err := m.stopVM(ctx, rec, inst); err != nil {
		errs = append(errs, err)
	}
	if err := m.cfg.Cgroups.Remove(ctx, rec.SandboxID, rec.Cgroup); err != nil {
		errs = append(errs, fmt.Errorf("cgroup: %w", err))
	}
	if err := m.cfg.Network.Teardown(ctx, rec.SandboxID, rec.Network); err != nil {
		errs = append(errs, fmt.Errorf("network: %w", err))
	}
	if rec.Rootfs != "" {
		if err := filesystem.Remove(rec.Rootfs); err != nil {
			errs = append(errs, fmt.Errorf("rootfs: %w", err))
		}
	}
	if rec.RunDir != "" {
		if err := os.RemoveAll(rec.RunDir); err != nil {
			errs = append(errs, fmt.Errorf("run dir: %w", err))
		}
	}
	if withSnapshot && rec.Hibernation != "" {
		if err := m.cfg.Snapshots.Delete(ctx, rec.Hibernation); err != nil {
			errs = append(errs, fmt.Errorf("hibernation snapshot: %w", err))
		}
	}
	return errors.Join(errs...)
}

// stopVM ends the sandbox's VMM however it is known.
func (m *Manager) stopVM(ctx context.Context, rec *agentstate.Record, inst vm.Instance) error {
	var err error
	if inst == nil && rec.VM != nil {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		inst, err = m.cfg.Driver.Reattach(rctx, *rec.VM)
		cancel()
		if err != nil {
			m.log.Debug("vmm not reattachable; assuming it is gone", "sandbox_id", rec.SandboxID, "err", err)
			inst, err = nil, nil
		}
	}
	if inst != nil {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = inst.Destroy(dctx)
		cancel()
		if err != nil {
			err = fmt.Errorf("vm: %w", err)
		}
	}
	if n := killOrphans(rec.RunDir); n > 0 {
		m.log.Warn("killed processes left in the sandbox's run dir", "sandbox_id", rec.SandboxID, "count", n)
	}
	return err
}

// Pause stops the sandbox's vCPUs. Pausing a paused sandbox succeeds.
func (m *Manager) Pause(ctx context.Context, sid string) (*agentstate.Record, error) {
	sb, err := m.lockExisting(sid)
	if err != nil {
		return nil, err
	}
	defer sb.op.Unlock()
	rec, inst, _ := sb.live()
	switch rec.Status {
	case models.StatusPaused:
		return rec.Clone(), nil
	case models.StatusRunning:
	default:
		return nil, errdefs.Errorf(errdefs.ErrConflict, "pause %s: sandbox is %s", sid, rec.Status)
	}
	if err := inst.Pause(ctx); err != nil {
		return nil, fmt.Errorf("pause %s: %w", sid, mapVMError(err))
	}
	r := rec.Clone()
	r.Status, r.PausedAt = models.StatusPaused, time.Now().UTC()
	if err := m.save(sb, r); err != nil {
		return nil, fmt.Errorf("pause %s: %w", sid, err)
	}
	return r.Clone(), nil
}

// Resume continues a paused sandbox or wakes a hibernated one. Resuming a
// running sandbox succeeds.
func (m *Manager) Resume(ctx context.Context, sid string) (*agentstate.Record, error) {
	sb, err := m.lockExisting(sid)
	if err != nil {
		return nil, err
	}
	defer sb.op.Unlock()
	rec, inst, _ := sb.live()
	switch rec.Status {
	case models.StatusRunning:
		return rec.Clone(), nil
	case models.StatusHibernated:
		return m.wake(ctx, sb)
	case models.StatusPaused:
	default:
		return nil, errdefs.Errorf(errdefs.ErrConflict, "resume %s: sandbox is %s", sid, rec.Status)
	}
	if err := inst.Resume(ctx); err != nil && !errors.Is(err, vm.ErrWrongState) {
		return nil, fmt.Errorf("resume %s: %w", sid, mapVMError(err))
	}
	r := rec.Clone()
	r.Status, r.PausedAt = models.StatusRunning, time.Time{}
	r.StartedAt = time.Now().UTC()
	if err := m.save(sb, r); err != nil {
		return nil, fmt.Errorf("resume %s: %w", sid, err)
	}
	return r.Clone(), nil
}
