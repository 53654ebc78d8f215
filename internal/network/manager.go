package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// stateFile is the allocator's file under Config.StateDir.
const stateFile = "network-leases.json"

// Manager sets up and tears down sandbox networks on one host. Operations
// on different sandboxes run concurrently; operations on one sandbox are
// serialised. Close releases the manager's descriptors only: sandbox
// networks and the host table outlive it (and the agent process).
type Manager struct {
	cfg    Config
	log    *slog.Logger
	hostNS netns.NsHandle
	host   *netlink.Handle // sockets in the host-side namespace
	alloc  *Allocator
	hostT  hostSpec
	locks  keyedLocks

	// hook, when set (tests only), runs before each Setup step and fails
	// the step when it returns an error.
	hook func(step string) error
}

// New opens the allocator state, enables IPv4 forwarding in the host-side
// namespace (never turned off again: other users of the namespace may rely
// on it) and installs or replaces the manager's host table. Calling New
// again after a restart is safe.
func New(cfg Config) (m *Manager, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m = &Manager{
		cfg: cfg,
		log: cfg.Logger.With("component", "network"),
		hostT: hostSpec{
			table: cfg.NamePrefix + "_host", pool: cfg.Pool, uplink: cfg.Uplink,
			allowHostAccess: cfg.AllowHostAccess, protectedPorts: cfg.ProtectedHostPorts,
		},
	}
	if cfg.HostNS != "" {
		m.hostNS, err = netns.GetFromPath(cfg.HostNS)
	} else {
		m.hostNS, err = currentNS()
	}
	if err != nil {
		return nil, fmt.Errorf("open host netns %q: %w", cfg.HostNS, err)
	}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	if m.host, err = netlinkIn(m.hostNS); err != nil {
		return nil, err
	}
	if err = runInNS(m.hostNS, func() error {
		if v, _ := readSysctl("net/ipv4/ip_forward"); strings.TrimSpace(v) != "1" {
			m.log.Info("enabling IPv4 forwarding in the host-side namespace")
		}
		return writeSysctl("net/ipv4/ip_forward", "1", false)
	}); err != nil {
		return nil, fmt.Errorf("host forwarding: %w", err)
	}
	if m.alloc, err = OpenAllocator(filepath.Join(cfg.StateDir, stateFile), cfg.Pool, cfg.NamePrefix); err != nil {
		return nil, err
	}
	c, err := m.nftIn(m.hostNS)
	if err != nil {
		return nil, err
	}
	if err = installHostTable(c, m.hostT); err != nil {
		return nil, err
	}
	m.log.Info("network manager ready", "pool", cfg.Pool, "leases", len(m.alloc.List()), "host_table", m.hostT.table)
	return m, nil
}

// Close releases the manager's descriptors. It removes nothing.
func (m *Manager) Close() {
	if m.host != nil {
		m.host.Close()
		m.host = nil
	}
	if m.hostNS.IsOpen() {
		_ = m.hostNS.Close()
		m.hostNS = netns.None()
	}
}

// Uninstall removes the host table. It refuses while any lease exists.
func (m *Manager) Uninstall(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if n := len(m.alloc.List()); n > 0 {
		return fmt.Errorf("%w: %d sandbox networks still exist", errdefs.ErrConflict, n)
	}
	c, err := m.nftIn(m.hostNS)
	if err != nil {
		return err
	}
	return deleteHostTable(c, m.hostT)
}

// List returns a handle for every network this manager owns, including
// half-built ones left by a crash during Setup, ordered by block.
func (m *Manager) List() []Handle {
	leases := m.alloc.List()
	out := make([]Handle, 0, len(leases))
	for _, l := range leases {
		out = append(out, m.handleFor(l))
	}
	return out
}

