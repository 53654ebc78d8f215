package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/snapstore"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// Boot modes recorded in agentstate.Record.BootMode.
const (
	BootCold             = "cold"
	BootTemplateSnapshot = "template-snapshot"
	BootSnapshot         = "snapshot"
)

// Totals is the capacity the agent hands out.
type Totals struct {
	VCPUs    int
	MemoryMB int64
	DiskMB   int64 // 0 = not enforced
}

// Config wires a Manager.
type Config struct {
	Driver    vm.Driver
	State     *agentstate.Store
	Images    Images
	Network   Network
	Cgroups   Cgroups
	Templates TemplateSnapshots // nil: every create is a cold boot
	Snapshots snapstore.Store
	Totals    Totals

	DefaultTemplate string
	DefaultVCPUs    int
	DefaultMemoryMB int
	// BootTimeout bounds VM start to envd answering; default 60 s.
	BootTimeout time.Duration
	// PauseCreateAt is a test hook: creates stop at this step (an
	// agentstate Step* name) and wait until their context ends.
	PauseCreateAt string
	Log           *slog.Logger
}

// Manager owns the sandboxes of one host. Safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	sandboxes map[string]*sandbox
	used      models.Resources // reserved by live and creating sandboxes (disk: every sandbox)
}

// sandbox is one entry of the manager. op is held for the whole of a
// lifecycle operation (create, pause, snapshot, destroy...); mu guards the
// fields below it and is only held briefly, so reads never wait for a
// slow operation.
type sandbox struct {
	id string
	op sync.Mutex

	mu   sync.RWMutex
	rec  *agentstate.Record
	inst vm.Instance
	envd *envdclient.Client
	gone bool // removed from the manager; a waiter must look again
	held models.Resources
}

// New returns a manager. Call Recover before serving requests.
func New(cfg Config) (*Manager, error) {
	if cfg.Driver == nil || cfg.State == nil || cfg.Images == nil || cfg.Network == nil ||
		cfg.Cgroups == nil || cfg.Snapshots == nil {
		return nil, errors.New("sandbox manager: driver, state, images, network, cgroups and snapshots are required")
	}
	if cfg.DefaultTemplate == "" {
		cfg.DefaultTemplate = "minimal"
	}
	if cfg.DefaultVCPUs <= 0 {
		cfg.DefaultVCPUs = 1
	}
	if cfg.DefaultMemoryMB <= 0 {
		cfg.DefaultMemoryMB = 512
	}
	if cfg.BootTimeout <= 0 {
		cfg.BootTimeout = 60 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, log: cfg.Log, sandboxes: map[string]*sandbox{}}, nil
}

// DriverName is the VM driver's name.
func (m *Manager) DriverName() string { return m.cfg.Driver.Name() }

// Templates lists the templates this host can boot.
func (m *Manager) Templates() []string { return m.cfg.Images.Templates() }

// claim returns the sandbox entry for id; fresh is true when it was just
// made, and then the caller holds its op lock.
func (m *Manager) claim(sid string) (sb *sandbox, fresh bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sb, ok := m.sandboxes[sid]; ok {
		return sb, false
	}
	sb = &sandbox{id: sid}
	sb.op.Lock()
	m.sandboxes[sid] = sb
	return sb, true
}

// lookup returns the entry for id, or nil.
func (m *Manager) lookup(sid string) *sandbox {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sandboxes[sid]
}

// lockExisting finds id and takes its op lock; ErrNotFound when there is
// no such sandbox.
func (m *Manager) lockExisting(sid string) (*sandbox, error) {
	if err := id.ValidateSandboxID(sid); err != nil {
		return nil, err
	}
	for {
		sb := m.lookup(sid)
		if sb == nil {
			return nil, errdefs.Errorf(errdefs.ErrNotFound, "sandbox %s", sid)
		}
		sb.op.Lock()
		if sb.gone {
			sb.op.Unlock()
			continue
		}
		if sb.record() == nil { // a create that never wrote its record
			sb.op.Unlock()
			return nil, errdefs.Errorf(errdefs.ErrNotFound, "sandbox %s", sid)
		}
		return sb, nil
	}
}

