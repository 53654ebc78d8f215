// Package e2e starts the real envd binary as a host process on loopback and
// drives every RPC and route through real clients: connect-go (Connect JSON
// and binary, gRPC, gRPC-Web) and plain HTTP.
package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var envdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "envd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	envdBin = filepath.Join(dir, "envd")
	build := exec.Command("go", "build", "-o", envdBin, "../..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build envd:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// envd is one running envd process.
type envd struct {
	t    testing.TB
	cmd  *exec.Cmd
	base string // http://127.0.0.1:port
	log  *strings.Builder
}

// startEnvd runs envd on a free loopback port and waits until /health
// answers. It is stopped when the test ends.
func startEnvd(t testing.TB, extra ...string) *envd {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	e := &envd{t: t, base: "http://" + addr, log: &strings.Builder{}}
	args := append([]string{"--listen-tcp", addr}, extra...)
	e.cmd = exec.Command(envdBin, args...)
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(e.base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("envd never became healthy: %v\n%s", err, e.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *envd) stop() {
	if e.cmd.Process == nil {
		return
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { e.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	if e.t.Failed() {
		e.t.Logf("envd log:\n%s", e.log.String())
	}
}

// statusKiB reads a VmRSS/VmHWM style field of envd's /proc status in KiB.
func (e *envd) statusKiB(field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.cmd.Process.Pid))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	e.t.Fatalf("no %s in status", field)
	return 0
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
