package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// inNetns runs fn on an OS thread switched into the named namespace;
// sockets fn creates belong to that namespace for good.
func inNetns(t testing.TB, name string, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		target, err := os.Open("/var/run/netns/" + name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("%v; leave netns: %w", ferr, err) // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// TestAgentNetworking checks sandbox networking end to end with real
// guests. The test builds a small world in namespaces it owns: the
// agent's host side (uplink up0) and an "internet" namespace behind it
// with web servers on 198.51.100.10 and .20 and on the metadata address.
// A guest reaches the internet, but not a denied CIDR, the metadata
// address, another sandbox or the host's own addresses (where the agent
// listens); a deny-all guest reaches nothing; the host reaches a guest.
func TestAgentNetworking(t *testing.T) {
	e := newAgentEnv(t)
	inet := e.prefix + "-inet"
	agentIP(t, "netns", "add", inet)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", inet).Run() })
	agentIP(t, "-n", e.hostNS, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", inet)
	agentIP(t, "-n", e.hostNS, "addr", "add", "203.0.113.1/24", "dev", "up0")
	agentIP(t, "-n", e.hostNS, "link", "set", "up0", "up")
	agentIP(t, "-n", inet, "addr", "add", "203.0.113.2/24", "dev", "eth0")
	agentIP(t, "-n", inet, "link", "set", "eth0", "up")
	agentIP(t, "-n", inet, "link", "set", "lo", "up")
	for _, a := range []string{"198.51.100.10/32", "198.51.100.20/32", "169.254.169.254/32"} {
		agentIP(t, "-n", inet, "addr", "add", a, "dev", "lo")
	}
	agentIP(t, "-n", e.hostNS, "route", "add", "198.51.100.0/24", "via", "203.0.113.2")
	agentIP(t, "-n", e.hostNS, "route", "add", "169.254.169.254/32", "via", "203.0.113.2")

	serve := func(ns, addr string) {
		var ln net.Listener
		if err := inNetns(t, ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s", r.Host)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	serve(inet, "0.0.0.0:80")
	// A service on the host side's own address, on the agent's port.
	const agentPort = "50777"
	serve(e.hostNS, "203.0.113.1:"+agentPort)

	before := e.resources()
	a := e.startInProcess(t, "AGENT_HOST_INTERFACE=up0", "AGENT_LISTEN_ADDR=127.0.0.1:"+agentPort)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	open := a.create(ctx, &pb.CreateSandboxRequest{Template: "minimal", MemoryMb: 128,
		Network: &pb.NetworkPolicy{Egress: pb.NetworkPolicy_EGRESS_ALLOW_ALL, DenyCidrs: []string{"198.51.100.20/32"}}})
	closed := a.create(ctx, &pb.CreateSandboxRequest{Template: "minimal", MemoryMb: 128,
		Network: &pb.NetworkPolicy{Egress: pb.NetworkPolicy_EGRESS_DENY_ALL}})

	// The closed sandbox serves HTTP on :8000 (busybox httpd), so there is
	// something to reach from the host and from the other sandbox.
	a.sh(ctx, closed.GetSandboxId(), "mkdir -p /tmp/www && echo guest-web > /tmp/www/index.html && httpd -p 8000 -h /tmp/www")

	// Debian's busybox-static 1.35 wget segfaults when given -T (on any
	// machine, not only in the guest), and without -T a blackholed
	// address would hang it, so the guest speaks HTTP/1.0 through nc.
	fetch := func(sid, url string) (string, bool) {
		hostPort := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
		host, port, ok := strings.Cut(hostPort, ":")
		if !ok {
			port = "80"
		}
		r, err := a.exec(ctx, sid, "/bin/sh", "-c",
			`printf 'GET / HTTP/1.0\r\nHost: x\r\n\r\n' | nc -w 3 `+host+` `+port)
		if err != nil {
			t.Fatalf("exec nc in %s: %v", sid, err)
		}
		_, body, found := strings.Cut(r.Stdout, "\r\n\r\n")
		if !found {
			t.Logf("%s from %s: exit %d (%s) %q %q", url, sid, r.Exit.GetExitCode(), r.Exit.GetStatus(), r.Stdout, r.Stderr)
		}
		return body, found
	}
	tests := []struct {
		name string
		sid  string
		url  string
		ok   bool
	}{
		{"internet", open.GetSandboxId(), "http://198.51.100.10/", true},
		{"denied cidr", open.GetSandboxId(), "http://198.51.100.20/", false},
		{"metadata", open.GetSandboxId(), "http://169.254.169.254/", false},
		{"other sandbox", open.GetSandboxId(), "http://" + closed.GetHostIp() + ":8000/", false},
		{"agent port on the host", open.GetSandboxId(), "http://203.0.113.1:" + agentPort + "/", false},
		{"deny-all egress", closed.GetSandboxId(), "http://198.51.100.10/", false},
		{"deny-all to the host", closed.GetSandboxId(), "http://203.0.113.1:" + agentPort + "/", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, ok := fetch(tt.sid, tt.url)
			if ok != tt.ok {
				t.Fatalf("%s from %s: reached=%v (%q), want %v", tt.url, tt.sid, ok, out, tt.ok)
			}
			if ok && !strings.HasPrefix(out, "hello from") {
				t.Fatalf("unexpected answer %q", out)
			}
		})
	}
	t.Run("host reaches a guest", func(t *testing.T) {
		var conn net.Conn
		err := inNetns(t, e.hostNS, func() (err error) {
			conn, err = net.DialTimeout("tcp", closed.GetHostIp()+":8000", 5*time.Second)
			return err
		})
		var body string
		if err == nil {
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(conn, "GET /index.html HTTP/1.0\r\nHost: guest\r\n\r\n")
			b, _ := io.ReadAll(conn)
			_, body, _ = strings.Cut(string(b), "\r\n\r\n")
		}
		if err != nil || strings.TrimSpace(body) != "guest-web" {
			t.Fatalf("host to guest: %q %v", body, err)
		}
	})
	for _, s := range []*pb.Sandbox{open, closed} {
		if _, err := a.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: s.GetSandboxId()}); err != nil {
			t.Fatal(err)
		}
	}
	a.stop()
	e.assertSameResources(t, before)
}