// forget removes sb from the manager and returns what it held. The caller
// holds sb.op.
func (m *Manager) forget(sb *sandbox) {
	sb.mu.Lock()
	sb.gone = true
	held := sb.held
	sb.held = models.Resources{}
	sb.mu.Unlock()
	m.mu.Lock()
	if m.sandboxes[sb.id] == sb {
		delete(m.sandboxes, sb.id)
	}
	m.used.VCPUs -= held.VCPUs
	m.used.MemoryMB -= held.MemoryMB
	m.used.DiskMB -= held.DiskMB
	m.mu.Unlock()
}

// reserve takes r from the free capacity for sb, failing with
// ErrResourceExhausted when it does not fit (force: always take it, for
// sandboxes found running after a restart).
func (m *Manager) reserve(sb *sandbox, r models.Resources, force bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.cfg.Totals
	if !force {
		var short []string
		if m.used.VCPUs+r.VCPUs > t.VCPUs {
			short = append(short, fmt.Sprintf("vcpus: %d of %d in use, %d asked", m.used.VCPUs, t.VCPUs, r.VCPUs))
		}
		if int64(m.used.MemoryMB+r.MemoryMB) > t.MemoryMB {
			short = append(short, fmt.Sprintf("memory: %d of %d MiB in use, %d asked", m.used.MemoryMB, t.MemoryMB, r.MemoryMB))
		}
		if t.DiskMB > 0 && int64(m.used.DiskMB+r.DiskMB) > t.DiskMB {
			short = append(short, fmt.Sprintf("disk: %d of %d MiB in use, %d asked", m.used.DiskMB, t.DiskMB, r.DiskMB))
		}
		if len(short) > 0 {
			return errdefs.Errorf(errdefs.ErrResourceExhausted, "host capacity (%s)", strings.Join(short, "; "))
		}
	}
	m.used.VCPUs += r.VCPUs
	m.used.MemoryMB += r.MemoryMB
	m.used.DiskMB += r.DiskMB
	sb.mu.Lock()
	sb.held.VCPUs += r.VCPUs
	sb.held.MemoryMB += r.MemoryMB
	sb.held.DiskMB += r.DiskMB
	sb.mu.Unlock()
	return nil
}

// unreserve gives back part of what sb holds (vCPUs and memory when a
// sandbox hibernates).
func (m *Manager) unreserve(sb *sandbox, r models.Resources) {
	sb.mu.Lock()
	r.VCPUs = min(r.VCPUs, sb.held.VCPUs)
	r.MemoryMB = min(r.MemoryMB, sb.held.MemoryMB)
	r.DiskMB = min(r.DiskMB, sb.held.DiskMB)
	sb.held.VCPUs -= r.VCPUs
	sb.held.MemoryMB -= r.MemoryMB
	sb.held.DiskMB -= r.DiskMB
	sb.mu.Unlock()
	m.mu.Lock()
	m.used.VCPUs -= r.VCPUs
	m.used.MemoryMB -= r.MemoryMB
	m.used.DiskMB -= r.DiskMB
	m.mu.Unlock()
}

// record returns the current record (shared; callers must not modify it).
func (sb *sandbox) record() *agentstate.Record {
	sb.mu.RLock()
	defer sb.mu.RUnlock()
	return sb.rec
}

// live returns the running VM and its envd client.
func (sb *sandbox) live() (*agentstate.Record, vm.Instance, *envdclient.Client) {
	sb.mu.RLock()
	defer sb.mu.RUnlock()
	return sb.rec, sb.inst, sb.envd
}

// save writes rec and makes it the sandbox's current record. The caller
// holds sb.op and owns rec (a fresh clone it may keep modifying after
// save returns: the published copy is cloned again).
func (m *Manager) save(sb *sandbox, rec *agentstate.Record) error {
	if err := m.cfg.State.Save(rec); err != nil {
		return err
	}
	pub := rec.Clone()
	sb.mu.Lock()
	sb.rec = pub
	sb.mu.Unlock()
	return nil
}

// attach makes inst and c the sandbox's VM and envd client and watches
// the VMM for an unexpected exit.
func (m *Manager) attach(sb *sandbox, inst vm.Instance, c *envdclient.Client) {
	sb.mu.Lock()
	sb.inst, sb.envd = inst, c
	sb.mu.Unlock()
	go m.watch(sb, inst)
}

