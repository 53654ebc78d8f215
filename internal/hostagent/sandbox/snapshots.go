package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/snapstore"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// snapshotRootfs is the disk copy both VM drivers write into a snapshot
// directory.
const snapshotRootfs = "rootfs.ext4"

func (m *Manager) needSnapshots(op string) error {
	if !m.cfg.Driver.Capabilities().Snapshot {
		return errdefs.Errorf(errdefs.ErrNotImplemented, "%s: the %s driver cannot snapshot", op, m.cfg.Driver.Name())
	}
	return nil
}

// Snapshot saves a running or paused sandbox's memory and disk under
// snapID (a new ID when empty); the sandbox keeps its state. Repeating a
// snapshot ID returns the snapshot already taken.
func (m *Manager) Snapshot(ctx context.Context, sid, snapID string) (snapstore.Meta, error) {
	if err := m.needSnapshots("snapshot"); err != nil {
		return snapstore.Meta{}, err
	}
	if snapID == "" {
		snapID = id.NewSnapshotID()
	} else if err := id.ValidateSnapshotID(snapID); err != nil {
		return snapstore.Meta{}, err
	}
	sb, err := m.lockExisting(sid)
	if err != nil {
		return snapstore.Meta{}, err
	}
	defer sb.op.Unlock()
	if meta, err := m.cfg.Snapshots.Get(ctx, snapID); err == nil {
		if meta.SandboxID != sid || meta.Hibernation {
			return meta, errdefs.Errorf(errdefs.ErrAlreadyExists, "snapshot %s belongs to sandbox %s", snapID, meta.SandboxID)
		}
		return meta, nil
	}
	rec, inst, c := sb.live()
	if rec.Status != models.StatusRunning && rec.Status != models.StatusPaused {
		return snapstore.Meta{}, errdefs.Errorf(errdefs.ErrConflict, "snapshot %s: sandbox is %s", sid, rec.Status)
	}
	meta, err := m.takeSnapshot(ctx, rec, inst, snapID, false)
	// Snapshot leaves the VM paused; a running sandbox continues.
	if rec.Status == models.StatusRunning {
		if rerr := inst.Resume(context.WithoutCancel(ctx)); rerr != nil && !errors.Is(rerr, vm.ErrWrongState) {
			err = errors.Join(err, fmt.Errorf("resume after snapshot: %w", rerr))
		}
		if c != nil {
			c.Reset() // the envd channel was parked for the snapshot
		}
	}
	return meta, err
}

// takeSnapshot writes the VM into a staging directory and stores it.
func (m *Manager) takeSnapshot(ctx context.Context, rec *agentstate.Record, inst vm.Instance, snapID string, hibernation bool) (snapstore.Meta, error) {
	start := time.Now()
	dir, err := m.cfg.Snapshots.Staging(ctx, snapID)
	if err != nil {
		return snapstore.Meta{}, fmt.Errorf("snapshot %s: %w", rec.SandboxID, err)
	}
	info, err := inst.Snapshot(ctx, dir)
	if err != nil {
		_ = m.cfg.Snapshots.Discard(dir)
		return snapstore.Meta{}, fmt.Errorf("snapshot %s: %w", rec.SandboxID, mapVMError(err))
	}
	meta := snapstore.Meta{
		SnapshotID: snapID, SandboxID: rec.SandboxID, Template: rec.Template, Driver: rec.Driver,
		VCPUs: rec.Request.VCPUs, MemoryMB: rec.Request.MemoryMB, DiskMB: rec.Request.DiskMB,
		MemBytes: info.MemBytes, DiskBytes: info.DiskBytes, CreatedAt: time.Now().UTC(),
		Hibernation: hibernation, AccessToken: rec.AccessToken,
	}
	meta, err = m.cfg.Snapshots.Put(ctx, meta, dir)
	if err != nil {
		_ = m.cfg.Snapshots.Discard(dir)
		return meta, fmt.Errorf("snapshot %s: %w", rec.SandboxID, err)
	}
	m.log.Info("sandbox snapshotted", "sandbox_id", rec.SandboxID, "snapshot_id", snapID,
		"hibernation", hibernation, "mem_bytes", info.MemBytes, "took", time.Since(start))
	return meta, nil
}

