package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"
)

// logRecorder is a slog handler that keeps messages (for assertions) and
// also writes them to the test log.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
	out  io.Writer
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.mu.Lock()
	h.msgs = append(h.msgs, b.String())
	h.mu.Unlock()
	if h.out != nil {
		fmt.Fprintln(h.out, b.String())
	}
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }
func (h *logRecorder) contains(s string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testLog(t *testing.T) (*slog.Logger, *logRecorder) {
	h := &logRecorder{out: t.Output()}
	return slog.New(h), h
}

// testConfig is the production yamux config with a keepalive too slow to
// matter, so recovery in a test can only come from the handshake.
func testConfig(log *slog.Logger) *yamux.Config {
	c := yamuxConfig(log)
	c.KeepAliveInterval = 5 * time.Minute
	return c
}

func newTestListener(t *testing.T, port io.ReadWriteCloser, cfg *yamux.Config) *serialListener {
	t.Helper()
	log := slog.New(cfg.Logger.(yamuxLogger).log.Handler())
	l := newSerialListener(context.Background(), log, port, SerialAddr{Name: "test"}, cfg)
	t.Cleanup(func() { l.Close() })
	return l
}

// testHandler serves /hello, /echo (POST body back) and /bytes?n= (n
// bytes of a fixed pattern).
func testHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		// HTTP/1 cannot read the body after the response started.
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(b)
	})
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		for n > 0 {
			k := min(n, len(chunk))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	return mux
}

func serveHTTP(t testing.TB, l net.Listener) {
	srv := &http.Server{Handler: testHandler()}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
}

// httpClient sends every request over a new stream of sess.
func httpClient(sess *yamux.Session) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:         func(context.Context, string, string) (net.Conn, error) { return sess.Open() },
			MaxIdleConnsPerHost: 100,
		},
	}
}

func get(c *http.Client, path string) (string, error) {
	resp, err := c.Get("http://envd" + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), nil
}

func echo(c *http.Client, body []byte) error {
	resp, err := c.Post("http://envd/echo", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /echo: %s", resp.Status)
	}
	if !bytes.Equal(got, body) {
		return fmt.Errorf("echo of %d bytes returned %d different bytes", len(body), len(got))
	}
	return nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func dialHost(t testing.TB, conn net.Conn) *yamux.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := DialSerialHost(ctx, conn)
	if err != nil {
		conn.Close()
		t.Fatalf("DialSerialHost: %v", err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

// socketPair returns two connected stream sockets: the first as an
// *os.File (as a guest port device would be), the second as a net.Conn.
func socketPair(t testing.TB) (*os.File, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	guest := os.NewFile(uintptr(fds[0]), "guest-port")
	hf := os.NewFile(uintptr(fds[1]), "host-end")
	host, err := net.FileConn(hf)
	hf.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close() })
	return guest, host
}

// readerConn reads from r instead of the connection.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }
