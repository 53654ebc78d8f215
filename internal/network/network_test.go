package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

const (
	reachTimeout   = 5 * time.Second
	blockedTimeout = 700 * time.Millisecond // a dropped SYN: no answer at all
	guestPort      = 9000
)

// probe is one connection attempt and whether it must succeed. from is
// the peer name the server must report (prefix match), when set.
type probe struct {
	name  string
	addr  string
	reach bool
	from  string
}

// runProbes tries every probe from ns in parallel.
func runProbes(t *testing.T, ns netns.NsHandle, probes []probe) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]string, len(probes))
	for i, p := range probes {
		wg.Go(func() {
			timeout := blockedTimeout
			if p.reach {
				timeout = reachTimeout
			}
			c, greeting, err := dial(ns, p.addr, timeout)
			switch {
			case p.reach && err != nil:
				errs[i] = fmt.Sprintf("%s (%s): want reachable, got %v", p.name, p.addr, err)
			case !p.reach && err == nil:
				errs[i] = fmt.Sprintf("%s (%s): want blocked, got through: %q", p.name, p.addr, greeting)
			case p.reach && p.from != "":
				if _, peer, _ := strings.Cut(greeting, " "); !strings.HasPrefix(peer, p.from+":") {
					errs[i] = fmt.Sprintf("%s (%s): server saw %q, want source %s", p.name, p.addr, peer, p.from)
				}
			}
			if c != nil {
				c.Close()
			}
		})
	}
	wg.Wait()
	for _, e := range errs {
		if e != "" {
			t.Error(e)
		}
	}
}

