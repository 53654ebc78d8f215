package fakefc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fakefc"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/internal/testbin"
)

// envdBin is built once in TestMain.
var envdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fakefc-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	envdBin, err = testbin.Envd(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "build envd:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// shortDir is a temp dir with a short path (Unix socket paths are limited
// to 107 bytes; t.TempDir includes the test name).
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ffc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// env is one in-process fake VMM with a kernel and rootfs file to boot.
type env struct {
	dir, kernel, rootfs string
	vmm                 *fakefc.VMM
	c                   *fcapi.Client
	served              chan error
}

func newEnv(t *testing.T, cfg fakefc.Config) *env {
	t.Helper()
	dir := shortDir(t)
	e := &env{dir: dir, kernel: filepath.Join(dir, "vmlinux"), rootfs: filepath.Join(dir, "rootfs.ext4"), served: make(chan error, 1)}
	for _, f := range []string{e.kernel, e.rootfs} {
		if err := os.WriteFile(f, []byte("not really a "+filepath.Base(f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.APISock == "" {
		cfg.APISock = filepath.Join(dir, "api.sock")
	}
	cfg.Log = slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.vmm = fakefc.New(cfg)
	if err := e.vmm.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { e.served <- e.vmm.Serve(ctx) }()
	e.c = fcapi.New(cfg.APISock)
	t.Cleanup(func() {
		cancel()
		select {
		case <-e.served:
		case <-time.After(5 * time.Second):
			t.Error("fake VMM did not stop")
		}
		e.c.Close()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := e.c.GetInstanceInfo(context.Background()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("fake VMM api never answered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return e
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

// call is one API request.
type call struct {
	method, path string
	body         any
}

func (e *env) do(ctx context.Context, c call) error {
	return e.c.Raw(ctx, c.method, c.path, c.body, nil)
}

// configure is the minimal boot configuration.
func (e *env) configure() []call {
	return []call{
		{"PUT", "/boot-source", fcapi.BootSource{KernelImagePath: e.kernel, BootArgs: "console=ttyS0"}},
		{"PUT", "/drives/rootfs", fcapi.Drive{DriveID: "rootfs", PathOnHost: e.rootfs, IsRootDevice: true, IsReadOnly: fcapi.Bool(false)}},
	}
}

func (e *env) boot() []call {
	return append(e.configure(), call{"PUT", "/actions", fcapi.InstanceActionInfo{ActionType: "InstanceStart"}})
}

func (e *env) paused() []call {
	return append(e.boot(), call{"PATCH", "/vm", fcapi.VM{State: "Paused"}})
}

func (e *env) mustDo(t *testing.T, calls ...call) {
	t.Helper()
	for _, c := range calls {
		if err := e.do(context.Background(), c); err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
	}
}

func (e *env) state(t *testing.T) string {
	t.Helper()
	info, err := e.c.GetInstanceInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

func apiErr(err error) *fcapi.APIError {
	var ae *fcapi.APIError
	if errors.As(err, &ae) {
		return ae
	}
	return nil
}
