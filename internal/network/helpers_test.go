package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
)

// requireNetAdmin skips a test that needs root, /dev/net/tun and
// nftables, with the reason; CI runs as root, so CI skips nothing.
func requireNetAdmin(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces, TAP, nftables)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		tb.Skipf("needs /dev/net/tun: %v", err)
	}
}

// testLogger routes logs to t.Log.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testlog.Writer(tb), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testNS is a namespace the test created; it is deleted at cleanup.
type testNS struct {
	name, path string
	ns         netns.NsHandle
	nl         *netlink.Handle
}

func newTestNS(tb testing.TB, dir, name string) *testNS {
	tb.Helper()
	p := filepath.Join(dir, name)
	ns, err := createNamedNS(p)
	if err != nil {
		tb.Fatalf("create test netns %s: %v", name, err)
	}
	nl, err := netlinkIn(ns)
	if err != nil {
		tb.Fatal(err)
	}
	t := &testNS{name: name, path: p, ns: ns, nl: nl}
	tb.Cleanup(func() {
		nl.Close()
		_ = ns.Close()
		if err := deleteNamedNS(p); err != nil {
			tb.Errorf("delete test netns: %v", err)
		}
	})
	if err := t.up("lo"); err != nil {
		tb.Fatal(err)
	}
	return t
}

func (t *testNS) up(name string, addrs ...string) error {
	l, err := t.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("%s: find %s: %w", t.name, name, err)
	}
	for _, a := range addrs {
		p := netip.MustParsePrefix(a)
		if err := t.nl.AddrAdd(l, addr(p.Addr(), p.Bits())); err != nil {
			return fmt.Errorf("%s: addr %s on %s: %w", t.name, a, name, err)
		}
	}
	if err := t.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s: up %s: %w", t.name, name, err)
	}
	return nil
}

func (t *testNS) defaultRoute(tb testing.TB, dev, gw string) {
	tb.Helper()
	l, err := t.nl.LinkByName(dev)
	if err != nil {
		tb.Fatal(err)
	}
	if err := t.nl.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
		tb.Fatalf("%s: default route: %v", t.name, err)
	}
}

// addAddrs adds addresses to an existing interface (lo holds the test
// servers' addresses: this kernel may lack the dummy driver).
func (t *testNS) addAddrs(tb testing.TB, name string, addrs ...string) {
	tb.Helper()
	if err := t.up(name, addrs...); err != nil {
		tb.Fatal(err)
	}
}

// linkNames lists the interfaces in the namespace.
func (t *testNS) linkNames(tb testing.TB) []string {
	tb.Helper()
	ls, err := t.nl.LinkList()
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		out = append(out, l.Attrs().Name)
	}
	slices.Sort(out)
	return out
}

// tables lists the nftables tables in the namespace as "family name".
func (t *testNS) tables(tb testing.TB) []string {
	tb.Helper()
	return nftTables(tb, t.ns)
}

func nftTables(tb testing.TB, ns netns.NsHandle) []string {
	tb.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		tb.Fatal(err)
	}
	ts, err := c.ListTables()
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, x := range ts {
		out = append(out, fmt.Sprintf("%d %s", x.Family, x.Name))
	}
	slices.Sort(out)
	return out
}

// listen opens a TCP listener inside the namespace and serves: each
// connection first gets "<name> <remote addr>\n", then an echo.
func listen(tb testing.TB, ns netns.NsHandle, name, address string) string {
	tb.Helper()
	var ln net.Listener
	if err := runInNS(ns, func() (err error) {
		ln, err = net.Listen("tcp4", address)
		return err
	}); err != nil {
		tb.Fatalf("listen %s: %v", address, err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns { // some peers vanish without a FIN
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr())
				_, _ = io.Copy(c, c)
			})
		}
	})
	return ln.Addr().String()
}

