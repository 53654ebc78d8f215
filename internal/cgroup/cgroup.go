package cgroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Errors the Manager returns; callers match them with errors.Is.
var (
	// ErrNotFound: the sandbox's group does not exist.
	ErrNotFound = errors.New("cgroup not found")
	// ErrInvalidArgument: a bad sandbox ID, limit or handle.
	ErrInvalidArgument = errors.New("invalid cgroup argument")
	// ErrUnsupported: the host lacks a cgroup hierarchy or a controller
	// that the requested limits need.
	ErrUnsupported = errors.New("cgroup controller unavailable")
	// ErrBusy: the group still holds processes, so it cannot be removed.
	ErrBusy = errors.New("cgroup still has processes")
)

// Mode is the cgroup hierarchy a Manager drives.
type Mode string

const (
	// ModeAuto detects the mode from the mounts (Config only).
	ModeAuto Mode = ""
	// ModeV1 is the legacy one-hierarchy-per-controller layout.
	ModeV1 Mode = "v1"
	// ModeV2 is the unified hierarchy.
	ModeV2 Mode = "v2"
)

// DefaultRoot is where cgroup file systems are mounted on Linux hosts.
const DefaultRoot = "/sys/fs/cgroup"

// Config configures a Manager. The zero value detects the mode and uses
// /sys/fs/cgroup with the parent "wrenn".
type Config struct {
	// Mode forces v1 or v2; ModeAuto detects it.
	Mode Mode
	// Root is the v2 mount point, or on v1 the directory holding one mount
	// per controller (cpu, cpuacct, memory, pids). Default DefaultRoot.
	Root string
	// Parent is the group, relative to the hierarchy root, under which
	// every sandbox gets its own child. Default "wrenn".
	Parent string
	// CPUPeriod is the CFS period the CPU quota is expressed in.
	// Default 100ms (the kernel's default).
	CPUPeriod time.Duration
	// DeleteTimeout bounds how long Delete and Kill wait for the kernel to
	// release a group (EBUSY right after the last process exited).
	// Default 2s.
	DeleteTimeout time.Duration
	// Logger receives lifecycle events; default slog.Default().
	Logger *slog.Logger
}

// Limits are the resources of one sandbox's VMM. Zero means unlimited.
type Limits struct {
	VCPUs      int // CPU quota = VCPUs × period
	MemoryMB   int // guest memory
	OverheadMB int // VMM overhead on top of the guest memory
	PIDs       int // maximum number of tasks (threads count)
}

// MemoryBytes is the memory limit the kernel enforces, 0 when unlimited.
func (l Limits) MemoryBytes() int64 {
	return int64(l.MemoryMB+l.OverheadMB) << 20
}

func (l Limits) validate() error {
	if l.VCPUs < 0 || l.MemoryMB < 0 || l.OverheadMB < 0 || l.PIDs < 0 {
		return fmt.Errorf("%w: negative limit %+v", ErrInvalidArgument, l)
	}
	return nil
}

// Handle names one sandbox's group. It is a plain value: the host agent
// persists it and passes it back after a restart.
type Handle struct {
	SandboxID string `json:"sandbox_id"`
	Mode      Mode   `json:"mode"`
	// Group is the path relative to the hierarchy root, e.g. /wrenn/sb-1.
	Group string `json:"group"`
}

// Stats is one reading of a group's counters.
type Stats struct {
	CPUUsage      time.Duration // total CPU time of all tasks
	CPUThrottled  uint64        // periods in which the quota throttled the group
	MemoryCurrent uint64        // bytes charged now
	MemoryPeak    uint64        // high-water mark (0 where the kernel has none)
	MemoryLimit   uint64        // enforced limit; math.MaxUint64-ish when unlimited
	OOMKills      uint64        // tasks killed by the OOM killer in this group
	PIDs          uint64        // tasks now
}

// backend is one hierarchy layout. Groups are paths relative to the root.
type backend interface {
	create(group string, l Limits, periodUS uint64) (created bool, err error)
	exists(group string) (bool, error)
	addProc(group string, pid int) error
	procs(group string) ([]int, error)
	stats(group string) (Stats, error)
	// dirs lists the directories of group in every controller mount.
	dirs(group string) []string
	// killAll asks the kernel to kill every task, reporting false when it
	// cannot (then the caller signals the tasks one by one).
	killAll(group string) bool
	// inGroup reports whether the /proc/<pid>/cgroup content places the
	// process in group.
	inGroup(procCgroup []byte, group string) bool
}

// Manager creates and removes sandbox groups under one parent. It holds no
// mutable state and is safe for concurrent use.
type Manager struct {
	mode    Mode
	parent  string // absolute group path, e.g. /wrenn
	period  uint64 // µs
	timeout time.Duration
	log     *slog.Logger
	b       backend
}

