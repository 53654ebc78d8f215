package files

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/wrenn-dev/envd/internal/state"
	"github.com/wrenn-dev/envd/internal/testlog"
)

// env is one handler behind a real loopback HTTP server, with a fresh
// temporary directory as the default workdir.
type env struct {
	t   testing.TB
	h   *Handler
	st  *state.State
	srv *httptest.Server
	dir string
	c   *http.Client
}

func newEnv(t testing.TB, opts Options) *env {
	t.Helper()
	dir := t.TempDir()
	st := state.New()
	if _, err := st.Apply(state.Init{DefaultWorkdir: &dir}, ""); err != nil {
		t.Fatal(err)
	}
	var log *slog.Logger
	if _, ok := t.(*testing.B); ok {
		log = slog.New(slog.DiscardHandler)
	} else {
		log = slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if opts.Token == nil {
		opts.Token = st.Token
	}
	h := New(st, log, opts)
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	// DisableCompression: the tests look at Content-Encoding themselves.
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(c.CloseIdleConnections)
	return &env{t: t, h: h, st: st, srv: srv, dir: dir, c: c}
}

// setToken puts an access token in force.
func (e *env) setToken(tok string) {
	if _, err := e.st.Apply(state.Init{AccessToken: &tok}, ""); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) url(path string, kv ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u := e.srv.URL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func (e *env) do(req *http.Request) (*http.Response, []byte) {
	e.t.Helper()
	resp, err := e.c.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return resp, body
}

func (e *env) get(u string, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.do(req)
}

func (e *env) postOctet(u string, body []byte, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/octet-stream")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.do(req)
}

// wantStatus checks the status and, for errors, E2B's {"message","code"}.
func wantStatus(t testing.TB, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, want, body)
	}
	if want < 400 {
		return
	}
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if eb.Code != want || eb.Message == "" {
		t.Fatalf("error body %+v, want code %d and a message", eb, want)
	}
}

func decodeEntries(t testing.TB, body []byte) []uploadEntry {
	t.Helper()
	var out []uploadEntry
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("response %q: %v", body, err)
	}
	return out
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func owner(t testing.TB, p string) (uid, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown to another user)")
	}
}

func writeTestFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sameEntry(a, b uploadEntry) bool {
	return a.Path == b.Path && a.Name == b.Name && a.Type == b.Type && fmt.Sprint(a.Metadata) == fmt.Sprint(b.Metadata)
}
