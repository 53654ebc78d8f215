package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unicode/utf8"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// Setup steps, in order; tests fail each one through the hook.
const (
	stepNetNS       = "netns"
	stepSandboxNS   = "sandbox-ns" // sysctls, TAP, netlink handle
	stepVeth        = "veth"
	stepHostAddr    = "host-addr"
	stepSandboxAddr = "sandbox-addr"
	stepNFTables    = "nftables"
	stepReady       = "ready"
)

// setupSteps lists the steps for tests.
var setupSteps = []string{stepNetNS, stepSandboxNS, stepVeth, stepHostAddr, stepSandboxAddr, stepNFTables, stepReady}

// Setup creates the network of sandbox id with egress policy p and returns
// its handle. Called again for a sandbox that has a network, it applies p
// and returns the same handle. A network half-built before a restart is
// removed and built again. On any failure everything taken is given back
// (under context.WithoutCancel) and the block is freed; a pool with no free
// block gives an *ExhaustedError (errdefs.ErrResourceExhausted).
func (m *Manager) Setup(ctx context.Context, id string, p Policy) (h Handle, err error) {
	if id == "" || len(id) > 128 || !utf8.ValidString(id) {
		return Handle{}, fmt.Errorf("%w: sandbox id %q", errdefs.ErrInvalidArgument, id)
	}
	if err := p.Validate(); err != nil {
		return Handle{}, err
	}
	unlock := m.locks.lock(id)
	defer unlock()
	if err := ctx.Err(); err != nil {
		return Handle{}, err
	}
	lease, existed, err := m.alloc.Allocate(id)
	if err != nil {
		return Handle{}, fmt.Errorf("setup network %s: %w", id, err)
	}
	h = m.handleFor(lease)
	if existed && lease.Ready {
		if err := m.applyPolicy(ctx, h, p); err != nil {
			return Handle{}, err
		}
		return h, nil
	}
	if existed {
		m.log.WarnContext(ctx, "rebuilding half-built sandbox network", "sandbox_id", id, "netns", h.NetNS)
		if err := m.removeObjects(h); err != nil {
			return Handle{}, fmt.Errorf("setup network %s: clear leftovers: %w", id, err)
		}
	}

	var undo undoStack
	defer func() {
		if err == nil {
			return
		}
		uctx := context.WithoutCancel(ctx)
		if uerr := undo.run(uctx); uerr != nil {
			// Keep the lease: List still shows the leftovers and
			// Teardown can finish the job.
			m.log.ErrorContext(uctx, "undo failed sandbox network; lease kept", "sandbox_id", id, "err", uerr)
			err = errors.Join(err, uerr)
			return
		}
		if rerr := m.alloc.Release(id); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	if err := m.build(ctx, h, p, &undo); err != nil {
		return Handle{}, fmt.Errorf("setup network %s: %w", id, err)
	}
	if err := m.step(ctx, stepReady); err != nil {
		return Handle{}, fmt.Errorf("setup network %s: %w", id, err)
	}
	if err := m.alloc.MarkReady(id); err != nil {
		return Handle{}, fmt.Errorf("setup network %s: %w", id, err)
	}
	m.log.InfoContext(ctx, "sandbox network ready", "sandbox_id", id, "netns", h.NetNS, "sandbox_ip", h.SandboxIP)
	return h, nil
}

func (m *Manager) step(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if m.hook != nil {
		if err := m.hook(name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// build creates the objects of h, pushing an undo after each one.
func (m *Manager) build(ctx context.Context, h Handle, p Policy, undo *undoStack) error {
	if err := m.step(ctx, stepNetNS); err != nil {
		return err
	}
	ns, err := createNamedNS(h.NetNSPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	undo.push(func(context.Context) error { return deleteNamedNS(h.NetNSPath) })

	if err := m.step(ctx, stepSandboxNS); err != nil {
		return err
	}
	var sb *netlink.Handle
	if err := runInNS(ns, func() error {
		for _, kv := range [][2]string{
			{"net/ipv6/conf/all/disable_ipv6", "1"},
			{"net/ipv6/conf/default/disable_ipv6", "1"},
		} {
			if err := writeSysctl(kv[0], kv[1], true); err != nil {
				return err
			}
		}
		if err := writeSysctl("net/ipv4/ip_forward", "1", false); err != nil {
			return err
		}
		if err := createTap(TapName, m.cfg.TapOwner); err != nil {
			return err
		}
		var err error
		sb, err = netlink.NewHandle(unix.NETLINK_ROUTE, unix.NETLINK_NETFILTER)
		return err
	}); err != nil {
		return fmt.Errorf("prepare sandbox netns: %w", err)
	}
	defer sb.Close()

	if err := m.step(ctx, stepVeth); err != nil {
		return err
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: h.HostVeth}, PeerName: PeerName, PeerNamespace: netlink.NsFd(int(ns))}
	if err := m.host.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%w: create veth %s: an interface of that name exists", errdefs.ErrAlreadyExists, h.HostVeth)
		}
		return fmt.Errorf("create veth %s: %w", h.HostVeth, err)
	}
	undo.push(func(context.Context) error { return m.delHostVeth(h.HostVeth) })

	if err := m.step(ctx, stepHostAddr); err != nil {
		return err
	}
	if err := m.configureHostEnd(h); err != nil {
		return err
	}
	if err := m.step(ctx, stepSandboxAddr); err != nil {
		return err
	}
	if err := configureSandboxEnd(sb, h); err != nil {
		return err
	}

	if err := m.step(ctx, stepNFTables); err != nil {
		return err
	}
	c, err := m.nftIn(ns)
	if err != nil {
		return err
	}
	// One transaction, nothing deleted: the namespace is new, and a
	// deletion would make the commit wait for an RCU grace period.
	b := &batch{c: c}
	addNATTable(b, h.SandboxIP)
	addFilterTable(b, m.filterSpec(h, p), false)
	if err := b.flush(); err != nil {
		return fmt.Errorf("nftables in sandbox netns: %w", err)
	}
	return nil
}

// configureHostEnd gives the host end of the veth its address (which
// brings the route to the block) and brings it up.
func (m *Manager) configureHostEnd(h Handle) error {
	l, err := m.host.LinkByName(h.HostVeth)
	if err != nil {
		return fmt.Errorf("find veth %s: %w", h.HostVeth, err)
	}
	// No IPv6 link-local address: the sandbox side has no IPv6 at all.
	if err := m.host.LinkSetIP6AddrGenMode(l, 1 /* IN6_ADDR_GEN_MODE_NONE */); err != nil {
		m.log.Debug("veth without IPv6 addrgen mode", "veth", h.HostVeth, "err", err)
	}
	if err := m.host.AddrReplace(l, addr(h.HostIP, h.Block.Bits())); err != nil {
		return fmt.Errorf("address %s on %s: %w", h.HostIP, h.HostVeth, err)
	}
	if err := m.host.LinkSetUp(l); err != nil {
		return fmt.Errorf("up %s: %w", h.HostVeth, err)
	}
	return nil
}

// configureSandboxEnd addresses eth0, lo and tap0 (with the fixed gateway
// MAC) in the sandbox namespace and routes its traffic to the host end.
func configureSandboxEnd(sb *netlink.Handle, h Handle) error {
	up := func(name string, a *netlink.Addr) error {
		l, err := sb.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s in sandbox netns: %w", name, err)
		}
		if name == TapName {
			if err := sb.LinkSetHardwareAddr(l, GatewayMAC()); err != nil {
				return fmt.Errorf("mac of %s: %w", name, err)
			}
		}
		if a != nil {
			if err := sb.AddrReplace(l, a); err != nil {
				return fmt.Errorf("address %s on %s: %w", a.IPNet, name, err)
			}
		}
		if err := sb.LinkSetUp(l); err != nil {
			return fmt.Errorf("up %s: %w", name, err)
		}
		return nil
	}
	if err := up("lo", nil); err != nil {
		return err
	}
	if err := up(PeerName, addr(h.SandboxIP, h.Block.Bits())); err != nil {
		return err
	}
	if err := up(TapName, addr(gatewayIP, guestBits)); err != nil {
		return err
	}
	l, err := sb.LinkByName(PeerName)
	if err != nil {
		return fmt.Errorf("find %s in sandbox netns: %w", PeerName, err)
	}
	def := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IP(h.HostIP.AsSlice())}
	if err := sb.RouteReplace(def); err != nil {
		return fmt.Errorf("default route via %s: %w", h.HostIP, err)
	}
	return nil
}

func addr(a netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, 32)}}
}

// undoStack holds the undo of each acquired resource; run calls them once,
// newest first, and keeps going past failures.
type undoStack struct{ fns []func(context.Context) error }

func (u *undoStack) push(fn func(context.Context) error) { u.fns = append(u.fns, fn) }

func (u *undoStack) run(ctx context.Context) error {
	var errs []error
	for i := len(u.fns) - 1; i >= 0; i-- {
		if err := u.fns[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	u.fns = nil
	return errors.Join(errs...)
}
