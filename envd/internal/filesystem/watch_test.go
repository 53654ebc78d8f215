package filesystem

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fspb "github.com/wrenn-dev/envd/internal/gen/filesystem"
)

const (
	evCreate = fspb.EventType_EVENT_TYPE_CREATE
	evWrite  = fspb.EventType_EVENT_TYPE_WRITE
	evRemove = fspb.EventType_EVENT_TYPE_REMOVE
	evRename = fspb.EventType_EVENT_TYPE_RENAME
	evChmod  = fspb.EventType_EVENT_TYPE_CHMOD
)

func TestWatchDirEvents(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(f.home, "w")
	os.Mkdir(dir, 0o755)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	es := f.watch(t, &fspb.WatchDirRequest{Path: "w"})

	p := filepath.Join(dir, "f")
	write(t, p, "")
	es.await(t, "f", evCreate)
	fh, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteString("more")
	fh.Close()
	es.await(t, "f", evWrite)
	os.Chmod(p, 0o600)
	es.await(t, "f", evChmod)
	os.Rename(p, filepath.Join(dir, "g"))
	es.await(t, "f", evRename)
	es.await(t, "g", evCreate)

	// Not recursive: a change inside sub is not reported, only what follows.
	write(t, filepath.Join(dir, "sub/inner"), "")
	os.Remove(filepath.Join(dir, "g"))
	fe := es.next(t, 5*time.Second)
	if fe.GetName() != "g" || fe.GetType() != evRemove {
		t.Fatalf("got %v, want REMOVE g (and nothing from sub)", fe)
	}
	if fe.Entry != nil {
		t.Fatalf("entry attached without include_entry: %v", fe.Entry)
	}
}

func TestWatchDirRecursiveIncludeEntry(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(f.home, "r")
	write(t, filepath.Join(dir, "old/existing"), "")
	es := f.watch(t, &fspb.WatchDirRequest{Path: dir, Recursive: true, IncludeEntry: true})

	// A directory that existed when the watch started.
	write(t, filepath.Join(dir, "old/new.txt"), "x")
	fe := es.await(t, "old/new.txt", evCreate)
	if fe.GetEntry().GetPath() != filepath.Join(dir, "old/new.txt") || fe.GetEntry().GetType() != fspb.FileType_FILE_TYPE_FILE {
		t.Fatalf("entry %v", fe.GetEntry())
	}

	// Directories created after the watch started, filled at once.
	if err := os.MkdirAll(filepath.Join(dir, "n1/n2"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "n1/n2/deep.txt"), "d")
	fe = es.await(t, "n1", evCreate)
	if fe.GetEntry().GetType() != fspb.FileType_FILE_TYPE_DIRECTORY {
		t.Fatalf("n1 entry %v", fe.GetEntry())
	}
	es.await(t, "n1/n2/deep.txt", evCreate)
	// And later changes below them.
	os.WriteFile(filepath.Join(dir, "n1/n2/deep.txt"), []byte("again"), 0o644)
	es.await(t, "n1/n2/deep.txt", evWrite)

	// A subdirectory renamed inside the tree keeps being watched under its
	// new name.
	os.Rename(filepath.Join(dir, "n1"), filepath.Join(dir, "m1"))
	es.await(t, "n1", evRename)
	es.await(t, "m1", evCreate)
	write(t, filepath.Join(dir, "m1/n2/after.txt"), "")
	es.await(t, "m1/n2/after.txt", evCreate)

	os.Remove(filepath.Join(dir, "m1/n2/after.txt"))
	fe = es.await(t, "m1/n2/after.txt", evRemove)
	if fe.Entry != nil {
		t.Fatalf("entry for a removed file: %v", fe.Entry)
	}
}

func TestWatchDirKeepalive(t *testing.T) {
	f := newFixture(t)
	es := f.watch(t, &fspb.WatchDirRequest{Path: f.home}, keepaliveHeader, "1")
	start := time.Now()
	select {
	case ev := <-es.events:
		if ev.GetKeepalive() == nil {
			t.Fatalf("got %v, want keepalive", ev)
		}
		if d := time.Since(start); d < 500*time.Millisecond {
			t.Fatalf("keepalive after %v, want about 1s", d)
		}
	case err := <-es.done:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no keepalive within 5s")
	}
}

