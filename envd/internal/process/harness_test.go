package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
	"github.com/wrenn-dev/envd/internal/gen/process/processconnect"
	"github.com/wrenn-dev/envd/internal/permissions"
	"github.com/wrenn-dev/envd/internal/reaper"
	"github.com/wrenn-dev/envd/internal/state"
	"github.com/wrenn-dev/envd/internal/testlog"
)

// One reaper per test binary: two would steal each other's children.
var testReaper *reaper.Reaper

func TestMain(m *testing.M) {
	testReaper = reaper.New()
	code := m.Run()
	testReaper.Close()
	os.Exit(code)
}

// userHeader names the OS user a test request runs as (default root).
const userHeader = "X-Test-User"

// withUser stands in for envd's server middleware.
func withUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.Header.Get(userHeader)
		if name == "" {
			name = "root"
		}
		u, err := permissions.Lookup(name)
		next.ServeHTTP(w, r.WithContext(permissions.WithUser(r.Context(), u, err)))
	})
}

type harness struct {
	tr     *http.Transport
	st     *state.State
	svc    *Service
	srv    *httptest.Server
	client processconnect.ProcessClient
}

type harnessOpt func(*Service)

func newHarness(t testing.TB, opts ...harnessOpt) *harness {
	return newHarnessProto(t, false, opts...)
}

// newHarnessProto serves the service on loopback over HTTP/1.1, or over
// cleartext HTTP/2 when h2c is set.
func newHarnessProto(t testing.TB, h2c bool, opts ...harnessOpt) *harness {
	t.Helper()
	st := state.New()
	// Registered before the cleanup below, so it stops logging only after
	// the service and server have shut down.
	tl := testlog.Writer(t)
	level := slog.LevelDebug
	if _, ok := t.(*testing.B); ok {
		level = slog.LevelWarn
	}
	svc := New(st, testReaper, slog.New(slog.NewTextHandler(tl, &slog.HandlerOptions{Level: level})))
	for _, o := range opts {
		o(svc)
	}
	mux := http.NewServeMux()
	path, h := processconnect.NewProcessHandler(svc)
	mux.Handle(path, withUser(h))
	srv := httptest.NewUnstartedServer(mux)
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	if h2c {
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP1(true)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	srv.Start()
	hc := &http.Client{Transport: tr}
	t.Cleanup(func() {
		svc.Close()
		tr.CloseIdleConnections()
		srv.Close()
	})
	return &harness{tr: tr, st: st, svc: svc, srv: srv, client: processconnect.NewProcessClient(hc, srv.URL,
		// Like E2B's SDKs: no response compression.
		connect.WithAcceptCompression("gzip", nil, nil))}
}

// result is everything a Start or Connect stream delivered.
type result struct {
	pid        uint32
	kinds      []string // event kinds in order: start, data, keepalive, end
	stdout     []byte
	stderr     []byte
	pty        []byte
	end        *pb.ProcessEvent_EndEvent
	maxChunk   int
	keepalives int
}

func (r *result) add(ev *pb.ProcessEvent) error {
	switch e := ev.GetEvent().(type) {
	case *pb.ProcessEvent_Start:
		r.kinds = append(r.kinds, "start")
		r.pid = e.Start.GetPid()
	case *pb.ProcessEvent_Data:
		r.kinds = append(r.kinds, "data")
		var b []byte
		switch o := e.Data.GetOutput().(type) {
		case *pb.ProcessEvent_DataEvent_Stdout:
			b = o.Stdout
			r.stdout = append(r.stdout, b...)
		case *pb.ProcessEvent_DataEvent_Stderr:
			b = o.Stderr
			r.stderr = append(r.stderr, b...)
		case *pb.ProcessEvent_DataEvent_Pty:
			b = o.Pty
			r.pty = append(r.pty, b...)
		default:
			return errors.New("data event without output")
		}
		r.maxChunk = max(r.maxChunk, len(b))
	case *pb.ProcessEvent_Keepalive:
		r.kinds = append(r.kinds, "keepalive")
		r.keepalives++
	case *pb.ProcessEvent_End:
		r.kinds = append(r.kinds, "end")
		r.end = e.End
	default:
		return fmt.Errorf("unknown event %T", e)
	}
	return nil
}

// checkOrder verifies start first, exactly one end, last.
func (r *result) checkOrder(t testing.TB) {
	t.Helper()
	if len(r.kinds) < 2 || r.kinds[0] != "start" || r.kinds[len(r.kinds)-1] != "end" {
		t.Fatalf("event order %v: want start ... end", abbreviate(r.kinds))
	}
	for i, k := range r.kinds {
		if k == "start" && i != 0 || k == "end" && i != len(r.kinds)-1 {
			t.Fatalf("event order %v: start/end in the middle", abbreviate(r.kinds))
		}
	}
	if r.pid == 0 {
		t.Fatal("start event with pid 0")
	}
}

func abbreviate(k []string) []string {
	if len(k) > 20 {
		return append(append(k[:10:10], "..."), k[len(k)-5:]...)
	}
	return k
}

type eventStream interface {
	Receive() bool
	Err() error
	Close() error
}

type eventMsg interface{ GetEvent() *pb.ProcessEvent }

// drain reads a stream to its end.
func drain[T eventMsg](s interface {
	eventStream
	Msg() T
}) (*result, error) {
	r := &result{}
	for s.Receive() {
		if err := r.add(s.Msg().GetEvent()); err != nil {
			return r, err
		}
	}
	return r, s.Err()
}

// run starts a process and follows it to the end.
func (h *harness) run(ctx context.Context, msg *pb.StartRequest, hdr ...string) (*result, error) {
	req := connect.NewRequest(msg)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header().Set(hdr[i], hdr[i+1])
	}
	s, err := h.client.Start(ctx, req)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return drain(s)
}

// startReq builds a StartRequest for cmd args....
func startReq(cmd string, args ...string) *pb.StartRequest {
	return &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: cmd, Args: args}}
}

func bg(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func pidSel(pid uint32) *pb.ProcessSelector {
	return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}
}

func tagSel(tag string) *pb.ProcessSelector {
	return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: tag}}
}

func wantCode(t testing.TB, err error, code connect.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("error %v: code %v, want %v", err, got, code)
	}
}

// waitGone waits until pid no longer exists (reaped, not a zombie).
func waitGone(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d still exists", pid)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// requireRoot skips tests that switch users.
func requireRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run processes as other users")
	}
}

func connectReq[T any](m *T) *connect.Request[T] { return connect.NewRequest(m) }
