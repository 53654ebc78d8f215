package sandbox

import (
	"context"
	"fmt"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/snapstore"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
)

// ForkOptions are the parts of a sandbox forked from a snapshot that do
// not come from the snapshot.
type ForkOptions struct {
	Metadata   map[string]string
	Network    agentstate.NetworkPolicy
	TimeoutSec int
}

// Restore brings a sandbox back from a snapshot:
//   - snapID empty: wake the hibernated sandbox sid (a running one is
//     returned as it is);
//   - sid exists: roll it back to snapID (same network and ID, new VM);
//   - sid does not exist: fork a new sandbox sid from snapID.
//
// It also returns whether a new sandbox was made.
func (m *Manager) Restore(ctx context.Context, sid, snapID string, fork ForkOptions) (*agentstate.Record, bool, error) {
	if err := id.ValidateSandboxID(sid); err != nil {
		return nil, false, err
	}
	if err := m.needSnapshots("restore"); err != nil {
		return nil, false, err
	}
	if snapID == "" {
		sb, err := m.lockExisting(sid)
		if err != nil {
			return nil, false, err
		}
		defer sb.op.Unlock()
		rec := sb.record()
		switch rec.Status {
		case models.StatusRunning:
			return rec.Clone(), false, nil
		case models.StatusHibernated:
			r, err := m.wake(ctx, sb)
			return r, false, err
		}
		return nil, false, errdefs.Errorf(errdefs.ErrConflict, "restore %s: sandbox is %s and has no hibernation snapshot", sid, rec.Status)
	}
	if err := id.ValidateSnapshotID(snapID); err != nil {
		return nil, false, err
	}
	meta, err := m.cfg.Snapshots.Get(ctx, snapID)
	if err != nil {
		return nil, false, fmt.Errorf("restore %s: %w", sid, err)
	}
	if meta.Driver != m.cfg.Driver.Name() {
		return nil, false, errdefs.Errorf(errdefs.ErrInvalidArgument, "snapshot %s was taken by the %s driver; this host runs %s", snapID, meta.Driver, m.cfg.Driver.Name())
	}
	for {
		sb, fresh := m.claim(sid)
		if fresh {
			defer sb.op.Unlock()
			r, err := m.fork(ctx, sb, meta, fork)
			return r, err == nil, err
		}
		sb.op.Lock()
		if sb.gone || sb.record() == nil {
			sb.op.Unlock()
			continue
		}
		defer sb.op.Unlock()
		rec := sb.record()
		switch {
		case rec.Status == models.StatusHibernated && rec.Hibernation == snapID:
			r, err := m.wake(ctx, sb)
			return r, false, err
		case rec.Request.FromSnapshot == snapID && rec.Step != agentstate.StepReady:
			return nil, false, errdefs.Errorf(errdefs.ErrConflict, "restore %s: a fork from %s did not finish", sid, snapID)
		case rec.Status == models.StatusRunning || rec.Status == models.StatusPaused:
			r, err := m.rollback(ctx, sb, meta)
			return r, false, err
		}
		return nil, false, errdefs.Errorf(errdefs.ErrConflict, "restore %s: sandbox is %s", sid, rec.Status)
	}
}

// rollback replaces a sandbox's VM with one restored from meta, keeping
// its ID, network, cgroup and token. The caller holds sb.op.
func (m *Manager) rollback(ctx context.Context, sb *sandbox, meta snapstore.Meta) (*agentstate.Record, error) {
	rec, inst, _ := sb.live()
	if meta.VCPUs != rec.Request.VCPUs || meta.MemoryMB != rec.Request.MemoryMB {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "roll back %s: snapshot %s has %d vcpu and %d MiB, the sandbox %d and %d",
			sb.id, meta.SnapshotID, meta.VCPUs, meta.MemoryMB, rec.Request.VCPUs, rec.Request.MemoryMB)
	}
	dir, meta, release, err := m.cfg.Snapshots.Open(ctx, meta.SnapshotID)
	if err != nil {
		return nil, fmt.Errorf("roll back %s: %w", sb.id, err)
	}
	defer release()
	if rec.VM == nil || rec.VM.Spec.Net == nil {
		return nil, errdefs.Errorf(errdefs.ErrConflict, "roll back %s: the sandbox has no network to reattach", sb.id)
	}
	net := *rec.VM.Spec.Net
	r := rec.Clone()
	ctx = context.WithoutCancel(ctx) // past this point the old VM is gone: finish or fail whole
	sb.detach()
	if err := m.stopVM(ctx, r, inst); err != nil {
		return nil, m.failRollback(sb, r, err)
	}
	if err := filesystem.Remove(r.Rootfs); err != nil {
		return nil, m.failRollback(sb, r, err)
	}
	r.VM, r.Step = nil, agentstate.StepCgroup
	if err := m.save(sb, r); err != nil {
		return nil, m.failRollback(sb, r, err)
	}
	var undo undoStack
	newInst, c, err := m.restoreVM(ctx, sb, r, dir, &net, meta.AccessToken, nil, &undo)
	if err != nil {
		_ = undo.run(ctx, m.log)
		return nil, m.failRollback(sb, r, err)
	}
	r.Status, r.Step, r.BootMode, r.Error = models.StatusRunning, agentstate.StepReady, BootSnapshot, ""
	r.PausedAt, r.StartedAt = time.Time{}, time.Now().UTC()
	if err := m.save(sb, r); err != nil {
		c.Close()
		_ = undo.run(ctx, m.log)
		return nil, m.failRollback(sb, r, err)
	}
	m.attach(sb, newInst, c)
	m.log.Info("sandbox rolled back", "sandbox_id", sb.id, "snapshot_id", meta.SnapshotID)
	return r.Clone(), nil
}

