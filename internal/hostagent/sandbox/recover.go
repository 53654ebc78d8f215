package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// RecoverReport says what Recover found.
type RecoverReport struct {
	Reattached  []string // running or paused sandboxes taken over
	Hibernated  []string // hibernated sandboxes (no VM) kept
	Released    []string // half-made, half-destroyed or dead sandboxes released
	Failed      []string // kept in state error (a release failed, or envd does not answer)
	Unreadable  []string // directories with a record this agent cannot read (left alone)
	LeftoverDir []string // record-less directories removed
}

// recoverHealthTimeout bounds waiting for envd in a reattached VM.
const recoverHealthTimeout = 15 * time.Second

// Recover loads every record and, for each sandbox, reattaches to its VM
// (exec works again), finishes an interrupted hibernation, or releases
// everything a half-made, half-destroyed or dead sandbox owns. Call it
// once, before serving requests.
func (m *Manager) Recover(ctx context.Context) (RecoverReport, error) {
	var rep RecoverReport
	entries, err := m.cfg.State.LoadAll()
	if err != nil {
		return rep, err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, e := range entries {
		switch {
		case e.Err != nil:
			m.log.Error("sandbox record unreadable; leaving its directory alone", "sandbox_id", e.SandboxID, "err", e.Err)
			rep.Unreadable = append(rep.Unreadable, e.SandboxID)
			continue
		case e.Record == nil:
			// The record was removed last by a destroy that did not get
			// to remove the directory.
			killOrphans(e.Dir + "/" + agentstate.RunDir)
			if err := os.RemoveAll(e.Dir); err != nil {
				m.log.Error("remove leftover sandbox dir", "dir", e.Dir, "err", err)
			}
			rep.LeftoverDir = append(rep.LeftoverDir, e.SandboxID)
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(rec *agentstate.Record) {
			defer wg.Done()
			defer func() { <-sem }()
			outcome := m.recoverOne(ctx, rec)
			mu.Lock()
			defer mu.Unlock()
			switch outcome {
			case "reattached":
				rep.Reattached = append(rep.Reattached, rec.SandboxID)
			case "hibernated":
				rep.Hibernated = append(rep.Hibernated, rec.SandboxID)
			case "released":
				rep.Released = append(rep.Released, rec.SandboxID)
			default:
				rep.Failed = append(rep.Failed, rec.SandboxID)
			}
		}(e.Record)
	}
	wg.Wait()
	m.log.Info("recovered sandboxes", "reattached", len(rep.Reattached), "hibernated", len(rep.Hibernated),
		"released", len(rep.Released), "failed", len(rep.Failed), "leftover_dirs", len(rep.LeftoverDir))
	return rep, nil
}

// recoverOne handles one record and says what became of it.
func (m *Manager) recoverOne(ctx context.Context, rec *agentstate.Record) string {
	log := m.log.With("sandbox_id", rec.SandboxID, "status", rec.Status, "step", rec.Step)
	sb, fresh := m.claim(rec.SandboxID)
	if !fresh {
		return "failed" // two records for one ID cannot happen: LoadAll lists directories
	}
	defer sb.op.Unlock()
	r := rec.Clone()
	switch {
	case r.Status == models.StatusHibernated:
		return m.recoverHibernated(ctx, sb, r, log)
	case r.Status == models.StatusRunning || r.Status == models.StatusPaused:
		return m.recoverLive(ctx, sb, r, log)
	case r.Status == models.StatusError:
		// Keep it for the control plane to see and destroy; destroy
		// releases whatever it still holds.
		_ = m.reserve(sb, r.Resources(), true)
		_ = m.save(sb, r)
		return "failed"
	default: // starting (interrupted create) or stopped (interrupted destroy)
		log.Warn("releasing an interrupted sandbox")
		return m.releaseRecord(ctx, sb, r, nil, log)
	}
}

// releaseRecord releases everything r owns and drops it; on failure it
// keeps r in state error.
func (m *Manager) releaseRecord(ctx context.Context, sb *sandbox, r *agentstate.Record, inst vm.Instance, log *slog.Logger) string {
	if err := m.releaseAll(ctx, r, inst, true); err != nil {
		log.Error("release failed; keeping the sandbox in state error", "err", err)
		r.Status, r.Error = models.StatusError, "release after restart: "+err.Error()
		_ = m.reserve(sb, r.Resources(), true)
		_ = m.save(sb, r)
		return "failed"
	}
	if err := m.cfg.State.Remove(r.SandboxID); err != nil {
		log.Error("remove record", "err", err)
	}
	m.forget(sb)
	return "released"
}

// recoverLive reattaches to a running or paused sandbox's VM.
func (m *Manager) recoverLive(ctx context.Context, sb *sandbox, r *agentstate.Record, log *slog.Logger) string {
	if r.VM == nil {
		log.Warn("live sandbox without a VM handle; releasing it")
		return m.releaseRecord(ctx, sb, r, nil, log)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	inst, err := m.cfg.Driver.Reattach(rctx, *r.VM)
	cancel()
	if err != nil {
		log.Warn("vmm is gone; releasing the sandbox", "err", err)
		return m.releaseRecord(ctx, sb, r, nil, log)
	}
	if r.Hibernation != "" {
		// The agent died while hibernating: the snapshot is stored, so
		// finish the hibernation.
		_ = m.reserve(sb, r.Resources(), true)
		if err := m.finishHibernate(ctx, sb, r, inst); err != nil {
			log.Error("finish interrupted hibernation", "err", err)
			return "failed"
		}
		return "hibernated"
	}
	st, err := inst.State(ctx)
	if err != nil || st == vm.StateStopped {
		log.Warn("vm is not running; releasing the sandbox", "vm_state", st, "err", err)
		return m.releaseRecord(ctx, sb, r, inst, log)
	}
	// Make the VM match the record (a pause, resume or snapshot may have
	// been cut short).
	if r.Status == models.StatusRunning && st == vm.StatePaused {
		if err := inst.Resume(ctx); err != nil {
			log.Warn("resume reattached vm", "err", err)
		}
	}
	if r.Status == models.StatusPaused && st == vm.StateRunning {
		if err := inst.Pause(ctx); err != nil {
			log.Warn("pause reattached vm", "err", err)
		}
	}
	if err := m.cfg.Cgroups.AddProcess(ctx, r.Cgroup, inst.Handle().PID); err != nil {
		log.Warn("put reattached vmm back into its cgroup", "err", err)
	}
	_ = m.reserve(sb, r.Resources(), true)
	c := envdclient.New(inst, envdclient.Options{AccessToken: r.AccessToken, Log: m.log.With("sandbox_id", r.SandboxID)})
	if r.Status == models.StatusRunning {
		hctx, cancel := context.WithTimeout(ctx, recoverHealthTimeout)
		_, _, err := c.WaitHealthy(hctx, envdclient.Backoff{})
		cancel()
		if err != nil {
			log.Error("envd does not answer in the reattached vm", "err", err)
			r.Status, r.Error = models.StatusError, fmt.Sprintf("envd does not answer after the agent restarted: %v", err)
			_ = m.save(sb, r)
			m.attach(sb, inst, nil)
			c.Close()
			return "failed"
		}
	}
	if err := m.save(sb, r); err != nil {
		log.Error("save state", "err", err)
	}
	m.attach(sb, inst, c)
	log.Info("reattached to sandbox")
	return "reattached"
}

// recoverHibernated keeps a hibernated sandbox, releasing whatever an
// interrupted wake had acquired.
func (m *Manager) recoverHibernated(ctx context.Context, sb *sandbox, r *agentstate.Record, log *slog.Logger) string {
	if r.VM != nil || r.Network != nil || r.Cgroup != nil {
		log.Warn("releasing what an interrupted wake acquired")
		if err := m.releaseAll(ctx, r, nil, false); err != nil {
			log.Error("release interrupted wake", "err", err)
		}
		r.VM, r.Network, r.Cgroup, r.NetNS, r.HostIP = nil, nil, nil, "", ""
	}
	if _, err := m.cfg.Snapshots.Get(ctx, r.Hibernation); err != nil {
		log.Error("hibernation snapshot missing", "snapshot_id", r.Hibernation, "err", err)
		r.Status, r.Error = models.StatusError, "hibernation snapshot missing: "+err.Error()
	}
	_ = m.reserve(sb, models.Resources{DiskMB: r.Resources().DiskMB}, true)
	if err := m.save(sb, r); err != nil {
		log.Error("save state", "err", err)
	}
	if r.Status == models.StatusError {
		return "failed"
	}
	return "hibernated"
}
