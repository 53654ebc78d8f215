package sandbox

// Fakes for the manager's unit tests: they record what was acquired and
// released so the undo logic can be checked step by step. The real
// backends are exercised by tests/integration with real VMs.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/snapstore"
	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

var errInjected = errors.New("injected failure")

// fakePID is every fake VMM's pid.
const fakePID = 4242

// journal records acquisitions and releases in order.
type journal struct {
	mu     sync.Mutex
	events []string
	live   map[string]bool
	fail   map[string]int // operation -> failures left
}

func newJournal() *journal { return &journal{live: map[string]bool{}, fail: map[string]int{}} }

func (j *journal) failing(op string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.fail[op] > 0 {
		j.fail[op]--
		return fmt.Errorf("%s: %w", op, errInjected)
	}
	return nil
}

func (j *journal) add(ev, key string, live bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.events = append(j.events, ev)
	if live {
		j.live[key] = true
	} else {
		delete(j.live, key)
	}
}

func (j *journal) liveSet() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []string
	for k := range j.live {
		out = append(out, k)
	}
	return out
}

func (j *journal) count(prefix string) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := 0
	for _, e := range j.events {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

type fakeNet struct{ j *journal }

func (f *fakeNet) Setup(_ context.Context, sid string, _ agentstate.NetworkPolicy) (NetInfo, error) {
	if err := f.j.failing("net.setup"); err != nil {
		return NetInfo{}, err
	}
	f.j.add("net.setup "+sid, "net/"+sid, true)
	return NetInfo{Handle: json.RawMessage(`{"id":"` + sid + `"}`), Tap: "tap0", GuestIP: "169.254.0.21", HostIP: "10.0.0.2"}, nil
}

func (f *fakeNet) Teardown(_ context.Context, sid string, _ json.RawMessage) error {
	if err := f.j.failing("net.teardown"); err != nil {
		return err
	}
	f.j.add("net.teardown "+sid, "net/"+sid, false)
	return nil
}

type fakeCgroups struct{ j *journal }

func (f *fakeCgroups) Create(_ context.Context, sid string, _, _ int) (json.RawMessage, error) {
	if err := f.j.failing("cg.create"); err != nil {
		return nil, err
	}
	f.j.add("cg.create "+sid, "cg/"+sid, true)
	return json.RawMessage(`{"sandbox_id":"` + sid + `"}`), nil
}

func (f *fakeCgroups) AddProcess(_ context.Context, h json.RawMessage, pid int) error {
	if err := f.j.failing("cg.add"); err != nil {
		return err
	}
	f.j.add(fmt.Sprintf("cg.add %d %s", pid, h), "", false)
	return nil
}

func (f *fakeCgroups) Remove(_ context.Context, sid string, _ json.RawMessage) error {
	if err := f.j.failing("cg.remove"); err != nil {
		return err
	}
	f.j.add("cg.remove "+sid, "cg/"+sid, false)
	return nil
}

func (f *fakeCgroups) Stats(context.Context, json.RawMessage) (CgroupStats, error) {
	return CgroupStats{}, nil
}

type fakeImages struct{ rootfs string }

func (f *fakeImages) Resolve(t string) (Image, error) {
	if t != "minimal" {
		return Image{}, fmt.Errorf("template %s: %w", t, os.ErrNotExist)
	}
	st, err := os.Stat(f.rootfs)
	if err != nil {
		return Image{Template: t, Rootfs: f.rootfs + ".missing", Kernel: "/k"}, nil
	}
	return Image{Template: t, Version: "1", Kernel: "/k", Rootfs: f.rootfs, SizeBytes: st.Size()}, nil
}

func (f *fakeImages) Templates() []string { return []string{"minimal"} }

// fakeDriver makes instances whose envd channel is served in-process by
// a tiny envd (/health and /init).
type fakeDriver struct {
	j      *journal
	mu     sync.Mutex
	insts  map[string]*fakeInst
	initOK bool
}

func (d *fakeDriver) Name() string { return "fake" }
func (d *fakeDriver) Capabilities() vm.Capabilities {
	return vm.Capabilities{Snapshot: false, Reattach: true}
}

func (d *fakeDriver) Create(_ context.Context, spec vm.Spec) (vm.Instance, error) {
	if err := d.j.failing("vm.create"); err != nil {
		return nil, err
	}
	// Like a real driver: the VMM exists (pid fakePID) but runs no
	// guest until Placement returned; its error aborts the create and
	// leaves nothing.
	if spec.Placement == nil {
		return nil, errors.New("fake driver: no placement hook in the spec")
	}
	if err := spec.Placement(fakePID); err != nil {
		return nil, err
	}
	spec.Placement = nil
	i := newFakeInst(d, spec)
	d.mu.Lock()
	d.insts[spec.ID] = i
	d.mu.Unlock()
	d.j.add("vm.create "+spec.ID, "vm/"+spec.ID, true)
	return i, nil
}

func (d *fakeDriver) Restore(context.Context, vm.Spec, string) (vm.Instance, error) {
	return nil, vm.ErrNotSupported
}

func (d *fakeDriver) Reattach(_ context.Context, h vm.Handle) (vm.Instance, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.insts[h.ID]
	if !ok || i.dead() {
		return nil, vm.ErrNotFound
	}
	return i, nil
}

type fakeInst struct {
	d      *fakeDriver
	spec   vm.Spec
	exited chan struct{}
	once   sync.Once
	srv    *http.Server
	ln     *pipeListener
}

func newFakeInst(d *fakeDriver, spec vm.Spec) *fakeInst {
	i := &fakeInst{d: d, spec: spec, exited: make(chan struct{}), ln: newPipeListener()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Envd-Version", "0.7.0")
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /init", func(w http.ResponseWriter, _ *http.Request) {
		if !d.initOK {
			http.Error(w, `{"message":"init refused"}`, http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	i.srv = &http.Server{Handler: mux}
	go func() { _ = i.srv.Serve(i.ln) }()
	return i
}

func (i *fakeInst) dead() bool {
	select {
	case <-i.exited:
		return true
	default:
		return false
	}
}

func (i *fakeInst) ID() string { return i.spec.ID }
func (i *fakeInst) Handle() vm.Handle {
	return vm.Handle{Driver: "fake", ID: i.spec.ID, PID: fakePID, Spec: i.spec}
}
func (i *fakeInst) State(context.Context) (vm.State, error) {
	if i.dead() {
		return vm.StateStopped, nil
	}
	return vm.StateRunning, nil
}
func (i *fakeInst) Pause(context.Context) error  { return nil }
func (i *fakeInst) Resume(context.Context) error { return nil }
func (i *fakeInst) Snapshot(context.Context, string) (vm.SnapshotInfo, error) {
	return vm.SnapshotInfo{}, vm.ErrNotSupported
}
func (i *fakeInst) DialEnvd(ctx context.Context) (net.Conn, error) {
	if i.dead() {
		return nil, vm.ErrWrongState
	}
	return i.ln.dial()
}
func (i *fakeInst) Destroy(context.Context) error {
	if err := i.d.j.failing("vm.destroy"); err != nil {
		return err
	}
	i.once.Do(func() {
		close(i.exited)
		_ = i.srv.Close()
		i.d.j.add("vm.destroy "+i.spec.ID, "vm/"+i.spec.ID, false)
	})
	return nil
}
func (i *fakeInst) Exited() <-chan struct{} { return i.exited }

// pipeListener hands out the server ends of net.Pipe connections.
type pipeListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) dial() (net.Conn, error) {
	c, s := net.Pipe()
	select {
	case l.ch <- s:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "unix"} }

// rig is a manager on fakes.
type rig struct {
	m      *Manager
	j      *journal
	d      *fakeDriver
	state  *agentstate.Store
	imgDir string
}

func newRig(t *testing.T, totals Totals) *rig {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "image.ext4")
	if err := os.WriteFile(rootfs, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := agentstate.Open(filepath.Join(dir, "sb"))
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := snapstore.NewLocal(filepath.Join(dir, "snap"))
	if err != nil {
		t.Fatal(err)
	}
	j := newJournal()
	d := &fakeDriver{j: j, insts: map[string]*fakeInst{}, initOK: true}
	if totals == (Totals{}) {
		totals = Totals{VCPUs: 8, MemoryMB: 4096}
	}
	m, err := New(Config{
		Driver: d, State: st, Images: &fakeImages{rootfs: rootfs}, Network: &fakeNet{j}, Cgroups: &fakeCgroups{j},
		Snapshots: snaps, Totals: totals, DefaultMemoryMB: 256, BootTimeout: 5 * time.Second,
		Log: slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &rig{m: m, j: j, d: d, state: st, imgDir: dir}
}
