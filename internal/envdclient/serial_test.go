package envdclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// fakeGuest plays envd's side of the virtio-serial channel behind a unix
// socket, the way QEMU's chardev server presents it: one host connection
// at a time. It follows envd/internal/transport's protocol: READY every
// 100 ms, skip everything until HELLO, GO, then a yamux server whose
// streams carry HTTP. A guest that is "stale" (restored from a snapshot)
// starts inside an old session and ignores everything until a break.
type fakeGuest struct {
	t     *testing.T
	ln    net.Listener
	stale atomic.Bool
	// junk is written first on every connection (bytes of an old session).
	junk []byte
	// silent guests never answer.
	silent bool
	// deafConns is how many connections from now on get nothing from the
	// guest (its output stuck in QEMU, as a throttled port's is) until the
	// host hangs up.
	deafConns atomic.Int32

	sessions atomic.Int32
	breaks   atomic.Int32

	mu      sync.Mutex
	conn    net.Conn
	dropped bool
}

func newFakeGuest(t *testing.T, configure ...func(*fakeGuest)) *fakeGuest {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "envd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGuest{t: t, ln: ln}
	for _, f := range configure {
		f(g)
	}
	t.Cleanup(func() { ln.Close(); g.dropConn() })
	go g.serve()
	return g
}

func (g *fakeGuest) path() string { return g.ln.Addr().String() }

// dropConn closes the current host connection, as QEMU does when the host
// side goes away (the guest is then left in its old session).
func (g *fakeGuest) dropConn() {
	g.mu.Lock()
	if g.conn != nil {
		g.dropped = true
		g.conn.Close()
	}
	g.mu.Unlock()
}

func (g *fakeGuest) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		g.conn = c
		g.mu.Unlock()
		g.handle(c) // one host client at a time, like QEMU
		c.Close()
	}
}

func (g *fakeGuest) handle(c net.Conn) {
	if len(g.junk) > 0 {
		c.Write(g.junk)
	}
	if g.silent || g.deafConns.Add(-1) >= 0 {
		io.Copy(io.Discard, c)
		return
	}
	buf := make([]byte, 1)
	if g.stale.Load() {
		// Inside an old yamux session: a 0xFF version byte ends it.
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			if buf[0] == 0xFF {
				g.breaks.Add(1)
				g.stale.Store(false)
				break
			}
		}
	}
	stop := make(chan struct{})
	var wmu sync.Mutex
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			wmu.Lock()
			c.Write([]byte(readyMarker))
			wmu.Unlock()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	var seen []byte
	for !bytes.HasSuffix(seen, []byte(helloMarker)) {
		if _, err := c.Read(buf); err != nil {
			close(stop)
			return
		}
		seen = append(seen, buf[0])
	}
	close(stop)
	wmu.Lock()
	c.Write([]byte(goMarker))
	wmu.Unlock()
	sess, err := yamux.Server(c, nil)
	if err != nil {
		return
	}
	g.sessions.Add(1)
	// From here on the guest is in a session; if the host vanishes it
	// stays "stale" until a break, like a guest frozen in a snapshot.
	g.stale.Store(true)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Envd-Version", "fake")
		w.WriteHeader(http.StatusNoContent)
	})
	srv := &http.Server{Handler: mux}
	srv.Serve(sess)
	<-sess.CloseChan()
	g.mu.Lock()
	if !g.dropped {
		// The host closed the connection: the guest saw EOF and is back
		// in handshake mode, as envd is.
		g.stale.Store(false)
	}
	g.dropped = false
	g.mu.Unlock()
}

