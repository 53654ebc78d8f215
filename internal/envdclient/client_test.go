package envdclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
)

var (
	envdOnce sync.Once
	envdBin  string
	envdErr  error
	envdDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if envdDir != "" {
		os.RemoveAll(envdDir)
	}
	os.Exit(code)
}

// buildEnvd builds envd from this repository once per test binary.
func buildEnvd(t *testing.T) string {
	t.Helper()
	envdOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		src := filepath.Join(filepath.Dir(file), "..", "..", "envd")
		envdDir, envdErr = os.MkdirTemp("", "wrenn-envdclient-")
		if envdErr != nil {
			return
		}
		envdBin = filepath.Join(envdDir, "envd")
		cmd := exec.Command("go", "build", "-o", envdBin, ".")
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			envdErr = fmt.Errorf("build envd: %w: %s", err, out)
		}
	})
	if envdErr != nil {
		t.Fatal(envdErr)
	}
	return envdBin
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// startEnvd runs envd as a plain process on 127.0.0.1.
func startEnvd(t *testing.T, addr string) {
	t.Helper()
	cmd := exec.Command(buildEnvd(t), "-listen-tcp", addr)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("envd log:\n%s", logs.String())
		}
	})
}

func TestClientAgainstEnvd(t *testing.T) {
	buildEnvd(t)
	addr := freeLoopbackAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := New(TCPDialer{Addr: addr}, Options{})
	defer c.Close()

	// Health is polled with backoff while envd is not listening yet.
	type result struct {
		v        string
		failures int
		err      error
	}
	done := make(chan result, 1)
	go func() {
		v, f, err := c.WaitHealthy(ctx, Backoff{Initial: 20 * time.Millisecond})
		done <- result{v, f, err}
	}()
	time.Sleep(300 * time.Millisecond)
	startEnvd(t, addr)
	r := <-done
	v, failures, err := r.v, r.failures, r.err
	if err != nil {
		t.Fatal(err)
	}
	if v == "" || failures == 0 {
		t.Errorf("version %q after %d failures; want a version after at least one failure", v, failures)
	}

	t.Run("exec", func(t *testing.T) {
		dir := t.TempDir()
		tests := []struct {
			name string
			req  ExecRequest
			out  string
			err  string
			code int
		}{
			{name: "echo", req: ExecRequest{Cmd: "/bin/echo", Args: []string{"hello"}}, out: "hello\n"},
			{name: "exit code and stderr", req: ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", "echo bad >&2; exit 7"}}, err: "bad\n", code: 7},
			{name: "env", req: ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", "echo $WRENN_X"}, Env: map[string]string{"WRENN_X": "42"}}, out: "42\n"},
			{name: "cwd", req: ExecRequest{Cmd: "/bin/pwd", Cwd: dir}, out: dir + "\n"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				res, err := c.Exec(ctx, tc.req)
				if err != nil {
					t.Fatal(err)
				}
				if string(res.Stdout) != tc.out || string(res.Stderr) != tc.err || res.ExitCode != tc.code || res.PID == 0 {
					t.Errorf("got %+v (stdout %q stderr %q)", res, res.Stdout, res.Stderr)
				}
			})
		}
	})

	t.Run("timeout kills the process", func(t *testing.T) {
		start := time.Now()
		res, err := c.Exec(ctx, ExecRequest{Cmd: "/bin/sleep", Args: []string{"30"}, Timeout: 500 * time.Millisecond})
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("sleep ran %v past its timeout", took)
		}
		if err == nil && res.Exited && res.ExitCode == 0 {
			t.Fatalf("sleep finished normally despite the timeout: %+v", res)
		}
	})

	t.Run("stream output as it comes", func(t *testing.T) {
		var out bytes.Buffer
		res, err := c.ExecStream(ctx, ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", "for i in 1 2 3; do echo $i; sleep 0.05; done"}}, &out, nil)
		if err != nil || res.ExitCode != 0 || out.String() != "1\n2\n3\n" {
			t.Fatalf("res %+v err %v out %q", res, err, out.String())
		}
	})

	t.Run("files", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sub", "f.bin")
		data := bytes.Repeat([]byte{0, 1, 2, 0xff}, 300000)
		e, err := c.Upload(ctx, path, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if e.Path != path {
			t.Errorf("upload entry %+v", e)
		}
		var got bytes.Buffer
		n, err := c.Download(ctx, path, &got)
		if err != nil || n != int64(len(data)) || !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("download %d bytes err %v", n, err)
		}
		var he *HTTPError
		if _, err := c.Download(ctx, path+".missing", &got); !errors.As(err, &he) || he.Status != 404 {
			t.Fatalf("missing file: %v", err)
		}
	})

	t.Run("init sets the token and env", func(t *testing.T) {
		err := c.Init(ctx, InitRequest{AccessToken: "tok-1", EnvVars: map[string]string{"FROM_INIT": "yes"}, Timestamp: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.Exec(ctx, ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", "echo $FROM_INIT"}})
		if err != nil || strings.TrimSpace(string(res.Stdout)) != "yes" {
			t.Fatalf("env from init: %q %v", res.Stdout, err)
		}
		anon := New(TCPDialer{Addr: addr}, Options{})
		defer anon.Close()
		_, err = anon.Exec(ctx, ExecRequest{Cmd: "/bin/true"})
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("exec without token: %v, want unauthenticated", err)
		}
		if _, err := anon.Health(ctx); err != nil {
			t.Fatalf("health needs no token: %v", err)
		}
	})

	t.Run("h2c", func(t *testing.T) {
		h := New(TCPDialer{Addr: addr}, Options{H2C: true, AccessToken: "tok-1"})
		defer h.Close()
		res, err := h.Exec(ctx, ExecRequest{Cmd: "/bin/echo", Args: []string{"h2"}})
		if err != nil || string(res.Stdout) != "h2\n" {
			t.Fatalf("h2c exec %q %v", res.Stdout, err)
		}
	})
}

func TestWaitHealthyGivesUp(t *testing.T) {
	c := New(TCPDialer{Addr: freeLoopbackAddr(t)}, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, failures, err := c.WaitHealthy(ctx, Backoff{})
	if !errors.Is(err, context.DeadlineExceeded) || failures < 3 {
		t.Fatalf("err %v after %d failures", err, failures)
	}
}