func hp(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

func TestSandboxNetworking(t *testing.T) {
	w := newWorld(t)
	before := w.snapshot(t, nil)
	m := w.manager(t)
	ctx := context.Background()
	afterNew := w.snapshot(t, m)

	a, err := m.Setup(ctx, "sbx-alpha-0001", AllowAll())
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Setup(ctx, "sbx-bravo-0002", AllowAll())
	if err != nil {
		t.Fatal(err)
	}
	if a.Block == b.Block || a.NetNS == b.NetNS || a.HostVeth == b.HostVeth {
		t.Fatalf("sandboxes share objects: %+v %+v", a, b)
	}
	if !w.cfg.Pool.Contains(a.SandboxIP) || a.GuestIP != b.GuestIP || a.GuestIP.String() != "169.254.0.21" {
		t.Fatalf("addresses: %+v", a)
	}
	checkRootClean(t, w.cfg.Pool)
	if got := len(m.List()); got != 2 {
		t.Fatalf("List: %d handles, want 2", got)
	}

	ga, gb := newGuest(t, w.dir, a), newGuest(t, w.dir, b)
	listen(t, ga.ns.ns, "guest-a", hp("0.0.0.0", guestPort))
	listen(t, gb.ns.ns, "guest-b", hp("0.0.0.0", guestPort))

	// Guest A's view with egress allowed. Sources prove the NAT: the host
	// sees the sandbox address, the outside sees the uplink (masquerade).
	open := []probe{
		{"internet server", hp(allowedIP, 80), true, uplinkIP},
		{"second internet server", hp(deniedIP, 80), true, uplinkIP},
		{"host service", hostSvcAddr, true, a.SandboxIP.String()},
		{"host service on uplink address", hp(uplinkIP, 8081), true, a.SandboxIP.String()},
		{"metadata", hp(metadata, 80), false, ""},
		{"configured blocked cidr", hp(blockedIP, 80), false, ""},
		{"agent port on host address", hp(hostSvcIP, agentPort), false, ""},
		{"agent port on uplink address", hp(uplinkIP, agentPort), false, ""},
		{"agent port on own veth host end", hp(a.HostIP.String(), agentPort), false, ""},
		{"host service via own veth host end (pool)", hp(a.HostIP.String(), 8080), false, ""},
		{"other sandbox", hp(b.SandboxIP.String(), guestPort), false, ""},
		{"other sandbox veth host end", hp(b.HostIP.String(), 8080), false, ""},
		{"own sandbox address (hairpin)", hp(a.SandboxIP.String(), guestPort), false, ""},
	}
	t.Run("guest a allow all", func(t *testing.T) { runProbes(t, ga.ns.ns, open) })
	t.Run("guest b cannot reach a", func(t *testing.T) {
		runProbes(t, gb.ns.ns, []probe{
			{"internet server", hp(allowedIP, 80), true, uplinkIP},
			{"sandbox a", hp(a.SandboxIP.String(), guestPort), false, ""},
		})
	})
	t.Run("same gateway MAC everywhere", func(t *testing.T) {
		// What a restored snapshot remembers must hold in every sandbox.
		for _, g := range []*guest{ga, gb} {
			if got := g.gatewayMAC(t); got.String() != GatewayMAC().String() {
				t.Errorf("guest of %s resolved the gateway to %s, want %s", g.sandbox.SandboxID, got, GatewayMAC())
			}
		}
	})
	t.Run("spoofed guest source dropped", func(t *testing.T) {
		got := listenUDP(t, w.inet.ns, hp(allowedIP, 9999))
		if err := ga.ns.up("eth0", "192.0.2.99/32"); err != nil {
			t.Fatal(err)
		}
		send := func(src, msg string) {
			t.Helper()
			if err := sendUDP(ga.ns.ns, src, hp(allowedIP, 9999), msg); err != nil {
				t.Fatal(err)
			}
		}
		send("192.0.2.99", "spoofed")
		send(a.GuestIP.String(), "genuine")
		select {
		case m := <-got:
			if m != "genuine" {
				t.Fatalf("server got %q first", m)
			}
		case <-time.After(reachTimeout):
			t.Fatal("genuine datagram lost")
		}
		select {
		case m := <-got:
			t.Fatalf("server got %q", m)
		case <-time.After(blockedTimeout):
		}
	})
	t.Run("host reaches guests, outside does not", func(t *testing.T) {
		runProbes(t, w.host.ns, []probe{
			{"guest a from host", hp(a.SandboxIP.String(), guestPort), true, a.HostIP.String()},
			{"guest b from host", hp(b.SandboxIP.String(), guestPort), true, b.HostIP.String()},
		})
		runProbes(t, w.inet.ns, []probe{
			{"guest a from outside", hp(a.SandboxIP.String(), guestPort), false, ""},
		})
	})

	// B keeps a connection open while A's policy changes: it must survive.
	cb, _, err := dial(gb.ns.ns, hp(allowedIP, 80), reachTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()

	policies := []struct {
		name   string
		policy Policy
		probes []probe
	}{
		{"deny all", DenyAll(), []probe{
			{"internet server", hp(allowedIP, 80), false, ""},
			{"host service", hostSvcAddr, false, ""},
			{"host service on uplink address", hp(uplinkIP, 8081), false, ""},
		}},
		{"allow list", Policy{DefaultDeny: true, Allow: []netip.Prefix{netip.MustParsePrefix(allowedIP + "/32")}}, []probe{
			{"listed", hp(allowedIP, 80), true, uplinkIP},
			{"not listed", hp(deniedIP, 80), false, ""},
			{"host service", hostSvcAddr, false, ""},
		}},
		{"deny list", Policy{Deny: []netip.Prefix{netip.MustParsePrefix(deniedIP + "/32")}}, []probe{
			{"not listed", hp(allowedIP, 80), true, uplinkIP},
			{"listed", hp(deniedIP, 80), false, ""},
			{"host service", hostSvcAddr, true, ""},
		}},
		{"allow beats deny", Policy{
			Deny:  []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")},
			Allow: []netip.Prefix{netip.MustParsePrefix("198.51.100.8/29"), netip.MustParsePrefix(allowedIP + "/32")},
		}, []probe{
			{"allowed inside denied", hp(allowedIP, 80), true, uplinkIP},
			{"denied", hp(deniedIP, 80), false, ""},
			{"host service", hostSvcAddr, false, ""},
		}},
		{"allow cannot open always-blocked", Policy{DefaultDeny: true, Allow: []netip.Prefix{
			netip.MustParsePrefix(metadata + "/32"), netip.MustParsePrefix(blockedIP + "/32"),
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("0.0.0.0/0"),
		}}, []probe{
			{"metadata", hp(metadata, 80), false, ""},
			{"blocked cidr", hp(blockedIP, 80), false, ""},
			{"other sandbox", hp(b.SandboxIP.String(), guestPort), false, ""},
			{"agent port", hp(hostSvcIP, agentPort), false, ""},
			{"everything else", hp(allowedIP, 80), true, uplinkIP},
		}},
		{"back to allow all", AllowAll(), open},
	}
	for _, tc := range policies {
		t.Run("policy "+tc.name, func(t *testing.T) {
			if err := m.UpdatePolicy(ctx, a, tc.policy); err != nil {
				t.Fatal(err)
			}
			runProbes(t, ga.ns.ns, tc.probes)
			// Inbound from the host works whatever the egress policy.
			runProbes(t, w.host.ns, []probe{{"guest a from host", hp(a.SandboxIP.String(), guestPort), true, a.HostIP.String()}})
			if err := echo(cb, reachTimeout); err != nil {
				t.Errorf("sandbox b's open connection broke when a's policy changed: %v", err)
			}
		})
	}

	t.Run("update cuts open connection", func(t *testing.T) {
		c, _, err := dial(ga.ns.ns, hp(allowedIP, 80), reachTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := echo(c, reachTimeout); err != nil {
			t.Fatal(err)
		}
		if err := m.UpdatePolicy(ctx, a, DenyAll()); err != nil {
			t.Fatal(err)
		}
		if err := echo(c, time.Second); err == nil {
			t.Error("open connection still carries data after deny all")
		}
		if err := m.UpdatePolicy(ctx, a, AllowAll()); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("setup again is idempotent", func(t *testing.T) {
		again, err := m.Setup(ctx, a.SandboxID, DenyAll())
		if err != nil {
			t.Fatal(err)
		}
		if !again.sameObjects(a) {
			t.Fatalf("second Setup gave %+v, want %+v", again, a)
		}
		runProbes(t, ga.ns.ns, []probe{{"internet server", hp(allowedIP, 80), false, ""}})
	})

	for _, h := range []Handle{a, b} {
		if err := m.Teardown(ctx, h); err != nil {
			t.Fatal(err)
		}
		if err := m.Teardown(ctx, h); err != nil {
			t.Fatalf("second teardown: %v", err)
		}
	}
	if err := m.UpdatePolicy(ctx, a, AllowAll()); err == nil {
		t.Error("UpdatePolicy after Teardown succeeded")
	}
	checkNoLeak(t, afterNew, w.snapshot(t, m))
	if err := m.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	checkNoLeak(t, before, w.snapshot(t, m))
	checkRootClean(t, w.cfg.Pool)
}

func TestHostAccessOff(t *testing.T) {
	w := newWorld(t)
	w.cfg.AllowHostAccess = false
	m := w.manager(t)
	ctx := context.Background()
	h, err := m.Setup(ctx, "sbx-nohost", AllowAll())
	if err != nil {
		t.Fatal(err)
	}
	g := newGuest(t, w.dir, h)
	runProbes(t, g.ns.ns, []probe{
		{"host service", hostSvcAddr, false, ""},
		{"host service on uplink address", hp(uplinkIP, 8081), false, ""},
		{"internet server", hp(allowedIP, 80), true, uplinkIP},
	})
	if err := m.Teardown(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := m.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
}