// listenUDP receives datagrams inside ns and hands their payloads over.
func listenUDP(tb testing.TB, ns netns.NsHandle, address string) <-chan string {
	tb.Helper()
	var pc net.PacketConn
	if err := runInNS(ns, func() (err error) {
		pc, err = net.ListenPacket("udp4", address)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	ch := make(chan string, 16)
	done := make(chan struct{})
	tb.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

// sendUDP sends one datagram from src (an address of ns) to address.
func sendUDP(ns netns.NsHandle, src, address, msg string) error {
	return runInNS(ns, func() error {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 0)), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(address)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(msg))
		return err
	})
}

// dial connects from inside ns (the socket is made there) and reads the
// server's greeting.
func dial(ns netns.NsHandle, address string, timeout time.Duration) (net.Conn, string, error) {
	var c net.Conn
	err := runInNS(ns, func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp4", address)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return nil, "", fmt.Errorf("greeting: %w", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, strings.TrimSpace(line), nil
}

// echo checks that the connection still carries data both ways.
func echo(c net.Conn, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return fmt.Errorf("echo got %q", line)
	}
	return nil
}

// guest emulates a VM behind a sandbox's TAP. A VMM holds the TAP's file
// descriptor and moves Ethernet frames between it and the guest kernel's
// virtio NIC. Here the "guest kernel" is the Linux stack of a namespace the
// test creates: its NIC is a second TAP (eth0, 169.254.0.21/30 via
// 169.254.0.22, exactly what the kernel ip= argument configures), and a
// relay copies frames between the sandbox's tap0 (attached with TUNSETIFF
// as Firecracker and QEMU do) and that NIC. Packets thus take the real path:
// guest stack -> tap0 -> sandbox namespace (filter, NAT) -> veth -> host.
type guest struct {
	ns      *testNS
	sandbox Handle
}

func newGuest(tb testing.TB, dir string, h Handle) *guest {
	tb.Helper()
	sbNS, err := netns.GetFromPath(h.NetNSPath)
	if err != nil {
		tb.Fatal(err)
	}
	defer sbNS.Close()
	var vmm *os.File
	if err := runInNS(sbNS, func() (err error) {
		vmm, err = openTap(h.Tap)
		return err
	}); err != nil {
		tb.Fatalf("attach to %s as the VMM: %v", h.Tap, err)
	}
	g := &guest{ns: newTestNS(tb, dir, "g-"+shortID(h.SandboxID)), sandbox: h}
	var nic *os.File
	if err := runInNS(g.ns.ns, func() (err error) {
		nic, err = openTap("eth0")
		return err
	}); err != nil {
		tb.Fatalf("guest nic: %v", err)
	}
	ip, gw, mask := Guest()
	bits, _ := mask.Size()
	if err := g.ns.up("eth0", netip.PrefixFrom(ip, bits).String()); err != nil {
		tb.Fatal(err)
	}
	g.ns.defaultRoute(tb, "eth0", gw.String())
	var wg sync.WaitGroup
	relay := func(dst, src *os.File) {
		buf := make([]byte, 65536)
		for {
			n, err := src.Read(buf)
			if err != nil {
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil && errors.Is(err, os.ErrClosed) {
				return
			}
		}
	}
	wg.Go(func() { relay(nic, vmm) })
	wg.Go(func() { relay(vmm, nic) })
	tb.Cleanup(func() { vmm.Close(); nic.Close(); wg.Wait() })
	return g
}

// gatewayMAC is what the guest's ARP cache says the gateway's MAC is.
func (g *guest) gatewayMAC(tb testing.TB) net.HardwareAddr {
	tb.Helper()
	_, gw, _ := Guest()
	ns, err := g.ns.nl.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		tb.Fatal(err)
	}
	for _, n := range ns {
		if n.IP.Equal(gw.AsSlice()) && len(n.HardwareAddr) > 0 {
			return n.HardwareAddr
		}
	}
	tb.Fatalf("guest has no ARP entry for %s", gw)
	return nil
}

// openTap attaches to the TAP name in the calling thread's namespace,
// making a transient one if none exists, and returns it as a pollable file.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var req ifreq
	copy(req.name[:unix.IFNAMSIZ-1], name)
	req.flags = unix.IFF_TAP | unix.IFF_NO_PI
	if err := ioctl(fd, unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "tap-"+name), nil
}
