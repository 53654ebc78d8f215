package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// normalize fills defaults and checks a create request.
func (m *Manager) normalize(req *agentstate.Request) error {
	if req.Template == "" {
		req.Template = m.cfg.DefaultTemplate
	}
	if req.VCPUs == 0 {
		req.VCPUs = m.cfg.DefaultVCPUs
	}
	if req.MemoryMB == 0 {
		req.MemoryMB = m.cfg.DefaultMemoryMB
	}
	if err := (models.Resources{VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, DiskMB: req.DiskMB}).Validate(); err != nil {
		return err
	}
	if req.TimeoutSec < 0 {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "timeout_sec %d: negative", req.TimeoutSec)
	}
	for _, list := range [][]string{req.Network.AllowCIDRs, req.Network.DenyCIDRs} {
		for _, c := range list {
			p, err := netip.ParsePrefix(c)
			if err != nil || !p.Addr().Is4() {
				return errdefs.Errorf(errdefs.ErrInvalidArgument, "network policy: %q is not an IPv4 CIDR", c)
			}
		}
	}
	return nil
}

// Create makes a sandbox and returns its record once envd in the guest is
// initialised. Repeating a create for an existing sandbox returns it
// (ErrAlreadyExists when the repeat asks for a different shape); a repeat
// that arrives while the first is running waits for it.
func (m *Manager) Create(ctx context.Context, sid string, req agentstate.Request) (*agentstate.Record, error) {
	if err := id.ValidateSandboxID(sid); err != nil {
		return nil, err
	}
	if err := m.normalize(&req); err != nil {
		return nil, err
	}
	for {
		sb, fresh := m.claim(sid)
		if fresh {
			defer sb.op.Unlock()
			return m.create(ctx, sb, req)
		}
		sb.op.Lock()
		gone, rec := sb.gone, sb.record()
		sb.op.Unlock()
		if gone || rec == nil {
			continue // a failed create released it; make it anew
		}
		return m.repeated(rec, req)
	}
}

// repeated answers a create for a sandbox that exists.
func (m *Manager) repeated(rec *agentstate.Record, req agentstate.Request) (*agentstate.Record, error) {
	if !rec.Request.SameAs(req) {
		return nil, errdefs.Errorf(errdefs.ErrAlreadyExists,
			"sandbox %s exists as %s with %d vcpu and %d MiB", rec.SandboxID, rec.Request.Template, rec.Request.VCPUs, rec.Request.MemoryMB)
	}
	if rec.Status == models.StatusError || rec.Status == models.StatusStopped {
		return nil, errdefs.Errorf(errdefs.ErrConflict, "sandbox %s is %s (%s): destroy it first", rec.SandboxID, rec.Status, rec.Error)
	}
	return rec.Clone(), nil
}