// failRollback marks a sandbox whose rollback failed after its old VM was
// stopped: only destroy remains.
func (m *Manager) failRollback(sb *sandbox, r *agentstate.Record, cause error) error {
	r.Status, r.VM = models.StatusError, nil
	r.Error = "roll back: " + cause.Error()
	_ = m.save(sb, r)
	return fmt.Errorf("roll back %s: %w", sb.id, cause)
}

// fork makes a new sandbox from a snapshot. The caller holds sb.op of a
// fresh entry.
func (m *Manager) fork(ctx context.Context, sb *sandbox, meta snapstore.Meta, opt ForkOptions) (_ *agentstate.Record, err error) {
	req := agentstate.Request{
		Template: meta.Template, VCPUs: meta.VCPUs, MemoryMB: meta.MemoryMB, DiskMB: meta.DiskMB,
		Metadata: opt.Metadata, TimeoutSec: opt.TimeoutSec, Network: opt.Network, FromSnapshot: meta.SnapshotID,
	}
	if err := m.normalize(&req); err != nil {
		m.forget(sb)
		return nil, err
	}
	diskMB := max(req.DiskMB, int((meta.DiskBytes+1<<20-1)>>20))
	res := models.Resources{VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, DiskMB: diskMB}
	rec := &agentstate.Record{
		SandboxID: sb.id, Status: models.StatusStarting, Step: agentstate.StepRecorded,
		Request: req, Driver: m.cfg.Driver.Name(), Template: meta.Template,
		AccessToken: id.NewToken(16), CreatedAt: time.Now().UTC(), BootMode: BootSnapshot, Reserved: res,
	}
	m.cfg.State.Paths(rec)
	var undo undoStack
	defer func() {
		if err != nil {
			m.failCreate(ctx, sb, rec, &undo, err)
		}
	}()
	if err := m.reserve(sb, res, false); err != nil {
		return nil, fmt.Errorf("fork %s: %w", sb.id, err)
	}
	if err := m.save(sb, rec); err != nil {
		return nil, fmt.Errorf("fork %s: %w", sb.id, err)
	}
	dir, meta, release, err := m.cfg.Snapshots.Open(ctx, meta.SnapshotID)
	if err != nil {
		return nil, fmt.Errorf("fork %s: %w", sb.id, err)
	}
	defer release()
	inst, c, err := m.restoreInto(ctx, sb, rec, dir, meta.AccessToken, nil, &undo)
	if err != nil {
		return nil, fmt.Errorf("fork %s from %s: %w", sb.id, meta.SnapshotID, err)
	}
	rec.Status, rec.Step, rec.StartedAt = models.StatusRunning, agentstate.StepReady, time.Now().UTC()
	if err := m.save(sb, rec); err != nil {
		c.Close()
		return nil, fmt.Errorf("fork %s: %w", sb.id, err)
	}
	m.attach(sb, inst, c)
	m.log.Info("sandbox forked from snapshot", "sandbox_id", sb.id, "snapshot_id", meta.SnapshotID)
	return rec.Clone(), nil
}

// ListSnapshots returns the stored snapshots, of one sandbox or all.
func (m *Manager) ListSnapshots(ctx context.Context, sid string) ([]snapstore.Meta, error) {
	all, err := m.cfg.Snapshots.List(ctx)
	if err != nil {
		return nil, err
	}
	if sid == "" {
		return all, nil
	}
	var out []snapstore.Meta
	for _, s := range all {
		if s.SandboxID == sid {
			out = append(out, s)
		}
	}
	return out, nil
}

// DeleteSnapshot removes a snapshot. A hibernated sandbox's own snapshot
// cannot be deleted (destroy the sandbox instead).
func (m *Manager) DeleteSnapshot(ctx context.Context, snapID string) error {
	if err := id.ValidateSnapshotID(snapID); err != nil {
		return err
	}
	for _, r := range m.List() {
		if r.Hibernation == snapID {
			return errdefs.Errorf(errdefs.ErrConflict, "snapshot %s holds hibernated sandbox %s", snapID, r.SandboxID)
		}
	}
	return m.cfg.Snapshots.Delete(ctx, snapID)
}
