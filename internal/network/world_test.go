package network

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// The test world. Everything lives in namespaces the test creates:
//
//	inet ns  "the internet": lo holds 198.51.100.10 (allowed),
//	         .20 (denied by some policies), .30 (Config.BlockedCIDRs) and
//	         169.254.169.254 (metadata), each serving TCP :80; it routes the
//	         pool back to the host so outside-in attempts are real.
//	   | veth 203.0.113.2/24 <-> 203.0.113.1/24 "up0" (the uplink)
//	host ns  the agent's host side (Config.HostNS): lo holds 192.0.2.10
//	         with a service on :8080; a service on :8081 and the "agent"
//	         on :50051 (protected) listen on every host address; sandbox veths appear here.
//	sandbox namespaces (made by the manager), each with a guest namespace
//	behind its TAP (see guest).
const (
	hostSvcIP   = "192.0.2.10"
	uplinkIP    = "203.0.113.1"
	allowedIP   = "198.51.100.10"
	deniedIP    = "198.51.100.20"
	blockedIP   = "198.51.100.30"
	metadata    = "169.254.169.254"
	agentPort   = 50051
	testPrefix  = "wt"
	hostSvcAddr = hostSvcIP + ":8080"
)

type world struct {
	dir        string
	host, inet *testNS
	cfg        Config
}

func newWorld(tb testing.TB) *world {
	tb.Helper()
	requireNetAdmin(tb)
	dir := tb.TempDir()
	w := &world{dir: dir}
	tb.Cleanup(func() { // a failed test may leave the manager's namespaces
		ents, _ := filepath.Glob(filepath.Join(dir, testPrefix+"-*"))
		for _, p := range ents {
			_ = deleteNamedNS(p)
		}
	})
	w.host = newTestNS(tb, dir, "host")
	w.inet = newTestNS(tb, dir, "inet")
	if err := w.host.nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(w.inet.ns))}); err != nil {
		tb.Fatal(err)
	}
	if err := w.host.up("up0", uplinkIP+"/24"); err != nil {
		tb.Fatal(err)
	}
	if err := w.inet.up("eth0", "203.0.113.2/24"); err != nil {
		tb.Fatal(err)
	}
	w.host.defaultRoute(tb, "up0", "203.0.113.2")
	w.host.addAddrs(tb, "lo", hostSvcIP+"/32")
	w.inet.addAddrs(tb, "lo", allowedIP+"/32", deniedIP+"/32", blockedIP+"/32", metadata+"/32")
	up, err := w.inet.nl.LinkByName("eth0")
	if err != nil {
		tb.Fatal(err)
	}
	pool := DefaultPool()
	if err := w.inet.nl.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: prefixNet(pool), Gw: netip.MustParseAddr(uplinkIP).AsSlice()}); err != nil {
		tb.Fatal(err)
	}
	for _, ip := range []string{allowedIP, deniedIP, blockedIP, metadata} {
		listen(tb, w.inet.ns, "inet", ip+":80")
	}
	listen(tb, w.host.ns, "host-svc", hostSvcAddr)
	listen(tb, w.host.ns, "agent", ":50051")
	listen(tb, w.host.ns, "host-any", ":8081")

	w.cfg = Config{
		Pool:               pool,
		StateDir:           tb.TempDir(),
		HostNS:             w.host.path,
		NetNSDir:           dir,
		NamePrefix:         testPrefix,
		Uplink:             "up0",
		AllowHostAccess:    true,
		ProtectedHostPorts: []uint16{agentPort},
		BlockedCIDRs:       []netip.Prefix{netip.MustParsePrefix(blockedIP + "/32")},
		Logger:             testLogger(tb),
	}
	return w
}

func (w *world) manager(tb testing.TB) *Manager {
	tb.Helper()
	m, err := New(w.cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(m.Close)
	return m
}

// snapshot is everything a leak would show: the manager's namespaces, the
// host side's interfaces and tables, and the leases.
type snapshot struct {
	netns  []string
	links  []string
	tables []string
	leases int
}

func (w *world) snapshot(tb testing.TB, m *Manager) snapshot {
	tb.Helper()
	s := snapshot{links: w.host.linkNames(tb), tables: w.host.tables(tb)}
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), testPrefix+"-") {
			s.netns = append(s.netns, e.Name())
		}
	}
	if m != nil {
		s.leases = len(m.List())
	}
	return s
}

func (s snapshot) equal(o snapshot) bool {
	return slices.Equal(s.netns, o.netns) && slices.Equal(s.links, o.links) &&
		slices.Equal(s.tables, o.tables) && s.leases == o.leases
}

func checkNoLeak(tb testing.TB, before, after snapshot) {
	tb.Helper()
	if !before.equal(after) {
		tb.Errorf("leak:\nbefore %+v\nafter  %+v", before, after)
	}
}

// checkRootClean fails if any pool address shows up in the namespace the
// test process runs in.
func checkRootClean(tb testing.TB, pool netip.Prefix) {
	tb.Helper()
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		tb.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && pool.Contains(ip.Unmap()) {
			tb.Errorf("pool address %s on %s in the root namespace", a.IPNet, a.Label)
		}
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}