// create runs a new sandbox's create. The caller holds sb.op.
func (m *Manager) create(ctx context.Context, sb *sandbox, req agentstate.Request) (_ *agentstate.Record, err error) {
	start := time.Now()
	log := m.log.With("sandbox_id", sb.id, "template", req.Template)
	img, err := m.cfg.Images.Resolve(req.Template)
	if err != nil {
		m.forget(sb)
		return nil, fmt.Errorf("create sandbox %s: %w", sb.id, err)
	}
	imgMB := int((img.SizeBytes + 1<<20 - 1) >> 20)
	if req.DiskMB != 0 && req.DiskMB < imgMB {
		m.forget(sb)
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "disk_mb %d is smaller than template %s (%d MiB)", req.DiskMB, req.Template, imgMB)
	}
	res := models.Resources{VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, DiskMB: max(req.DiskMB, imgMB)}

	var undo undoStack
	rec := &agentstate.Record{
		SandboxID: sb.id, Status: models.StatusStarting, Step: agentstate.StepRecorded,
		Request: req, Driver: m.cfg.Driver.Name(), Template: img.Template, TemplateVer: img.Version,
		AccessToken: id.NewToken(16), CreatedAt: time.Now().UTC(), Reserved: res,
	}
	m.cfg.State.Paths(rec)
	defer func() {
		if err != nil {
			m.failCreate(ctx, sb, rec, &undo, err)
		}
	}()
	if err := m.reserve(sb, res, false); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", sb.id, err)
	}
	// The record comes first: from here on a crash leaves something the
	// next start finds and releases.
	if err := m.save(sb, rec); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", sb.id, err)
	}
	if err := m.hook(ctx, agentstate.StepRecorded, sb.id); err != nil {
		return nil, err
	}

	ni, err := m.setupNetwork(ctx, sb, rec, &undo)
	if err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", sb.id, err)
	}
	if err := m.hook(ctx, agentstate.StepNetwork, sb.id); err != nil {
		return nil, err
	}
	if err := m.setupCgroup(ctx, sb, rec, &undo); err != nil {
		return nil, fmt.Errorf("create sandbox %s: %w", sb.id, err)
	}
	if err := m.hook(ctx, agentstate.StepCgroup, sb.id); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(rec.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("create sandbox %s: run dir: %w", sb.id, err)
	}
	netSpec := &vm.NetSpec{TapName: ni.Tap, NetNS: ni.NetNS}
	initReq := envdclient.InitRequest{
		AccessToken: rec.AccessToken, EnvVars: req.Envs, DefaultUser: req.DefaultUser,
		DefaultWorkdir: req.DefaultWorkdir, Hostname: sb.id,
	}

	var inst vm.Instance
	var c *envdclient.Client
	if t := m.cfg.Templates; t != nil && !req.ColdBoot && req.DiskMB <= imgMB && t.Usable(req.Template, req.VCPUs, req.MemoryMB) {
		rec.BootMode = BootTemplateSnapshot
		inst, c, err = t.Create(ctx, TemplateCreate{
			SandboxID: sb.id, Template: req.Template, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB,
			RunDir: rec.RunDir, Rootfs: rec.Rootfs, Net: netSpec, Init: initReq,
			Placement: m.placement(ctx, rec),
		})
		switch {
		case errors.Is(err, ErrTemplateUnusable):
			log.Info("template snapshot unusable; booting cold", "err", err)
			inst = nil
		case err != nil:
			return nil, fmt.Errorf("create sandbox %s from template snapshot: %w", sb.id, mapVMError(err))
		default:
			undo.push("rootfs", func(context.Context) error { return filesystem.Remove(rec.Rootfs) })
			undo.push("vm", func(ctx context.Context) error { return inst.Destroy(ctx) })
			if err := m.recordVM(ctx, sb, rec, inst); err != nil {
				return nil, err
			}
		}
	}
	if inst == nil {
		rec.BootMode = BootCold
		if inst, c, err = m.coldBoot(ctx, sb, rec, img, netSpec, ni.KernelArgs, initReq, &undo); err != nil {
			return nil, err
		}
	}
	if v, err := c.Health(ctx); err == nil {
		rec.EnvdVersion = v
	}
	rec.Status, rec.Step = models.StatusRunning, agentstate.StepReady
	rec.StartedAt = time.Now().UTC()
	if err := m.save(sb, rec); err != nil {
		c.Close()
		return nil, fmt.Errorf("create sandbox %s: %w", sb.id, err)
	}
	m.attach(sb, inst, c)
	log.Info("sandbox created", "boot", rec.BootMode, "vcpus", req.VCPUs, "memory_mb", req.MemoryMB, "took", time.Since(start))
	return rec.Clone(), nil
}

// failCreate undoes a create. When every release worked the record and
// the entry go; otherwise the sandbox stays, in state error, so a destroy
// (or the next start) retries what is left.
func (m *Manager) failCreate(ctx context.Context, sb *sandbox, rec *agentstate.Record, undo *undoStack, cause error) {
	m.log.Warn("create failed; releasing what it took", "sandbox_id", sb.id, "step", rec.Step, "err", cause)
	if inst, _ := sb.detach(); inst != nil {
		_ = inst.Destroy(context.WithoutCancel(ctx))
	}
	uerr := undo.run(ctx, m.log)
	if uerr == nil {
		killOrphans(rec.RunDir)
		if err := m.cfg.State.Remove(sb.id); err != nil {
			uerr = err
		}
	}
	if uerr != nil {
		rec.Status = models.StatusError
		rec.Error = fmt.Sprintf("create failed (%v) and releasing its resources failed (%v)", cause, uerr)
		if err := m.save(sb, rec); err != nil {
			m.log.Error("save state", "sandbox_id", sb.id, "err", err)
		}
		return
	}
	m.forget(sb)
}

// setupNetwork acquires the sandbox's network and records it.
func (m *Manager) setupNetwork(ctx context.Context, sb *sandbox, rec *agentstate.Record, undo *undoStack) (NetInfo, error) {
	// Teardown is safe before Setup returns: the network package records
	// its lease before it creates anything.
	undo.push("network", func(ctx context.Context) error { return m.cfg.Network.Teardown(ctx, sb.id, rec.Network) })
	ni, err := m.cfg.Network.Setup(ctx, sb.id, rec.Request.Network)
	if err != nil {
		return ni, fmt.Errorf("network: %w", err)
	}
	rec.Network, rec.NetNS, rec.GuestIP, rec.HostIP = ni.Handle, ni.NetNS, ni.GuestIP, ni.HostIP
	rec.Step = agentstate.StepNetwork
	return ni, m.save(sb, rec)
}

