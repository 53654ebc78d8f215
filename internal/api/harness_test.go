package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/pgtest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/scheduler"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const testHost = "host-0000aaaa"

// env is one test's API on a fresh database with one fake host.
type env struct {
	t     testing.TB
	st    *store.Store
	agent *fakeAgent
	srv   *httptest.Server
	audit *store.AuditWriter
	// activity is written only by Flush (its interval is an hour).
	activity *store.ActivityRecorder
	admin    string // admin key (owner "ops")
	alice    string // user keys
	bob      string
}

func newEnv(t testing.TB, cfg Config, deps ...func(*Deps)) *env {
	t.Helper()
	db := pgtest.New(t)
	var log *slog.Logger
	if _, fuzz := t.(*testing.F); fuzz || !testing.Verbose() {
		log = slog.New(slog.DiscardHandler)
	} else {
		log = slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	st := store.New(db.Pool, log)
	ctx := context.Background()
	if _, err := st.UpsertHost(ctx, store.HostRegistration{ID: testHost, GRPCEndpoint: "127.0.0.1:1",
		Capacity: models.Capacity{TotalVCPUs: 1000, TotalMemoryMB: 1 << 20}}); err != nil {
		t.Fatal(err)
	}
	sched, err := scheduler.New(scheduler.LeastLoaded, st, "")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, agent: newFakeAgent()}
	e.audit = st.NewAuditWriter(store.AuditOptions{})
	if cfg.RateLimit.Rate == 0 {
		cfg.RateLimit.Rate, cfg.RateLimit.Burst = 1e6, 1e6
	}
	e.activity = st.NewActivityRecorder(time.Hour)
	d := Deps{Store: st, Agents: fakeAgents{testHost: e.agent}, Scheduler: sched, Audit: e.audit, Activity: e.activity, Log: log}
	for _, f := range deps {
		f(&d)
	}
	s, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		e.srv.Close()
		_ = e.audit.Close(context.Background())
		_ = e.activity.Close(context.Background())
	})
	e.admin = e.key(CreateKeyRequest{OwnerID: "ops", Admin: true}).Key
	e.alice = e.key(CreateKeyRequest{OwnerID: "alice", Pool: &store.Pool{VCPUs: 64, MemoryMB: 64 << 10, StorageMB: 1 << 20}}).Key
	e.bob = e.key(CreateKeyRequest{OwnerID: "bob", Pool: &store.Pool{VCPUs: 64, MemoryMB: 64 << 10, StorageMB: 1 << 20}}).Key
	return e
}

func (e *env) key(req CreateKeyRequest) CreatedKey {
	e.t.Helper()
	k, err := NewKey(context.Background(), e.st, req)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) errCode() string {
	var b ErrorBody
	_ = json.Unmarshal(r.body, &b)
	return b.Error.Code
}

func (e *env) do(method, path, key string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		js, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// create makes a running sandbox for key.
func (e *env) create(key string, req CreateRequest) SandboxView {
	e.t.Helper()
	r := e.do("POST", "/v1/sandboxes", key, req)
	if r.status != http.StatusCreated {
		e.t.Fatalf("create: %d %s", r.status, r.body)
	}
	var v SandboxView
	if err := json.Unmarshal(r.body, &v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

func decode[T any](t testing.TB, r resp) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

// used returns the pool in use of the key with owner.
func (e *env) used(owner string) store.Pool {
	e.t.Helper()
	keys, err := e.st.ListAPIKeys(context.Background(), store.AdminScope)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, k := range keys {
		if k.OwnerID == owner {
			return k.Used
		}
	}
	e.t.Fatalf("no key of %s", owner)
	return store.Pool{}
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

func urlPathEscape(s string) string { return (&url.URL{Path: s}).EscapedPath() }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