// Reconcile tears down every owned network whose sandbox keep rejects;
// the agent calls it on start with its own inventory.
func (m *Manager) Reconcile(ctx context.Context, keep func(sandboxID string) bool) error {
	var errs []error
	for _, h := range m.List() {
		if keep(h.SandboxID) {
			continue
		}
		m.log.Info("removing network of unknown sandbox", "sandbox_id", h.SandboxID, "netns", h.NetNS)
		if err := m.Teardown(ctx, h); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Capacity is the number of sandbox networks the pool holds.
func (m *Manager) Capacity() int { return m.alloc.Capacity() }

func (m *Manager) nftIn(ns netns.NsHandle) (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return nil, fmt.Errorf("nftables conn: %w", err)
	}
	return c, nil
}

// owned returns the handle the manager's own lease gives for h's sandbox,
// and false when the manager holds no lease for that block.
func (m *Manager) owned(h Handle) (Handle, bool, error) {
	l, ok := m.alloc.Get(h.SandboxID)
	if !ok || l.Index != h.Index {
		return Handle{}, false, nil
	}
	want := m.handleFor(l)
	if !h.sameObjects(want) {
		return Handle{}, false, fmt.Errorf("%w: handle for sandbox %s names %s/%s, the lease says %s/%s",
			errdefs.ErrConflict, h.SandboxID, h.NetNS, h.HostVeth, want.NetNS, want.HostVeth)
	}
	return want, true, nil
}

// Teardown removes a sandbox's network and frees its block. It works from
// a handle stored before a restart, accepts missing pieces, and is a no-op
// when the manager holds no lease for the handle (already torn down). It
// does not stop early on a canceled context: half a teardown helps nobody.
func (m *Manager) Teardown(ctx context.Context, h Handle) error {
	unlock := m.locks.lock(h.SandboxID)
	defer unlock()
	want, ok, err := m.owned(h)
	if err != nil || !ok {
		return err
	}
	if err := m.removeObjects(want); err != nil {
		return fmt.Errorf("teardown network %s: %w", h.SandboxID, err)
	}
	if err := m.alloc.Release(h.SandboxID); err != nil {
		return fmt.Errorf("teardown network %s: %w", h.SandboxID, err)
	}
	m.log.InfoContext(ctx, "sandbox network removed", "sandbox_id", h.SandboxID, "netns", want.NetNS)
	return nil
}

// removeObjects deletes what handleFor names, skipping what is missing:
// the host end of the veth (which takes the sandbox end with it at once,
// so the name is free when Teardown returns) and the namespace (which
// takes the TAP, the tables and the namespace's conntrack with it).
// Host-side conntrack entries of the block are left to expire: sweeping
// them means dumping the whole host table on every teardown, and a later
// sandbox on the same block (next fit makes that rare) can only meet an
// entry with the exact same addresses and ports, which conntrack handles.
func (m *Manager) removeObjects(h Handle) error {
	var errs []error
	if err := m.delHostVeth(h.HostVeth); err != nil {
		errs = append(errs, err)
	}
	if err := deleteNamedNS(h.NetNSPath); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (m *Manager) delHostVeth(name string) error {
	l, err := m.host.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find veth %s: %w", name, err)
	}
	if l.Type() != "veth" {
		return fmt.Errorf("%w: %s is a %s, not the veth this manager made", errdefs.ErrConflict, name, l.Type())
	}
	if err := m.host.LinkDel(l); err != nil && !errors.As(err, new(netlink.LinkNotFoundError)) {
		return fmt.Errorf("delete veth %s: %w", name, err)
	}
	return nil
}

// UpdatePolicy atomically replaces a running sandbox's egress policy and
// drops the guest's open connections from conntrack, so each is judged
// again under the new policy at its next packet.
func (m *Manager) UpdatePolicy(ctx context.Context, h Handle, p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	unlock := m.locks.lock(h.SandboxID)
	defer unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	want, ok, err := m.owned(h)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: no network for sandbox %s", errdefs.ErrNotFound, h.SandboxID)
	}
	return m.applyPolicy(ctx, want, p)
}

func (m *Manager) applyPolicy(ctx context.Context, h Handle, p Policy) error {
	ns, err := netns.GetFromPath(h.NetNSPath)
	if err != nil {
		return fmt.Errorf("%w: open netns of sandbox %s: %w", errdefs.ErrNotFound, h.SandboxID, err)
	}
	defer ns.Close()
	c, err := m.nftIn(ns)
	if err != nil {
		return err
	}
	b := &batch{c: c}
	addFilterTable(b, m.filterSpec(h, p), true)
	if err := b.flush(); err != nil {
		return fmt.Errorf("update policy of %s: nftables %s: %w", h.SandboxID, filterTable, err)
	}
	sb, err := netlinkIn(ns)
	if err != nil {
		return err
	}
	defer sb.Close()
	n, err := sb.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.FAMILY_V4, guestFlows{})
	if err != nil {
		return fmt.Errorf("update policy of %s: drop guest connections: %w", h.SandboxID, err)
	}
	m.log.InfoContext(ctx, "egress policy updated", "sandbox_id", h.SandboxID, "default_deny", p.DefaultDeny,
		"allow", len(p.Allow), "deny", len(p.Deny), "flows_reset", n)
	return nil
}

func (m *Manager) filterSpec(h Handle, p Policy) filterSpec {
	blocked := append([]netip.Prefix{netip.PrefixFrom(metadataIP, 32), m.cfg.Pool}, m.cfg.BlockedCIDRs...)
	return filterSpec{hostIP: h.HostIP, blocked: blocked, policy: p}
}