// Hibernate snapshots the sandbox into the store and stops its VM,
// releasing its vCPUs, memory, network and disk clone. Hibernating a
// hibernated sandbox returns it.
func (m *Manager) Hibernate(ctx context.Context, sid string) (*agentstate.Record, snapstore.Meta, error) {
	if err := m.needSnapshots("hibernate"); err != nil {
		return nil, snapstore.Meta{}, err
	}
	sb, err := m.lockExisting(sid)
	if err != nil {
		return nil, snapstore.Meta{}, err
	}
	defer sb.op.Unlock()
	rec, inst, _ := sb.live()
	switch rec.Status {
	case models.StatusHibernated:
		meta, err := m.cfg.Snapshots.Get(ctx, rec.Hibernation)
		return rec.Clone(), meta, err
	case models.StatusRunning, models.StatusPaused:
	default:
		return nil, snapstore.Meta{}, errdefs.Errorf(errdefs.ErrConflict, "hibernate %s: sandbox is %s", sid, rec.Status)
	}
	meta, err := m.takeSnapshot(ctx, rec, inst, id.NewSnapshotID(), true)
	if err != nil {
		if rec.Status == models.StatusRunning {
			_ = inst.Resume(context.WithoutCancel(ctx))
		}
		return nil, meta, err
	}
	// From here a crash finishes the hibernation on the next start.
	r := rec.Clone()
	r.Hibernation = meta.SnapshotID
	if err := m.save(sb, r); err != nil {
		_ = m.cfg.Snapshots.Delete(context.WithoutCancel(ctx), meta.SnapshotID)
		return nil, meta, fmt.Errorf("hibernate %s: %w", sid, err)
	}
	live, _ := sb.detach()
	if err := m.finishHibernate(context.WithoutCancel(ctx), sb, r, live); err != nil {
		return nil, meta, err
	}
	return r.Clone(), meta, nil
}

// finishHibernate releases a hibernating sandbox's live resources and
// marks it hibernated. The caller holds sb.op; r.Hibernation is set.
func (m *Manager) finishHibernate(ctx context.Context, sb *sandbox, r *agentstate.Record, inst vm.Instance) error {
	if err := m.releaseAll(ctx, r, inst, false); err != nil {
		r.Status, r.Error = models.StatusError, "hibernate: "+err.Error()
		_ = m.save(sb, r)
		return fmt.Errorf("hibernate %s: %w", r.SandboxID, err)
	}
	r.Status, r.Step, r.Error = models.StatusHibernated, agentstate.StepReady, ""
	r.VM, r.Network, r.Cgroup, r.NetNS, r.HostIP = nil, nil, nil, "", ""
	if r.PausedAt.IsZero() {
		r.PausedAt = time.Now().UTC()
	}
	if err := m.save(sb, r); err != nil {
		return fmt.Errorf("hibernate %s: %w", r.SandboxID, err)
	}
	m.unreserve(sb, models.Resources{VCPUs: r.Request.VCPUs, MemoryMB: r.Request.MemoryMB})
	m.log.Info("sandbox hibernated", "sandbox_id", r.SandboxID, "snapshot_id", r.Hibernation)
	return nil
}

// wake restores a hibernated sandbox from its snapshot. The caller holds
// sb.op. On failure the sandbox stays hibernated with nothing else held.
func (m *Manager) wake(ctx context.Context, sb *sandbox) (_ *agentstate.Record, err error) {
	r := sb.record().Clone()
	var undo undoStack
	defer func() {
		if err != nil {
			if uerr := undo.run(ctx, m.log); uerr != nil {
				err = errors.Join(err, uerr)
			}
			r.VM, r.Network, r.Cgroup, r.NetNS, r.HostIP = nil, nil, nil, "", ""
			_ = m.save(sb, r)
		}
	}()
	res := models.Resources{VCPUs: r.Request.VCPUs, MemoryMB: r.Request.MemoryMB}
	if err := m.reserve(sb, res, false); err != nil {
		return nil, fmt.Errorf("wake %s: %w", sb.id, err)
	}
	undo.push("capacity", func(context.Context) error { m.unreserve(sb, res); return nil })
	dir, meta, release, err := m.cfg.Snapshots.Open(ctx, r.Hibernation)
	if err != nil {
		return nil, fmt.Errorf("wake %s: %w", sb.id, err)
	}
	defer release()
	inst, c, err := m.restoreInto(ctx, sb, r, dir, meta.AccessToken, nil, &undo)
	if err != nil {
		return nil, fmt.Errorf("wake %s: %w", sb.id, err)
	}
	old := r.Hibernation
	r.Hibernation, r.Status, r.Step, r.BootMode = "", models.StatusRunning, agentstate.StepReady, BootSnapshot
	r.PausedAt, r.StartedAt = time.Time{}, time.Now().UTC()
	if err := m.save(sb, r); err != nil {
		c.Close()
		return nil, fmt.Errorf("wake %s: %w", sb.id, err)
	}
	m.attach(sb, inst, c)
	if err := m.cfg.Snapshots.Delete(context.WithoutCancel(ctx), old); err != nil {
		m.log.Warn("delete used hibernation snapshot", "sandbox_id", sb.id, "snapshot_id", old, "err", err)
	}
	m.log.Info("sandbox woke from hibernation", "sandbox_id", sb.id)
	return r.Clone(), nil
}

