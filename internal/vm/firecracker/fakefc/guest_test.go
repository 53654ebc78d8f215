package fakefc_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fakefc"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
)

// bootWithGuest boots an in-process fake with envd and a vsock device.
func bootWithGuest(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, fakefc.Config{EnvdPath: envdBin})
	e.mustDo(t, e.configure()...)
	e.mustDo(t, call{"PUT", "/vsock", fcapi.Vsock{GuestCID: 3, UDSPath: e.path("v.sock")}})
	e.mustDo(t, call{"PUT", "/network-interfaces/eth0", fcapi.NetworkInterface{IfaceID: "eth0", HostDevName: "tap-a"}})
	e.mustDo(t, call{"PUT", "/actions", fcapi.InstanceActionInfo{ActionType: "InstanceStart"}})
	return e
}

// connect sends a raw hybrid-vsock command and returns the answer line
// ("" when the VMM closed the connection without one) and the reader.
func connect(t *testing.T, uds, cmd string, timeout time.Duration) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, cmd); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return c, br, ""
	}
	_ = c.SetDeadline(time.Time{})
	return c, br, line
}

// waitGuest retries CONNECT until envd answers (it starts after
// InstanceStart returns, as a guest boots after the VMM says it started).
func waitGuest(t *testing.T, uds string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, br, line := connect(t, uds, "CONNECT 49983\n", 3*time.Second)
		if line != "" {
			return c, br, line
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("envd never answered through the vsock bridge")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// health sends GET /health over an established bridge and returns the
// status code.
func health(c net.Conn, br *bufio.Reader, timeout time.Duration) (int, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: envd\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestVsockBridgeToEnvd(t *testing.T) {
	e := bootWithGuest(t)
	c, br, line := waitGuest(t, e.path("v.sock"))
	n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(line, "OK "), "\n"), 10, 32)
	if !strings.HasPrefix(line, "OK ") || err != nil || n < 1<<30 {
		t.Fatalf("answer %q", line)
	}
	if st, err := health(c, br, 5*time.Second); err != nil || st != http.StatusNoContent {
		t.Fatalf("health over the bridge: %d %v", st, err)
	}
	// Host ports go round-robin upwards.
	c2, br2, line2 := connect(t, e.path("v.sock"), "connect 49983\n", 3*time.Second)
	if line2 == "" {
		t.Fatal("lower-case connect refused")
	}
	n2, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(line2, "OK "), "\n"), 10, 32)
	if n2 <= n {
		t.Fatalf("host port %d after %d", n2, n)
	}
	if st, err := health(c2, br2, 5*time.Second); err != nil || st != http.StatusNoContent {
		t.Fatalf("second bridge: %d %v", st, err)
	}
}

func TestVsockRefusals(t *testing.T) {
	e := bootWithGuest(t)
	waitGuest(t, e.path("v.sock"))
	for _, cmd := range []string{
		"CONNECT 52\n",         // nobody listens on that guest port
		"HELLO 49983\n",        // not a connect command
		"CONNECT\n",            // no port
		"CONNECT 49983x\n",     // garbage port
		"CONNECT  49983\n",     // two spaces
		"CONNECT 4294967296\n", // over u32
		strings.Repeat("C", 40) + "\n",
	} {
		t.Run(strings.TrimSpace(cmd), func(t *testing.T) {
			_, _, line := connect(t, e.path("v.sock"), cmd, 3*time.Second)
			if line != "" {
				t.Fatalf("%q answered %q, want a close without OK", cmd, line)
			}
		})
	}
}

func TestPauseStopsGuest(t *testing.T) {
	ctx := context.Background()
	e := bootWithGuest(t)
	c, br, _ := waitGuest(t, e.path("v.sock"))
	if err := e.c.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st := e.state(t); st != fcapi.StatePaused {
		t.Fatalf("state %q", st)
	}
	// An open stream stalls: envd is stopped.
	if _, err := health(c, br, 500*time.Millisecond); err == nil {
		t.Fatal("envd answered while the VM was paused")
	}
	// A new connection gets no OK: the paused guest cannot accept.
	start := time.Now()
	if _, _, line := connect(t, e.path("v.sock"), "CONNECT 49983\n", 5*time.Second); line != "" {
		t.Fatalf("paused VM answered %q", line)
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Fatalf("connection closed after %s, before the guest timeout", d)
	}
	if err := e.c.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	// The stalled request was answered once the guest ran again.
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("stalled request after resume: %v %v", resp, err)
	}
	resp.Body.Close()
	c2, br2, _ := waitGuest(t, e.path("v.sock"))
	if st, err := health(c2, br2, 5*time.Second); err != nil || st != http.StatusNoContent {
		t.Fatalf("after resume: %d %v", st, err)
	}
}