// New returns a Manager for cfg. It checks that the hierarchy is mounted
// but creates nothing.
func New(cfg Config) (*Manager, error) {
	if cfg.Root == "" {
		cfg.Root = DefaultRoot
	}
	if cfg.Parent == "" {
		cfg.Parent = "wrenn"
	}
	if cfg.CPUPeriod == 0 {
		cfg.CPUPeriod = 100 * time.Millisecond
	}
	if cfg.DeleteTimeout == 0 {
		cfg.DeleteTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	rel := strings.Trim(cfg.Parent, "/")
	if rel == "" || rel == "." || path.Clean(rel) != rel || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("%w: parent %q must be a clean relative path", ErrInvalidArgument, cfg.Parent)
	}
	parent := "/" + rel
	period := uint64(cfg.CPUPeriod / time.Microsecond)
	if period < 1000 || period > 1000000 {
		return nil, fmt.Errorf("%w: cpu period %s outside 1ms..1s", ErrInvalidArgument, cfg.CPUPeriod)
	}
	mode := cfg.Mode
	if mode == ModeAuto {
		m, err := Detect(cfg.Root)
		if err != nil {
			return nil, err
		}
		mode = m
	}
	var b backend
	var err error
	switch mode {
	case ModeV1:
		b, err = newV1(cfg.Root)
	case ModeV2:
		b, err = newV2(cfg.Root)
	default:
		return nil, fmt.Errorf("%w: mode %q", ErrInvalidArgument, mode)
	}
	if err != nil {
		return nil, err
	}
	return &Manager{
		mode:    mode,
		parent:  parent,
		period:  period,
		timeout: cfg.DeleteTimeout,
		log:     cfg.Logger,
		b:       b,
	}, nil
}

// Detect reports which hierarchy holds the controllers under root: v2 when
// root itself is a cgroup2 mount, v1 when root/memory is a cgroup (v1)
// mount. A hybrid host (v1 controllers plus an empty v2 hierarchy at
// root/unified) is v1, because that is where the controllers are.
func Detect(root string) (Mode, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return "", fmt.Errorf("%w: statfs %s: %w", ErrUnsupported, root, err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return ModeV2, nil
	}
	if err := unix.Statfs(filepath.Join(root, "memory"), &st); err == nil && st.Type == unix.CGROUP_SUPER_MAGIC {
		return ModeV1, nil
	}
	return "", fmt.Errorf("%w: no cgroup hierarchy with a memory controller under %s", ErrUnsupported, root)
}

// Mode is the hierarchy this Manager drives.
func (m *Manager) Mode() Mode { return m.mode }

// Parent is the absolute group path sandbox groups live under.
func (m *Manager) Parent() string { return m.parent }

// handleFor returns the Handle of a sandbox ID, validating the ID.
func (m *Manager) handleFor(sandboxID string) (Handle, error) {
	if err := validID(sandboxID); err != nil {
		return Handle{}, err
	}
	return Handle{SandboxID: sandboxID, Mode: m.mode, Group: m.parent + "/" + sandboxID}, nil
}

// check accepts only handles this Manager would have made, so a corrupt
// state file can never point it at another group.
func (m *Manager) check(h Handle) (Handle, error) {
	want, err := m.handleFor(h.SandboxID)
	if err != nil {
		return Handle{}, err
	}
	if h.Mode != "" && h.Mode != m.mode {
		return Handle{}, fmt.Errorf("%w: handle is cgroup %s, host is %s", ErrInvalidArgument, h.Mode, m.mode)
	}
	if h.Group != "" && h.Group != want.Group {
		return Handle{}, fmt.Errorf("%w: group %q is not under %s", ErrInvalidArgument, h.Group, m.parent)
	}
	return want, nil
}

// validID accepts IDs that are one safe path element.
func validID(id string) error {
	if id == "" || len(id) > 128 || id == "." || id == ".." {
		return fmt.Errorf("%w: sandbox id %q", ErrInvalidArgument, id)
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("%w: sandbox id %q", ErrInvalidArgument, id)
		}
	}
	return nil
}

// Create makes (or, when it exists, re-applies the limits of) the group of
// sandboxID. Calling it twice with the same limits is harmless. When it
// fails on a group it created, it removes that group again.
func (m *Manager) Create(ctx context.Context, sandboxID string, l Limits) (Handle, error) {
	if err := ctx.Err(); err != nil {
		return Handle{}, err
	}
	h, err := m.handleFor(sandboxID)
	if err != nil {
		return Handle{}, err
	}
	if err := l.validate(); err != nil {
		return Handle{}, err
	}
	created, err := m.b.create(h.Group, l, m.period)
	if err != nil {
		if created {
			if rerr := m.removeDirs(context.WithoutCancel(ctx), h.Group); rerr != nil {
				m.log.Warn("cgroup create undo failed", "sandbox_id", sandboxID, "err", rerr)
			}
		}
		return Handle{}, fmt.Errorf("create cgroup %s: %w", h.Group, err)
	}
	m.log.Info("cgroup created", "sandbox_id", sandboxID, "group", h.Group, "mode", m.mode,
		"vcpus", l.VCPUs, "memory_bytes", l.MemoryBytes(), "pids", l.PIDs, "new", created)
	return h, nil
}