// restoreInto gives r a network and cgroup, clones the snapshot's disk,
// restores the VM and initialises envd (rotating the token the snapshot
// holds to r's and setting the clock). Every acquisition pushes its undo.
func (m *Manager) restoreInto(ctx context.Context, sb *sandbox, r *agentstate.Record, snapDir, snapToken string,
	envs map[string]string, undo *undoStack) (vm.Instance, *envdclient.Client, error) {
	ni, err := m.setupNetwork(ctx, sb, r, undo)
	if err != nil {
		return nil, nil, err
	}
	if err := m.setupCgroup(ctx, sb, r, undo); err != nil {
		return nil, nil, err
	}
	inst, c, err := m.restoreVM(ctx, sb, r, snapDir, &vm.NetSpec{TapName: ni.Tap, NetNS: ni.NetNS}, snapToken, envs, undo)
	return inst, c, err
}

// restoreVM clones the snapshot's disk to r.Rootfs, restores the VM into
// r.RunDir attached to net and initialises envd.
func (m *Manager) restoreVM(ctx context.Context, sb *sandbox, r *agentstate.Record, snapDir string, net *vm.NetSpec,
	snapToken string, envs map[string]string, undo *undoStack) (vm.Instance, *envdclient.Client, error) {
	if err := os.MkdirAll(r.RunDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("run dir: %w", err)
	}
	undo.push("rootfs", func(context.Context) error { return filesystem.Remove(r.Rootfs) })
	if _, err := filesystem.Clone(ctx, filepath.Join(snapDir, snapshotRootfs), r.Rootfs); err != nil {
		return nil, nil, fmt.Errorf("clone snapshot disk: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, m.cfg.BootTimeout)
	defer cancel()
	inst, err := m.cfg.Driver.Restore(rctx, vm.Spec{
		ID: sb.id, Rootfs: r.Rootfs, RunDir: r.RunDir, Net: net, BootTimeout: m.cfg.BootTimeout,
		Placement: m.placement(ctx, r),
	}, snapDir)
	if err != nil {
		return nil, nil, fmt.Errorf("restore vm: %w", mapVMError(err))
	}
	undo.push("vm", func(ctx context.Context) error { return inst.Destroy(ctx) })
	if err := m.recordVM(ctx, sb, r, inst); err != nil {
		return nil, nil, err
	}
	c := envdclient.New(inst, envdclient.Options{AccessToken: snapToken, Log: m.log.With("sandbox_id", sb.id)})
	in := envdclient.InitRequest{AccessToken: r.AccessToken, Hostname: sb.id, EnvVars: envs}
	if err := initWithRetry(rctx, c, inst, in); err != nil {
		c.Close()
		return nil, nil, err
	}
	if v, err := c.Health(rctx); err == nil {
		r.EnvdVersion = v
	}
	return inst, c, nil
}

// initWithRetry posts /init (with the current time) until it answers:
// right after a restore the envd channel may need a few handshakes. An
// HTTP error from envd is final.
func initWithRetry(ctx context.Context, c *envdclient.Client, inst vm.Instance, in envdclient.InitRequest) error {
	wait := 10 * time.Millisecond
	for tries := 1; ; tries++ {
		in.Timestamp = time.Now()
		err := c.Init(ctx, in)
		if err == nil {
			return nil
		}
		var herr *envdclient.HTTPError
		if errors.As(err, &herr) {
			return fmt.Errorf("envd init: %w", envdError(err))
		}
		c.Reset()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-inst.Exited():
			t.Stop()
			return fmt.Errorf("%w: envd init: vm exited (last: %w)", errdefs.ErrUnavailable, err)
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: envd init: no answer after %d tries (last: %w)", errdefs.ErrUnavailable, tries, err)
		}
		wait = min(wait*2, 500*time.Millisecond)
	}
}