func TestSnapshotAndLoad(t *testing.T) {
	ctx := context.Background()
	e := bootWithGuest(t)
	c, br, _ := waitGuest(t, e.path("v.sock"))
	if err := e.c.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	snap := shortDir(t)
	state, mem := filepath.Join(snap, "vmstate"), filepath.Join(snap, "mem")
	if err := e.c.CreateSnapshot(ctx, fcapi.SnapshotCreateParams{SnapshotPath: state, MemFilePath: mem}); err != nil {
		t.Fatal(err)
	}
	// TRANSPORT_RESET: the open vsock stream is gone.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("stream after snapshot: %v, want EOF", err)
	}
	if fi, err := os.Stat(mem); err != nil || fi.Size() != 128<<20 {
		t.Fatalf("memory file: %v %v", fi, err)
	}
	if st := e.state(t); st != fcapi.StatePaused {
		t.Fatalf("state after snapshot %q", st)
	}

	cases := []struct {
		name    string
		resume  bool
		mutate  func(p *fcapi.SnapshotLoadParams, e2 *env)
		fault   string
		wantTap string
	}{
		{name: "resume with overrides", resume: true, wantTap: "tap-b", mutate: func(p *fcapi.SnapshotLoadParams, e2 *env) {
			p.NetworkOverrides = []fcapi.NetworkOverride{{IfaceID: "eth0", HostDevName: "tap-b"}}
		}},
		{name: "stay paused", wantTap: "tap-a"},
		{name: "unknown iface override", fault: "no interface \"eth9\"", mutate: func(p *fcapi.SnapshotLoadParams, e2 *env) {
			p.NetworkOverrides = []fcapi.NetworkOverride{{IfaceID: "eth9", HostDevName: "tap-b"}}
		}},
		{name: "vsock override path taken", fault: "Address in use", mutate: func(p *fcapi.SnapshotLoadParams, e2 *env) {
			_ = os.WriteFile(p.VsockOverride.UDSPath, nil, 0o600)
		}},
		{name: "memory file of another snapshot", fault: "does not belong", mutate: func(p *fcapi.SnapshotLoadParams, e2 *env) {
			// Same size, header naming another snapshot.
			other := filepath.Join(e2.dir, "othermem")
			f, _ := os.Open(mem)
			hdr := make([]byte, 64)
			_, _ = io.ReadFull(f, hdr)
			f.Close()
			hdr[len("WRENN-FAKE-FC-MEM/1 ")] ^= 1
			_ = os.WriteFile(other, hdr, 0o600)
			_ = os.Truncate(other, 128<<20)
			p.MemBackend.BackendPath = other
		}},
		{name: "uffd backend", fault: "Uffd", mutate: func(p *fcapi.SnapshotLoadParams, e2 *env) {
			p.MemBackend.BackendType = fcapi.BackendUffd
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e2 := newEnv(t, fakefc.Config{EnvdPath: envdBin})
			p := fcapi.SnapshotLoadParams{
				SnapshotPath:  state,
				MemBackend:    &fcapi.MemoryBackend{BackendType: fcapi.BackendFile, BackendPath: mem},
				ResumeVM:      tc.resume,
				VsockOverride: &fcapi.VsockOverride{UDSPath: e2.path("v2.sock")},
			}
			if tc.mutate != nil {
				tc.mutate(&p, e2)
			}
			err := e2.c.LoadSnapshot(ctx, p)
			if tc.fault != "" {
				if ae := apiErr(err); ae == nil || !strings.Contains(ae.FaultMessage, tc.fault) {
					t.Fatalf("want fault %q, got %v", tc.fault, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := e2.c.GetVMConfig(ctx)
			if err != nil || cfg.Vsock == nil || cfg.Vsock.UDSPath != e2.path("v2.sock") || len(cfg.NetworkInterfaces) != 1 || cfg.NetworkInterfaces[0].HostDevName != tc.wantTap {
				t.Fatalf("restored config %+v %v", cfg, err)
			}
			if !tc.resume {
				if st := e2.state(t); st != fcapi.StatePaused {
					t.Fatalf("state %q, want Paused", st)
				}
				if err := e2.c.Resume(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if st := e2.state(t); st != fcapi.StateRunning {
				t.Fatalf("state %q, want Running", st)
			}
			c2, br2, _ := waitGuest(t, e2.path("v2.sock"))
			if st, err := health(c2, br2, 5*time.Second); err != nil || st != http.StatusNoContent {
				t.Fatalf("restored guest: %d %v", st, err)
			}
			// A second load on the same process is refused.
			if err := e2.c.LoadSnapshot(ctx, p); !fcapi.IsAPIError(err, 400) {
				t.Fatalf("second load: %v", err)
			}
		})
	}
}

// envdPIDs lists running processes of the test's envd binary.
func envdPIDs(t *testing.T) map[int]bool {
	t.Helper()
	out := map[int]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, en := range ents {
		pid, err := strconv.Atoi(en.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil && exe == envdBin {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
				continue
			}
			out[pid] = true
		}
	}
	return out
}

func TestCtrlAltDelShutsDownAndCloseKillsGuest(t *testing.T) {
	before := envdPIDs(t)
	e := bootWithGuest(t)
	c, _, _ := waitGuest(t, e.path("v.sock"))
	c.Close() // envd's graceful shutdown waits for open connections
	if err := e.c.SendCtrlAltDel(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.vmm.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("guest shutdown did not end the VMM")
	}

	e2 := bootWithGuest(t)
	waitGuest(t, e2.path("v.sock"))
	if err := e2.c.Pause(context.Background()); err != nil { // a stopped envd must die too
		t.Fatal(err)
	}
	e2.vmm.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var leaked []int
		for pid := range envdPIDs(t) {
			if !before[pid] {
				leaked = append(leaked, pid)
			}
		}
		if len(leaked) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("envd processes left: %v", leaked)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