// detach takes the VM and client away from the sandbox (before it is
// deliberately stopped, so the watcher does not call it a crash).
func (sb *sandbox) detach() (vm.Instance, *envdclient.Client) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	inst, c := sb.inst, sb.envd
	sb.inst, sb.envd = nil, nil
	if c != nil {
		c.Close()
	}
	return inst, c
}

// watch marks the sandbox as failed when its VMM exits while it is still
// the sandbox's current VM.
func (m *Manager) watch(sb *sandbox, inst vm.Instance) {
	<-inst.Exited()
	sb.mu.RLock()
	current := sb.inst == inst && !sb.gone
	sb.mu.RUnlock()
	if !current {
		return
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	rec, cur, _ := sb.live()
	if cur != inst || sb.gone || rec == nil {
		return
	}
	m.log.Error("vmm exited unexpectedly", "sandbox_id", sb.id, "pid", inst.Handle().PID)
	sb.detach()
	r := rec.Clone()
	r.Status = models.StatusError
	r.Error = "the VM exited unexpectedly"
	if err := m.save(sb, r); err != nil {
		m.log.Error("save state", "sandbox_id", sb.id, "err", err)
	}
}

// Get returns a copy of one sandbox's record.
func (m *Manager) Get(sid string) (*agentstate.Record, error) {
	if err := id.ValidateSandboxID(sid); err != nil {
		return nil, err
	}
	sb := m.lookup(sid)
	if sb == nil {
		return nil, errdefs.Errorf(errdefs.ErrNotFound, "sandbox %s", sid)
	}
	rec := sb.record()
	if rec == nil {
		return nil, errdefs.Errorf(errdefs.ErrNotFound, "sandbox %s", sid)
	}
	return rec.Clone(), nil
}

// List returns a copy of every sandbox's record, by ID.
func (m *Manager) List() []*agentstate.Record {
	m.mu.Lock()
	sbs := make([]*sandbox, 0, len(m.sandboxes))
	for _, sb := range m.sandboxes {
		sbs = append(sbs, sb)
	}
	m.mu.Unlock()
	out := make([]*agentstate.Record, 0, len(sbs))
	for _, sb := range sbs {
		if rec := sb.record(); rec != nil {
			out = append(out, rec.Clone())
		}
	}
	slices.SortFunc(out, func(a, b *agentstate.Record) int { return strings.Compare(a.SandboxID, b.SandboxID) })
	return out
}

// Capacity reports totals and what is in use.
func (m *Manager) Capacity() models.Capacity {
	m.mu.Lock()
	defer m.mu.Unlock()
	return models.Capacity{
		TotalVCPUs: m.cfg.Totals.VCPUs, UsedVCPUs: m.used.VCPUs,
		TotalMemoryMB: m.cfg.Totals.MemoryMB, UsedMemoryMB: int64(m.used.MemoryMB),
		TotalDiskMB: m.cfg.Totals.DiskMB, UsedDiskMB: int64(m.used.DiskMB),
		SandboxCount: len(m.sandboxes),
	}
}

// hook is the PauseCreateAt test hook.
func (m *Manager) hook(ctx context.Context, step, sid string) error {
	if m.cfg.PauseCreateAt != step {
		return nil
	}
	m.log.Warn("test hook: create paused", "step", step, "sandbox_id", sid)
	<-ctx.Done()
	return fmt.Errorf("test hook at %s: %w", step, ctx.Err())
}

// Close detaches from every VM (they keep running) and drops envd
// connections; the agent calls it on shutdown.
func (m *Manager) Close() {
	m.mu.Lock()
	sbs := make([]*sandbox, 0, len(m.sandboxes))
	for _, sb := range m.sandboxes {
		sbs = append(sbs, sb)
	}
	m.mu.Unlock()
	for _, sb := range sbs {
		sb.mu.Lock()
		if sb.envd != nil {
			sb.envd.Close()
		}
		inst := sb.inst
		sb.inst = nil
		sb.gone = true
		sb.mu.Unlock()
		if d, ok := inst.(interface{ Detach() }); ok {
			d.Detach()
		}
	}
}