func TestKeepaliveInterval(t *testing.T) {
	cases := []struct {
		header string
		want   time.Duration
	}{
		{"", defaultKeepalive},
		{"50", 50 * time.Second},
		{" 3 ", 3 * time.Second},
		{"0", defaultKeepalive},
		{"-5", defaultKeepalive},
		{"abc", defaultKeepalive},
		{"99999999999999999999", defaultKeepalive},
		{"9999999999", maxKeepalive},
	}
	for _, c := range cases {
		h := make(map[string][]string)
		if c.header != "" {
			h[keepaliveHeader] = []string{c.header}
		}
		if got := keepaliveInterval(h); got != c.want {
			t.Errorf("%q: %v, want %v", c.header, got, c.want)
		}
	}
}

func TestWatchDirErrors(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.home, "file"), "")
	cases := []struct {
		name    string
		req     *fspb.WatchDirRequest
		headers []string
		code    connect.Code
	}{
		{name: "missing", req: &fspb.WatchDirRequest{Path: "nope"}, code: connect.CodeNotFound},
		{name: "file", req: &fspb.WatchDirRequest{Path: "file"}, code: connect.CodeInvalidArgument},
		{name: "empty", req: &fspb.WatchDirRequest{Path: ""}, code: connect.CodeInvalidArgument},
		{name: "unauthenticated", req: &fspb.WatchDirRequest{Path: "~"}, headers: []string{hdrUnauth, "1"}, code: connect.CodeUnauthenticated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stream, err := f.client.WatchDir(context.Background(), request(c.req, c.headers...))
			if err == nil {
				for stream.Receive() {
					t.Fatalf("unexpected event %v", stream.Msg())
				}
				err = stream.Err()
				stream.Close()
			}
			wantCode(t, "WatchDir", err, c.code)

			_, err = f.client.CreateWatcher(context.Background(), request(&fspb.CreateWatcherRequest{Path: c.req.Path}, c.headers...))
			wantCode(t, "CreateWatcher", err, c.code)
		})
	}
}

func TestWatchNetworkMount(t *testing.T) {
	f := newFixture(t)
	nfs := filepath.Join(f.home, "nfs")
	os.Mkdir(nfs, 0o755)
	f.svc.netFS = func(p string) (string, error) {
		if p == nfs {
			return "nfs", nil
		}
		return networkMount(p)
	}
	ctx := context.Background()
	_, err := f.client.CreateWatcher(ctx, request(&fspb.CreateWatcherRequest{Path: nfs}))
	wantCode(t, "CreateWatcher on nfs", err, connect.CodeInvalidArgument)
	if !strings.Contains(err.Error(), "network filesystem (nfs)") {
		t.Fatalf("message %q", err)
	}
	stream, err := f.client.WatchDir(ctx, request(&fspb.WatchDirRequest{Path: nfs}))
	if err == nil {
		for stream.Receive() {
		}
		err = stream.Err()
		stream.Close()
	}
	wantCode(t, "WatchDir on nfs", err, connect.CodeInvalidArgument)

	cr, err := f.client.CreateWatcher(ctx, request(&fspb.CreateWatcherRequest{Path: nfs, AllowNetworkMounts: true}))
	wantCode(t, "CreateWatcher allowed", err, 0)
	_, err = f.client.RemoveWatcher(ctx, request(&fspb.RemoveWatcherRequest{WatcherId: cr.Msg.GetWatcherId()}))
	wantCode(t, "RemoveWatcher", err, 0)
	f.watch(t, &fspb.WatchDirRequest{Path: nfs, AllowNetworkMounts: true}).cancel()
	f.watch(t, &fspb.WatchDirRequest{Path: f.home}).cancel() // local paths unaffected
}