func TestSerialHandshake(t *testing.T) {
	tests := []struct {
		name       string
		stale      bool // guest starts inside an old session
		hostStale  bool // host knows and breaks at once
		junk       []byte
		wantBreaks int32
		maxTook    time.Duration
	}{
		{name: "fresh guest", maxTook: 250 * time.Millisecond},
		{name: "junk before READY", junk: []byte("\x00\x01old yamux bytes WRENN-REA"), maxTook: 250 * time.Millisecond},
		{name: "stale guest, host breaks at once", stale: true, hostStale: true, wantBreaks: 1, maxTook: 250 * time.Millisecond},
		{name: "stale guest, break after 300 ms", stale: true, wantBreaks: 1, maxTook: time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGuest(t, func(g *fakeGuest) {
				g.stale.Store(tc.stale)
				g.junk = tc.junk
			})
			d := NewSerialDialer(g.path(), SerialOptions{Stale: tc.hostStale, Log: slog.New(slog.DiscardHandler)})
			defer d.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			c := New(d, Options{})
			v, err := c.Health(ctx)
			took := time.Since(start)
			if err != nil || v != "fake" {
				t.Fatalf("health %q %v", v, err)
			}
			if g.breaks.Load() != tc.wantBreaks {
				t.Errorf("guest saw %d breaks, want %d", g.breaks.Load(), tc.wantBreaks)
			}
			if took > tc.maxTook {
				t.Errorf("took %v, want under %v", took, tc.maxTook)
			}
			if tc.stale && !tc.hostStale && took < breakEvery {
				t.Errorf("took %v: the break must wait %v without READY", took, breakEvery)
			}
		})
	}
}

func TestSerialDialerRecoversSession(t *testing.T) {
	g := newFakeGuest(t)
	d := NewSerialDialer(g.path(), SerialOptions{})
	defer d.Close()
	c := New(d, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	// The connection dies (a restore, QEMU restarted the chardev); the
	// guest is left inside its old session. The next request redials,
	// breaks the old session at once and handshakes again.
	g.dropConn()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if s, _, _ := d.current(); s == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.Reset()
	start := time.Now()
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 250*time.Millisecond {
		t.Errorf("redial took %v; the break should be sent at once", took)
	}
	if g.sessions.Load() != 2 || g.breaks.Load() != 1 {
		t.Errorf("sessions %d breaks %d, want 2 and 1", g.sessions.Load(), g.breaks.Load())
	}
	st := d.Stats()
	if st.Sessions != 2 {
		t.Errorf("dialer stats %+v", st)
	}
}

// A connection on which the guest's READYs never arrive is given up after
// AnswerWait and a new one made, for sessions and for Quiesce alike.
func TestSerialDialerRedialsWithoutAnswer(t *testing.T) {
	for _, quiesce := range []bool{false, true} {
		t.Run(fmt.Sprintf("quiesce=%v", quiesce), func(t *testing.T) {
			g := newFakeGuest(t)
			g.deafConns.Store(2)
			d := NewSerialDialer(g.path(), SerialOptions{AnswerWait: 150 * time.Millisecond})
			defer d.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if quiesce {
				release, err := d.Quiesce(ctx)
				if err != nil {
					t.Fatal(err)
				}
				release()
			}
			if _, err := New(d, Options{}).Health(ctx); err != nil {
				t.Fatal(err)
			}
			if st := d.Stats(); st.Redials != 2 || st.Sessions != 1 {
				t.Errorf("stats %+v, want 2 redials and 1 session", st)
			}
		})
	}
}

func TestSerialDialerErrors(t *testing.T) {
	t.Run("silent guest times out", func(t *testing.T) {
		g := newFakeGuest(t, func(g *fakeGuest) { g.silent = true })
		d := NewSerialDialer(g.path(), SerialOptions{})
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		defer cancel()
		_, err := d.DialEnvd(ctx)
		if !errors.Is(err, ErrHandshake) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want handshake deadline error", err)
		}
	})
	t.Run("socket never appears", func(t *testing.T) {
		d := NewSerialDialer(filepath.Join(t.TempDir(), "none.sock"), SerialOptions{})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if _, err := d.DialEnvd(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want deadline exceeded", err)
		}
	})
	t.Run("closed dialer", func(t *testing.T) {
		g := newFakeGuest(t)
		d := NewSerialDialer(g.path(), SerialOptions{})
		d.Close()
		if _, err := d.DialEnvd(context.Background()); !errors.Is(err, ErrDialerClosed) {
			t.Fatalf("err %v, want ErrDialerClosed", err)
		}
	})
}

func TestSerialQuiesce(t *testing.T) {
	g := newFakeGuest(t)
	d := NewSerialDialer(g.path(), SerialOptions{})
	defer d.Close()
	c := New(d, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	release, err := d.Quiesce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// While quiesced no session can be made.
	short, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = d.DialEnvd(short)
	scancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial while quiesced: %v, want deadline exceeded", err)
	}
	release()
	release() // idempotent
	c.Reset()
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	if g.sessions.Load() != 2 {
		t.Errorf("sessions %d, want 2", g.sessions.Load())
	}
}
