package snapshot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// stubDriver is a vm.Driver without a VMM: its instances answer envd's
// /health and /init over in-memory pipes and "snapshot" by writing the
// files a driver writes. It lets the manager's build sharing, caching and
// cleanup be tested in milliseconds; the real-QEMU tests cover the rest.
type stubDriver struct {
	creates, restores atomic.Int64
	bootDelay         time.Duration
	failBoot          atomic.Bool
	failRestore       atomic.Bool
}

func (d *stubDriver) Name() string                  { return "stub" }
func (d *stubDriver) Capabilities() vm.Capabilities { return vm.Capabilities{Snapshot: true} }
func (d *stubDriver) Reattach(context.Context, vm.Handle) (vm.Instance, error) {
	return nil, vm.ErrNotSupported
}

func (d *stubDriver) Create(ctx context.Context, spec vm.Spec) (vm.Instance, error) {
	d.creates.Add(1)
	time.Sleep(d.bootDelay)
	if d.failBoot.Load() {
		return nil, errors.New("stub: guest panicked")
	}
	return newStubInstance(spec), nil
}

func (d *stubDriver) Restore(ctx context.Context, spec vm.Spec, dir string) (vm.Instance, error) {
	d.restores.Add(1)
	if _, err := os.Stat(filepath.Join(dir, "mem.state")); err != nil {
		return nil, fmt.Errorf("%w: %w", vm.ErrInvalidSpec, err)
	}
	if d.failRestore.Load() {
		return nil, errors.New("stub: load of migration failed")
	}
	return newStubInstance(spec), nil
}

type stubInstance struct {
	spec   vm.Spec
	srv    *http.Server
	ln     *pipeListener
	exited chan struct{}
	once   sync.Once
	token  atomic.Value
}

func newStubInstance(spec vm.Spec) *stubInstance {
	i := &stubInstance{spec: spec, exited: make(chan struct{}), ln: newPipeListener()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /init", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	i.srv = &http.Server{Handler: mux}
	go i.srv.Serve(i.ln)
	_ = os.WriteFile(filepath.Join(spec.RunDir, "stub.sock"), nil, 0o600)
	return i
}

func (i *stubInstance) ID() string { return i.spec.ID }
func (i *stubInstance) Handle() vm.Handle {
	return vm.Handle{Driver: "stub", ID: i.spec.ID, Spec: i.spec}
}
func (i *stubInstance) State(context.Context) (vm.State, error) { return vm.StateRunning, nil }
func (i *stubInstance) Pause(context.Context) error             { return nil }
func (i *stubInstance) Resume(context.Context) error            { return nil }
func (i *stubInstance) Exited() <-chan struct{}                 { return i.exited }

func (i *stubInstance) Snapshot(_ context.Context, dir string) (vm.SnapshotInfo, error) {
	if err := os.WriteFile(filepath.Join(dir, "mem.state"), []byte("mem"), 0o644); err != nil {
		return vm.SnapshotInfo{}, err
	}
	if _, err := filesystem.Clone(context.Background(), i.spec.Rootfs, filepath.Join(dir, RootfsFile)); err != nil {
		return vm.SnapshotInfo{}, err
	}
	return vm.SnapshotInfo{Dir: dir, MemBytes: 3}, nil
}

func (i *stubInstance) DialEnvd(ctx context.Context) (net.Conn, error) { return i.ln.dial(ctx) }

func (i *stubInstance) Destroy(context.Context) error {
	i.once.Do(func() {
		i.srv.Close()
		os.Remove(filepath.Join(i.spec.RunDir, "stub.sock"))
		close(i.exited)
	})
	return nil
}

// pipeListener hands one end of a net.Pipe to the server per dial.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case l.conns <- a:
		return b, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "stub", Net: "unix"} }