// Load checks that the group of a persisted handle still exists, for use
// after an agent restart. A handle with only SandboxID set is completed.
func (m *Manager) Load(ctx context.Context, h Handle) (Handle, error) {
	if err := ctx.Err(); err != nil {
		return Handle{}, err
	}
	h, err := m.check(h)
	if err != nil {
		return Handle{}, err
	}
	if err := m.mustExist(h.Group); err != nil {
		return Handle{}, fmt.Errorf("load cgroup %s: %w", h.Group, err)
	}
	return h, nil
}

// mustExist returns ErrNotFound for a missing group.
func (m *Manager) mustExist(group string) error {
	ok, err := m.b.exists(group)
	if err != nil {
		return err
	}
	if !ok {
		return ErrNotFound
	}
	return nil
}

// OpenDir opens the group's directory so a process can be started inside
// it from its first instruction (clone3 with CLONE_INTO_CGROUP): set
// SysProcAttr.UseCgroupFD and CgroupFD to the file's descriptor, start,
// then close the file. This is the race-free way to place a VMM; it exists
// on cgroup v2 only, and returns ErrUnsupported on v1 (use AddProcess).
func (m *Manager) OpenDir(ctx context.Context, h Handle) (*os.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := m.check(h)
	if err != nil {
		return nil, err
	}
	if m.mode != ModeV2 {
		return nil, fmt.Errorf("open cgroup %s: %w: starting inside a group needs cgroup v2", h.Group, ErrUnsupported)
	}
	if err := m.mustExist(h.Group); err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", h.Group, err)
	}
	f, err := os.Open(m.b.dirs(h.Group)[0])
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", h.Group, err)
	}
	return f, nil
}

// AddProcess moves pid (all its threads) into the group. Move the VMM in
// before the guest touches its memory: on v1 earlier charges stay behind.
func (m *Manager) AddProcess(ctx context.Context, h Handle, pid int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h, err := m.check(h)
	if err != nil {
		return err
	}
	if pid <= 0 {
		return fmt.Errorf("%w: pid %d", ErrInvalidArgument, pid)
	}
	if err := m.mustExist(h.Group); err != nil {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, h.Group, err)
	}
	if err := m.b.addProc(h.Group, pid); err != nil {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, h.Group, err)
	}
	return nil
}

// Procs lists the PIDs in the group.
func (m *Manager) Procs(ctx context.Context, h Handle) ([]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := m.check(h)
	if err != nil {
		return nil, err
	}
	if err := m.mustExist(h.Group); err != nil {
		return nil, fmt.Errorf("list procs of cgroup %s: %w", h.Group, err)
	}
	return m.b.procs(h.Group)
}

// Stats reads the group's counters.
func (m *Manager) Stats(ctx context.Context, h Handle) (Stats, error) {
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	h, err := m.check(h)
	if err != nil {
		return Stats{}, err
	}
	if err := m.mustExist(h.Group); err != nil {
		return Stats{}, fmt.Errorf("stats of cgroup %s: %w", h.Group, err)
	}
	s, err := m.b.stats(h.Group)
	if err != nil {
		return Stats{}, fmt.Errorf("stats of cgroup %s: %w", h.Group, err)
	}
	return s, nil
}

// Delete removes the group. It never kills: the VMM must have exited
// first, else Delete returns ErrBusy after DeleteTimeout. The kernel may
// refuse the removal for a moment after the last task exits; Delete
// retries until then. Deleting a group that is gone is not an error.
func (m *Manager) Delete(ctx context.Context, h Handle) error {
	h, err := m.check(h)
	if err != nil {
		return err
	}
	if err := m.removeDirs(ctx, h.Group); err != nil {
		return fmt.Errorf("delete cgroup %s: %w", h.Group, err)
	}
	m.log.Info("cgroup deleted", "sandbox_id", h.SandboxID, "group", h.Group)
	return nil
}

// List returns the sandbox groups under the parent, sorted by sandbox ID.
// On v1 a group present in any controller counts, so a half-created one
// is listed too.
func (m *Manager) List(ctx context.Context) ([]Handle, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	names, err := listChildren(m.b.dirs(m.parent))
	if err != nil {
		return nil, fmt.Errorf("list cgroups under %s: %w", m.parent, err)
	}
	out := make([]Handle, 0, len(names))
	for _, n := range names {
		h, err := m.handleFor(n)
		if err != nil {
			continue // not ours: a name we would never create
		}
		out = append(out, h)
	}
	return out, nil
}

// RemoveParent removes the (empty) parent group, the counterpart of the
// parent directories that Create makes as needed. It returns ErrBusy while
// any sandbox group remains; a missing parent is not an error.
func (m *Manager) RemoveParent(ctx context.Context) error {
	hs, err := m.List(ctx)
	if err != nil {
		return err
	}
	if len(hs) > 0 {
		return fmt.Errorf("remove cgroup parent %s: %d groups left: %w", m.parent, len(hs), ErrBusy)
	}
	if err := m.removeDirs(ctx, m.parent); err != nil {
		return fmt.Errorf("remove cgroup parent %s: %w", m.parent, err)
	}
	return nil
}