// setupCgroup creates the sandbox's cgroup and records it.
func (m *Manager) setupCgroup(ctx context.Context, sb *sandbox, rec *agentstate.Record, undo *undoStack) error {
	undo.push("cgroup", func(ctx context.Context) error { return m.cfg.Cgroups.Remove(ctx, sb.id, rec.Cgroup) })
	h, err := m.cfg.Cgroups.Create(ctx, sb.id, rec.Request.VCPUs, rec.Request.MemoryMB)
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	rec.Cgroup = h
	rec.Step = agentstate.StepCgroup
	return m.save(sb, rec)
}

// recordVM persists a new VM's handle. The VMM is in the sandbox's
// cgroup already: the driver called placement (see placement).
func (m *Manager) recordVM(ctx context.Context, sb *sandbox, rec *agentstate.Record, inst vm.Instance) error {
	h := inst.Handle()
	rec.VM = &h
	rec.Step = agentstate.StepVM
	if err := m.save(sb, rec); err != nil {
		return fmt.Errorf("create sandbox %s: %w", sb.id, err)
	}
	return m.hook(ctx, agentstate.StepVM, sb.id)
}

// placement is the vm.Spec.Placement hook of a sandbox's VMM: it moves
// the VMM into the sandbox's cgroup (recorded in rec) before the guest
// runs or its memory is loaded, so the guest's memory is charged to that
// group, not to the agent's, and the group's limit covers all of it.
func (m *Manager) placement(ctx context.Context, rec *agentstate.Record) func(pid int) error {
	cg := rec.Cgroup
	return func(pid int) error {
		if err := m.cfg.Cgroups.AddProcess(ctx, cg, pid); err != nil {
			return fmt.Errorf("move vmm into its cgroup: %w", err)
		}
		return nil
	}
}

// coldBoot clones the template's disk, boots the kernel and initialises
// envd.
func (m *Manager) coldBoot(ctx context.Context, sb *sandbox, rec *agentstate.Record, img Image,
	net *vm.NetSpec, netArgs string, initReq envdclient.InitRequest, undo *undoStack) (vm.Instance, *envdclient.Client, error) {
	undo.push("rootfs", func(context.Context) error { return filesystem.Remove(rec.Rootfs) })
	if _, err := filesystem.Clone(ctx, img.Rootfs, rec.Rootfs); err != nil {
		return nil, nil, fmt.Errorf("create sandbox %s: clone rootfs: %w", sb.id, err)
	}
	if want := int64(rec.Request.DiskMB) << 20; want > img.SizeBytes {
		if err := os.Truncate(rec.Rootfs, want); err != nil {
			return nil, nil, fmt.Errorf("create sandbox %s: grow disk: %w", sb.id, err)
		}
	}
	rec.Step = agentstate.StepRootfs
	if err := m.save(sb, rec); err != nil {
		return nil, nil, err
	}
	if err := m.hook(ctx, agentstate.StepRootfs, sb.id); err != nil {
		return nil, nil, err
	}
	args := img.KernelArgs
	if netArgs != "" {
		args += " " + netArgs
	}
	bctx, cancel := context.WithTimeout(ctx, m.cfg.BootTimeout)
	defer cancel()
	inst, err := m.cfg.Driver.Create(bctx, vm.Spec{
		ID: sb.id, VCPUs: rec.Request.VCPUs, MemoryMB: rec.Request.MemoryMB,
		Kernel: img.Kernel, Initrd: img.Initrd, KernelArgs: args,
		Rootfs: rec.Rootfs, RunDir: rec.RunDir, Net: net, BootTimeout: m.cfg.BootTimeout,
		Placement: m.placement(ctx, rec),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create sandbox %s: boot vm: %w", sb.id, mapVMError(err))
	}
	undo.push("vm", func(ctx context.Context) error { return inst.Destroy(ctx) })
	if err := m.recordVM(ctx, sb, rec, inst); err != nil {
		return nil, nil, err
	}
	c := envdclient.New(inst, envdclient.Options{Log: m.log.With("sandbox_id", sb.id)})
	if _, _, err := c.WaitHealthy(bctx, envdclient.Backoff{}); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("create sandbox %s: %w: %w", sb.id, errdefs.ErrUnavailable, err)
	}
	initReq.Timestamp = time.Now()
	if err := c.Init(bctx, initReq); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("create sandbox %s: %w", sb.id, envdError(err))
	}
	return inst, c, nil
}

// mapVMError gives driver errors their errdefs kind.
func mapVMError(err error) error {
	switch {
	case errors.Is(err, vm.ErrInvalidSpec):
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	case errors.Is(err, vm.ErrNotFound):
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	case errors.Is(err, vm.ErrWrongState):
		return fmt.Errorf("%w: %w", errdefs.ErrConflict, err)
	case errors.Is(err, vm.ErrNotSupported):
		return fmt.Errorf("%w: %w", errdefs.ErrNotImplemented, err)
	case errors.Is(err, vm.ErrBootTimeout):
		return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
	}
	return err
}
