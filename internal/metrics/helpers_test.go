package metrics

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn-sandbox/internal/cgroup"
	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates cgroups and network namespaces")
	}
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testCgroups returns a cgroup Manager with a private parent, removed (with
// whatever is left in it) when the test ends.
func testCgroups(t *testing.T) *cgroup.Manager {
	t.Helper()
	requireRoot(t)
	m, err := cgroup.New(cgroup.Config{Parent: "wrenn-mtest-" + randHex(t, 4), Logger: testLogger(t)})
	if errors.Is(err, cgroup.ErrUnsupported) {
		t.Skipf("no usable cgroup hierarchy: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		hs, _ := m.List(ctx)
		for _, h := range hs {
			_ = m.Kill(ctx, h)
			if err := m.Delete(ctx, h); err != nil {
				t.Errorf("cleanup cgroup %s: %v", h.SandboxID, err)
			}
		}
		if err := m.RemoveParent(ctx); err != nil {
			t.Errorf("cleanup cgroup parent: %v", err)
		}
	})
	return m
}

// busyScript, run in a sandbox group, burns some CPU and holds about 2 MB,
// all after it was moved in (on v1 earlier charges stay behind).
const busyScript = `x=$(head -c 2000000 /dev/zero | tr '\0' a); i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done`

// startIn starts `sh`, moves it into h, then lets it run work and waits
// until it printed "ready"; it holds its memory until cleanup, when it is
// killed and reaped.
func startIn(t *testing.T, m *cgroup.Manager, h cgroup.Handle, work string) {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), "sh", "-c", "read _; "+work+"; echo ready; read _")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := m.AddProcess(context.Background(), h, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, "\n"); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if strings.TrimSpace(s) != "ready" {
			t.Fatalf("work said %q", s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("work did not finish in 30s")
	}
}

// testNet is a network namespace the test created, holding a veth pair
// (host, peer) and a raw packet socket on each end. Frames sent on one end
// arrive on the other and never leave the namespace.
type testNet struct {
	path       string // /proc/self/fd/N of the namespace handle
	host, peer string
	fds        map[string]int
	idx        map[string]int
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	requireRoot(t)
	suffix := randHex(t, 3)
	tn := &testNet{host: "wrh" + suffix, peer: "wrp" + suffix, fds: map[string]int{}, idx: map[string]int{}}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // unshares this thread into a fresh namespace
	if err != nil {
		t.Skipf("cannot create a network namespace: %v", err)
	}
	setupErr := tn.setup()
	if err := netns.Set(orig); err != nil {
		// The thread stays locked (and is discarded) if we cannot go back.
		runtime.LockOSThread()
		t.Fatalf("return to the original netns: %v", err)
	}
	t.Cleanup(func() {
		for _, fd := range tn.fds {
			unix.Close(fd)
		}
		ns.Close() // last reference: the namespace and its veths go away
	})
	if setupErr != nil {
		t.Fatalf("set up test netns: %v", setupErr)
	}
	tn.path = fmt.Sprintf("/proc/self/fd/%d", int(ns))
	return tn
}

// setup runs on a thread inside the new namespace.
func (tn *testNet) setup() error {
	// No IPv6 autoconfiguration chatter on the test links.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/all/disable_ipv6", []byte("1"), 0)
	la := netlink.NewLinkAttrs()
	la.Name = tn.host
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: tn.peer}); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	for _, name := range []string{tn.host, tn.peer} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		tn.fds[name] = fd
		// Straight to the driver: no dependency on when the queue is attached.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return fmt.Errorf("qdisc bypass: %w", err)
		}
		tn.idx[name] = l.Attrs().Index
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: l.Attrs().Index}); err != nil {
			return fmt.Errorf("bind packet socket: %w", err)
		}
	}
	// The end brought up first had no carrier then; the kernel attaches its
	// queue only when link watch sees the carrier (asynchronously), and
	// drops frames until then. Wait for both ends to be operationally up.
	deadline := time.Now().Add(5 * time.Second)
	for _, name := range []string{tn.host, tn.peer} {
		for {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if l.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not up: %s", name, l.Attrs().OperState)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// send writes n broadcast Ethernet frames of size bytes (header included,
// local experimental EtherType) on interface from, and returns the bytes
// written.
func (tn *testNet) send(t *testing.T, from string, n, size int) uint64 {
	t.Helper()
	frame := make([]byte, size)
	copy(frame[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(frame[6:12], []byte{0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(frame[12:14], 0x88b5)
	for range n {
		if _, err := unix.Write(tn.fds[from], frame); err != nil {
			t.Fatalf("send on %s: %v", from, err)
		}
	}
	return uint64(n * size)
}
