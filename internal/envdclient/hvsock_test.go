package envdclient

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeFirecrackerVsock serves a hybrid-vsock UDS the way Firecracker does:
// it reads `CONNECT <port>\n` and, when a guest listener exists on that
// port, answers `OK <host port>\n` and splices the connection to it; for
// any other port or a malformed command it closes without a reply.
// Guest listeners here are handlers working on the connection directly.
type fakeFirecrackerVsock struct {
	ln     net.Listener
	guests map[string]func(net.Conn)
}

func newFakeVsock(t *testing.T, guests map[string]func(net.Conn)) *fakeFirecrackerVsock {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "v.sock"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFirecrackerVsock{ln: ln, guests: guests}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.handle(c)
		}
	}()
	return f
}

func (f *fakeFirecrackerVsock) handle(c net.Conn) {
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		return
	}
	port, ok := strings.CutPrefix(strings.TrimSpace(line), "CONNECT ")
	guest := f.guests[port]
	if !ok || guest == nil {
		c.Close()
		return
	}
	guest(c)
}

// httpGuest answers OK, then serves HTTP on the connection.
func httpGuest(c net.Conn) {
	c.Write([]byte("OK 1073741824\n"))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Envd-Version", "vsock")
		w.WriteHeader(http.StatusNoContent)
	})
	(&http.Server{Handler: mux}).Serve(&oneConnListener{c: c, done: make(chan struct{})})
}

// eagerGuest sends data in the same write as the OK line.
func eagerGuest(c net.Conn) {
	c.Write([]byte("OK 1073741825\nguest-first"))
	io.Copy(io.Discard, c)
}

type oneConnListener struct {
	c    net.Conn
	done chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if c := l.c; c != nil {
		l.c = nil
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}
func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return &net.UnixAddr{Name: "vsock", Net: "unix"} }

func TestHybridVsock(t *testing.T) {
	f := newFakeVsock(t, map[string]func(net.Conn){
		"49983": httpGuest,
		"7":     eagerGuest,
		"8":     func(c net.Conn) { c.Write([]byte("NOPE\n")); c.Close() },
	})
	path := f.ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	t.Run("client over vsock", func(t *testing.T) {
		c := New(HybridVsockDialer{Path: path}, Options{})
		defer c.Close()
		v, err := c.Health(ctx)
		if err != nil || v != "vsock" {
			t.Fatalf("health %q %v", v, err)
		}
	})
	t.Run("bytes after OK are kept", func(t *testing.T) {
		conn, err := HybridVsockDialer{Path: path, Port: 7}.DialEnvd(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		buf := make([]byte, len("guest-first"))
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "guest-first" {
			t.Fatalf("read %q %v", buf, err)
		}
	})
	for _, tc := range []struct {
		name string
		port uint32
		want string
	}{
		{"no listener on the port", 9, "no guest listener"},
		{"garbage reply", 8, "unexpected CONNECT reply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := HybridVsockDialer{Path: path, Port: tc.port}.DialEnvd(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