func TestWatchDirRootRemoved(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(f.home, "gone")
	os.Mkdir(dir, 0o755)
	es := f.watch(t, &fspb.WatchDirRequest{Path: dir})
	os.Remove(dir)
	select {
	case err := <-es.done:
		wantCode(t, "stream end", err, connect.CodeNotFound)
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end after its directory was removed")
	}

	// The polling form hands out what it has, then reports NotFound.
	os.Mkdir(dir, 0o755)
	write(t, filepath.Join(dir, "f"), "")
	ctx := context.Background()
	cr, err := f.client.CreateWatcher(ctx, request(&fspb.CreateWatcherRequest{Path: dir}))
	wantCode(t, "CreateWatcher", err, 0)
	id := cr.Msg.GetWatcherId()
	os.RemoveAll(dir)
	var got []*fspb.FilesystemEvent
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := f.client.GetWatcherEvents(ctx, request(&fspb.GetWatcherEventsRequest{WatcherId: id}))
		if err != nil {
			wantCode(t, "GetWatcherEvents after removal", err, connect.CodeNotFound)
			break
		}
		got = append(got, resp.Msg.GetEvents()...)
		if time.Now().After(deadline) {
			t.Fatalf("no NotFound after the directory was removed; events %v", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !hasEvent(got, "f", evRemove) {
		t.Fatalf("events before NotFound: %v", got)
	}
	_, err = f.client.RemoveWatcher(ctx, request(&fspb.RemoveWatcherRequest{WatcherId: id}))
	wantCode(t, "RemoveWatcher", err, 0)
}

func TestPollingWatcher(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	dir := filepath.Join(f.home, "p")
	os.Mkdir(dir, 0o755)
	cr, err := f.client.CreateWatcher(ctx, request(&fspb.CreateWatcherRequest{Path: dir, Recursive: true, IncludeEntry: true}))
	wantCode(t, "CreateWatcher", err, 0)
	id := cr.Msg.GetWatcherId()
	if len(id) < 20 {
		t.Fatalf("weak watcher id %q", id)
	}
	cr2, err := f.client.CreateWatcher(ctx, request(&fspb.CreateWatcherRequest{Path: dir}))
	wantCode(t, "CreateWatcher 2", err, 0)
	if cr2.Msg.GetWatcherId() == id {
		t.Fatal("duplicate watcher id")
	}

	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	write(t, filepath.Join(dir, "sub/a"), "")
	var got []*fspb.FilesystemEvent
	deadline := time.Now().Add(5 * time.Second)
	for !hasEvent(got, "sub/a", evCreate) && time.Now().Before(deadline) {
		resp, err := f.client.GetWatcherEvents(ctx, request(&fspb.GetWatcherEventsRequest{WatcherId: id}))
		wantCode(t, "GetWatcherEvents", err, 0)
		got = append(got, resp.Msg.GetEvents()...)
		time.Sleep(20 * time.Millisecond)
	}
	if !hasEvent(got, "sub", evCreate) || !hasEvent(got, "sub/a", evCreate) {
		t.Fatalf("events %v", got)
	}
	for _, e := range got {
		if e.GetName() == "sub/a" && e.GetEntry().GetPath() != filepath.Join(dir, "sub/a") {
			t.Fatalf("entry %v", e.GetEntry())
		}
	}
	// Drained: nothing new without changes.
	time.Sleep(100 * time.Millisecond)
	resp, err := f.client.GetWatcherEvents(ctx, request(&fspb.GetWatcherEventsRequest{WatcherId: id}))
	wantCode(t, "GetWatcherEvents drained", err, 0)
	for _, e := range resp.Msg.GetEvents() {
		if e.GetName() == "sub" || e.GetName() == "sub/a" && e.GetType() == evCreate {
			t.Fatalf("event delivered twice: %v", e)
		}
	}

	_, err = f.client.RemoveWatcher(ctx, request(&fspb.RemoveWatcherRequest{WatcherId: id}))
	wantCode(t, "RemoveWatcher", err, 0)
	_, err = f.client.GetWatcherEvents(ctx, request(&fspb.GetWatcherEventsRequest{WatcherId: id}))
	wantCode(t, "GetWatcherEvents after remove", err, connect.CodeNotFound)
	_, err = f.client.RemoveWatcher(ctx, request(&fspb.RemoveWatcherRequest{WatcherId: id}))
	wantCode(t, "RemoveWatcher twice", err, connect.CodeNotFound)
	_, err = f.client.GetWatcherEvents(ctx, request(&fspb.GetWatcherEventsRequest{WatcherId: "nope"}))
	wantCode(t, "unknown id", err, connect.CodeNotFound)
	_, err = f.client.GetWatcherEvents(ctx, request(&fspb.GetWatcherEventsRequest{WatcherId: cr2.Msg.GetWatcherId()}, hdrUnauth, "1"))
	wantCode(t, "unauthenticated", err, connect.CodeUnauthenticated)
}

func hasEvent(evs []*fspb.FilesystemEvent, name string, typ fspb.EventType) bool {
	for _, e := range evs {
		if e.GetName() == name && e.GetType() == typ {
			return true
		}
	}
	return false
}

func TestPollBufferDropsOldest(t *testing.T) {
	f := newFixture(t)
	w, err := f.svc.startWatcher(f.rootCtx(context.Background()), watchSpec{path: f.home})
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	p := &pollWatcher{id: "t", w: w, done: make(chan struct{})}
	const extra = 10
	for i := range maxPendingEvents + extra {
		p.push(&fspb.FilesystemEvent{Name: string(rune('a'+i%26)) + "x", Type: fspb.EventType(i)})
	}
	evs, err := p.drain()
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != maxPendingEvents {
		t.Fatalf("kept %d events, want %d", len(evs), maxPendingEvents)
	}
	if evs[0].GetType() != fspb.EventType(extra) || evs[len(evs)-1].GetType() != fspb.EventType(maxPendingEvents+extra-1) {
		t.Fatalf("kept %v..%v, want the newest", evs[0].GetType(), evs[len(evs)-1].GetType())
	}
	if evs, _ := p.drain(); len(evs) != 0 {
		t.Fatalf("second drain returned %d events", len(evs))
	}
}

func TestCloseStopsEverything(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	es := f.watch(t, &fspb.WatchDirRequest{Path: f.home})
	cr, err := f.client.CreateWatcher(ctx, request(&fspb.CreateWatcherRequest{Path: f.home}))
	wantCode(t, "CreateWatcher", err, 0)

	f.svc.Close()
	select {
	case err := <-es.done:
		wantCode(t, "stream after Close", err, connect.CodeUnavailable)
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open after Close")
	}
	_, err = f.client.GetWatcherEvents(ctx, request(&fspb.GetWatcherEventsRequest{WatcherId: cr.Msg.GetWatcherId()}))
	wantCode(t, "GetWatcherEvents after Close", err, connect.CodeNotFound)
	_, err = f.client.CreateWatcher(ctx, request(&fspb.CreateWatcherRequest{Path: f.home}))
	wantCode(t, "CreateWatcher after Close", err, connect.CodeUnavailable)
	f.svc.Close() // idempotent
}

// TestNoLeaks opens and abandons many streams and polling watchers and
// checks that goroutines and file descriptors return to their baseline.
func TestNoLeaks(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	dir := filepath.Join(f.home, "leak")
	write(t, filepath.Join(dir, "a/b/c"), "")

	// Warm up the client's and server's connection machinery.
	warm := f.watch(t, &fspb.WatchDirRequest{Path: dir})
	warm.cancel()
	<-warm.done
	f.srv.Client().CloseIdleConnections()
	baseG, baseFD := settle(t, 0, 0, false)

	const n = 10
	var streams []*eventStream
	for range n {
		streams = append(streams, f.watch(t, &fspb.WatchDirRequest{Path: dir, Recursive: true}, keepaliveHeader, "1"))
	}
	var ids []string
	for range n {
		cr, err := f.client.CreateWatcher(ctx, request(&fspb.CreateWatcherRequest{Path: dir, Recursive: true}))
		wantCode(t, "CreateWatcher", err, 0)
		ids = append(ids, cr.Msg.GetWatcherId())
	}
	write(t, filepath.Join(dir, "a/b/new"), "")
	if g, fd := runtime.NumGoroutine(), openFDs(t); g < baseG+4*n || fd < baseFD+2*n {
		t.Fatalf("%d goroutines, %d fds with %d watches open (baseline %d, %d): measurement is broken", g, fd, 2*n, baseG, baseFD)
	}

	for _, es := range streams {
		es.cancel()
		<-es.done
	}
	f.srv.Client().CloseIdleConnections()
	// Each polling watcher holds two goroutines (fsnotify's reader and
	// ours) and one inotify descriptor.
	settle(t, baseG+2*n, baseFD+n, true)

	for _, id := range ids {
		_, err := f.client.RemoveWatcher(ctx, request(&fspb.RemoveWatcherRequest{WatcherId: id}))
		wantCode(t, "RemoveWatcher", err, 0)
	}
	f.srv.Client().CloseIdleConnections()
	settle(t, baseG, baseFD, true)
}

// settle waits until the goroutine and fd counts are at most the given
// values (when check is set) and returns the last counts.
func settle(t *testing.T, maxG, maxFD int, check bool) (int, int) {
	t.Helper()
	var g, fd int
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		g = runtime.NumGoroutine()
		fd = openFDs(t)
		if !check {
			time.Sleep(200 * time.Millisecond)
			g2, fd2 := runtime.NumGoroutine(), openFDs(t)
			if g2 == g && fd2 == fd {
				return g, fd
			}
			continue
		}
		if g <= maxG && fd <= maxFD {
			return g, fd
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("leak: %d goroutines (max %d), %d fds (max %d)\n%s", g, maxG, fd, maxFD, buf[:n])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