// stubRegistry is a registry directory with one template "t" whose rootfs
// is a small file.
func stubRegistry(t *testing.T) *filesystem.Registry {
	t.Helper()
	root := t.TempDir()
	k := filepath.Join(root, "kernel")
	tdir := filepath.Join(root, "templates", "t")
	for _, d := range []string{k, tdir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(k, "manifest.json"):    `{"kernel_version":"1","kernel":"vmlinuz","kernel_sha256":"k"}`,
		filepath.Join(k, "vmlinuz"):          "kernel",
		filepath.Join(tdir, "manifest.json"): `{"name":"t","version":"1","file":"rootfs.ext4","sha256":"r"}`,
		filepath.Join(tdir, "rootfs.ext4"):   "rootfs",
	}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, err := filesystem.NewRegistry(root)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func stubManager(t *testing.T, d *stubDriver, cache string) *TemplateManager {
	t.Helper()
	m, err := New(Config{Driver: d, Images: stubRegistry(t), CacheDir: cache, Warmup: "-", ReadyTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestEnsureSharesOneBuild(t *testing.T) {
	d := &stubDriver{bootDelay: 100 * time.Millisecond}
	cache := t.TempDir()
	m := stubManager(t, d, cache)
	ctx := context.Background()

	// A failed build is reported to everyone waiting and not cached.
	d.failBoot.Store(true)
	if _, err := m.Ensure(ctx, "t", ""); err == nil || m.Built() != 0 {
		t.Fatalf("ensure with a failing boot: %v (built %d)", err, m.Built())
	}
	d.failBoot.Store(false)

	const n = 8
	var wg sync.WaitGroup
	dirs := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tm, err := m.Ensure(ctx, "t", "")
			errs[i] = err
			if tm != nil {
				dirs[i] = tm.Dir
			}
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || dirs[i] != dirs[0] {
			t.Fatalf("ensure %d: %q %v (first %q)", i, dirs[i], errs[i], dirs[0])
		}
	}
	if got := d.creates.Load(); got != 2 || m.Built() != 1 {
		t.Fatalf("%d concurrent ensures: %d boots (want the failed one and one more), built %d", n, got, m.Built())
	}
	// Only the finished snapshot and its lock file are in the cache.
	ents, _ := os.ReadDir(cache)
	if len(ents) != 2 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("cache holds %v", names)
	}
	// A waiter that gives up does not stop the build for others.
	d2 := &stubDriver{bootDelay: 300 * time.Millisecond}
	m2 := stubManager(t, d2, t.TempDir())
	done := make(chan error, 1)
	go func() { _, err := m2.Ensure(ctx, "t", ""); done <- err }()
	time.Sleep(50 * time.Millisecond)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := m2.Ensure(short, "t", ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("impatient waiter: %v, want deadline exceeded", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the build itself: %v", err)
	}
}

func TestCreateFailuresLeaveNothing(t *testing.T) {
	d := &stubDriver{}
	m := stubManager(t, d, t.TempDir())
	ctx := context.Background()
	tests := []struct {
		name    string
		mutate  func(*CreateSpec)
		prepare func()
		want    error
	}{
		{name: "bad template name", mutate: func(s *CreateSpec) { s.Template = "../t" }, want: filesystem.ErrInvalidName},
		{name: "unknown template", mutate: func(s *CreateSpec) { s.Template = "nope" }, want: filesystem.ErrNotFound},
		{name: "unknown version", mutate: func(s *CreateSpec) { s.Version = "7" }, want: filesystem.ErrNotFound},
		{name: "no run dir", mutate: func(s *CreateSpec) { s.RunDir = "" }, want: vm.ErrInvalidSpec},
		{name: "restore fails", prepare: func() { d.failRestore.Store(true) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := sandboxSpec(t, "sb", "t")
			if tc.mutate != nil {
				tc.mutate(&spec)
			}
			if tc.prepare != nil {
				tc.prepare()
			}
			_, err := m.CreateFromTemplate(ctx, spec)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if _, err := os.Stat(spec.Rootfs); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("clone left at %s", spec.Rootfs)
			}
			if spec.RunDir != "" {
				if ents, _ := os.ReadDir(spec.RunDir); len(ents) != 0 {
					t.Errorf("%d files left in the run dir", len(ents))
				}
			}
		})
	}
}
