package server

import (
	"bytes"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wrenn-dev/envd/internal/reaper"
	"github.com/wrenn-dev/envd/internal/state"
)

func newTestServer(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.State = state.New()
	cfg.Reaper = reaper.New()
	s := New(cfg)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { ts.Close(); s.Close(); cfg.Reaper.Close() })
	return ts
}

func TestInitAppliesHostSettings(t *testing.T) {
	var gotSeed []byte
	var gotClock time.Time
	var gotHost string
	ts := newTestServer(t, Config{
		Reseed:      func(b []byte) error { gotSeed = b; return nil },
		SetClock:    func(t time.Time) error { gotClock = t; return nil },
		SetHostname: func(h string) error { gotHost = h; return nil },
	})
	seed := []byte("0123456789abcdef")
	body := `{"entropy":"` + base64.StdEncoding.EncodeToString(seed) + `","timestamp":"2030-01-02T03:04:05Z","hostname":"sb-1"}`
	resp, err := http.Post(ts.URL+"/init", "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("X-Envd-Version") != Version {
		t.Fatalf("init: %d %q", resp.StatusCode, resp.Header.Get("X-Envd-Version"))
	}
	if !bytes.Equal(gotSeed, seed) || gotHost != "sb-1" || gotClock.Year() != 2030 {
		t.Fatalf("seed %q host %q clock %v", gotSeed, gotHost, gotClock)
	}
}

func TestInitRejectsBadBodies(t *testing.T) {
	ts := newTestServer(t, Config{})
	for _, c := range []struct {
		body string
		code int
	}{
		{`{not json`, http.StatusBadRequest},
		{`{"defaultUser":"no-such-user-x"}`, http.StatusBadRequest},
		{`{"accessToken":"a"}`, http.StatusNoContent},
		{`{"accessToken":"b"}`, http.StatusUnauthorized},
		{`{"envVars":{"A":"1"},"accessToken":"a"}`, http.StatusNoContent},
	} {
		resp, err := http.Post(ts.URL+"/init", "application/json", bytes.NewBufferString(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s: %d, want %d", c.body, resp.StatusCode, c.code)
		}
	}
	big := bytes.Repeat([]byte(" "), maxInitBody+10)
	resp, err := http.Post(ts.URL+"/init", "application/json", bytes.NewReader(append(big, '{', '}')))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("oversize init: %d", resp.StatusCode)
	}
}

func TestCORSPreflightAndHealth(t *testing.T) {
	ts := newTestServer(t, Config{})
	req, _ := http.NewRequest(http.MethodOptions, ts.URL+"/process.Process/Start", nil)
	req.Header.Set("Origin", "https://example.test")
	req.Header.Set("Access-Control-Request-Method", "POST")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	resp, err = http.Get(ts.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("health: %d", resp.StatusCode)
	}
}
