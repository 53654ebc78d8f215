package filesystem

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"

	fspb "github.com/wrenn-dev/envd/internal/gen/filesystem"
	"github.com/wrenn-dev/envd/internal/gen/filesystem/filesystemconnect"
	"github.com/wrenn-dev/envd/internal/permissions"
	"github.com/wrenn-dev/envd/internal/state"
	"github.com/wrenn-dev/envd/internal/testlog"
)

// Test-only request headers the fixture middleware understands.
const (
	hdrUID    = "X-Test-Uid"    // act as a user with this uid/gid
	hdrUnauth = "X-Test-Unauth" // simulate an unknown Basic-auth user
)

type fixture struct {
	svc    *Service
	st     *state.State
	client filesystemconnect.FilesystemClient
	srv    *httptest.Server
	home   string
	root   *permissions.User
}

// newFixture serves a Service over a real loopback HTTP server and returns
// a Connect client using the JSON codec, as E2B's SDKs do.
func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	home := tb.TempDir()
	log := slog.New(slog.NewTextHandler(testlog.Writer(tb), &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, ok := tb.(*testing.F); ok {
		log = slog.New(slog.DiscardHandler) // F.Log must not be called while fuzzing
	}

	st := state.New()
	svc := New(st, log)
	path, h := filesystemconnect.NewFilesystemHandler(svc)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	root := &permissions.User{Name: "root", UID: 0, GID: 0, Home: home}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		switch {
		case r.Header.Get(hdrUnauth) != "":
			ctx = permissions.WithUser(ctx, nil, permissions.ErrUnknownUser)
		case r.Header.Get(hdrUID) != "":
			id, err := strconv.ParseUint(r.Header.Get(hdrUID), 10, 32)
			if err != nil {
				http.Error(w, "bad uid", http.StatusBadRequest)
				return
			}
			u := *root
			u.Name, u.UID, u.GID = "test", uint32(id), uint32(id)
			ctx = permissions.WithUser(ctx, &u, nil)
		default:
			ctx = permissions.WithUser(ctx, root, nil)
		}
		mux.ServeHTTP(w, r.WithContext(ctx))
	}))
	tb.Cleanup(srv.Close)
	tb.Cleanup(svc.Close) // runs before srv.Close: streams end first
	return &fixture{
		svc:    svc,
		st:     st,
		client: filesystemconnect.NewFilesystemClient(srv.Client(), srv.URL, connect.WithProtoJSON()),
		srv:    srv,
		home:   home,
		root:   root,
	}
}

// rootCtx is a context carrying the fixture's root user, for calling the
// Service directly.
func (f *fixture) rootCtx(ctx context.Context) context.Context {
	return permissions.WithUser(ctx, f.root, nil)
}

func request[T any](msg *T, headers ...string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header().Set(headers[i], headers[i+1])
	}
	return req
}

// wantCode fails unless err is a connect error with code want (0 = no error).
func wantCode(t *testing.T, what string, err error, want connect.Code) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Fatalf("%s: unexpected error %v", what, err)
		}
		return
	}
	if err == nil {
		t.Fatalf("%s: got no error, want %v", what, want)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%s: %T %v is not a connect error", what, err, err)
	}
	if ce.Code() != want {
		t.Fatalf("%s: code %v (%v), want %v", what, ce.Code(), err, want)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown to another user")
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// eventStream reads a WatchDir stream on its own goroutine.
type eventStream struct {
	events chan *fspb.WatchDirResponse
	done   chan error // the stream's final error (nil on clean end)
	cancel context.CancelFunc
}

// watch opens a WatchDir stream and waits for its start event.
func (f *fixture) watch(t *testing.T, msg *fspb.WatchDirRequest, headers ...string) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := f.client.WatchDir(ctx, request(msg, headers...))
	if err != nil {
		cancel()
		t.Fatalf("WatchDir: %v", err)
	}
	es := &eventStream{events: make(chan *fspb.WatchDirResponse, 1024), done: make(chan error, 1), cancel: cancel}
	go func() {
		defer stream.Close()
		for stream.Receive() {
			es.events <- stream.Msg()
		}
		es.done <- stream.Err()
	}()
	t.Cleanup(cancel)
	select {
	case ev := <-es.events:
		if ev.GetStart() == nil {
			t.Fatalf("first event %v, want start", ev)
		}
	case err := <-es.done:
		t.Fatalf("stream ended before start: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no start event")
	}
	return es
}

// next returns the next filesystem event, skipping keepalives.
func (es *eventStream) next(t *testing.T, timeout time.Duration) *fspb.FilesystemEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-es.events:
			if fe := ev.GetFilesystem(); fe != nil {
				return fe
			}
		case err := <-es.done:
			t.Fatalf("stream ended: %v", err)
		case <-deadline:
			return nil
		}
	}
}

// await reads events until one has the given name and type.
func (es *eventStream) await(t *testing.T, name string, typ fspb.EventType) *fspb.FilesystemEvent {
	t.Helper()
	var seen []string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		fe := es.next(t, time.Until(deadline))
		if fe == nil {
			break
		}
		if fe.GetName() == name && fe.GetType() == typ {
			return fe
		}
		seen = append(seen, fe.GetType().String()+" "+fe.GetName())
	}
	t.Fatalf("no %v %q; saw %v", typ, name, seen)
	return nil
}
