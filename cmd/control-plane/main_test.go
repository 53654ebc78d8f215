package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/auth"
	"github.com/wrenn-dev/wrenn-sandbox/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestMigrateCommands(t *testing.T) {
	db := pgtest.NewEmpty(t)
	env := envOf(map[string]string{"DATABASE_URL": db.DSN})
	ctx := context.Background()
	steps := []struct {
		cmd      string
		wantOut  string
		wantFail bool
	}{
		{"status", "Pending", false},
		{"up", "", false},
		{"down", "", false},
		{"up", "", false},
		{"status", "Applied", false},
		{"sideways", "", true},
	}
	for _, s := range steps {
		var out, errb bytes.Buffer
		err := run(ctx, []string{"migrate", s.cmd}, env, &out, &errb)
		if (err != nil) != s.wantFail {
			t.Fatalf("migrate %s: err = %v, stderr %s", s.cmd, err, errb.String())
		}
		if s.wantOut != "" && !strings.Contains(strings.ToLower(out.String()), strings.ToLower(s.wantOut)) {
			t.Fatalf("migrate %s: output %q lacks %q", s.cmd, out.String(), s.wantOut)
		}
	}
	if err := run(ctx, []string{"migrate", "up"}, envOf(nil), io.Discard, io.Discard); err == nil {
		t.Fatal("migrate without DATABASE_URL succeeded")
	}
}

func TestKeysCreateAndServe(t *testing.T) {
	db := pgtest.NewEmpty(t)
	// Lago cannot run here; a server that accepts its events API stands in.
	lagoSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }))
	defer lagoSrv.Close()
	env := map[string]string{"DATABASE_URL": db.DSN, "CP_LISTEN_ADDR": "127.0.0.1:0", "CP_MIGRATE_ON_START": "true",
		"LAGO_API_URL": lagoSrv.URL, "LAGO_API_KEY": "k"}
	cfg, err := loadConfig(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, log, func(a string) { addrc <- a }) }()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("serve did not start")
	}
	// Migrated on start: keys create works now.
	var out bytes.Buffer
	if err := run(context.Background(), []string{"keys", "create", "--owner", "alice", "--admin"}, envOf(env), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(out.String())
	if !auth.ValidFormat(key) {
		t.Fatalf("printed key %q is not a key", key)
	}
	get := func(path, key string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if key != "" {
			req.Header.Set("X-API-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("/healthz", ""); c != 200 {
		t.Fatalf("healthz = %d", c)
	}
	if c := get("/v1/keys", key); c != 200 {
		t.Fatalf("GET /v1/keys with the seeded admin key = %d", c)
	}
	if c := get("/v1/keys", ""); c != 401 {
		t.Fatalf("GET /v1/keys without key = %d", c)
	}
	// The lifecycle manager runs and leads (one replica).
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "wrenn_lifecycle_leader 1") && strings.Contains(string(body), "wrenn_usage_events_pending 0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no wrenn_lifecycle_leader 1 and wrenn_usage_events_pending 0 on /metrics: lifecycle manager or usage sender not running")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var js bytes.Buffer
	if err := run(context.Background(), []string{"keys", "create", "--owner", "bob", "--json"}, envOf(env), &js, io.Discard); err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(js.Bytes(), &rec); err != nil || rec["owner_id"] != "bob" || rec["is_admin"] != false {
		t.Fatalf("keys create --json: %v %s", err, js.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("graceful shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr bool
		check   func(cpConfig) bool
	}{
		{"defaults", map[string]string{"DATABASE_URL": "postgres://x"}, false, func(c cpConfig) bool {
			return c.ListenAddr == ":8000" && !c.MigrateOnStart && c.Scheduler == "least_loaded" && c.HeartbeatInterval == 5*time.Second &&
				c.LifecycleInterval == 10*time.Second && c.HibernateAfter == time.Hour
		}},
		{"hibernate off", map[string]string{"DATABASE_URL": "x", "CP_HIBERNATE_AFTER": "off"}, false, func(c cpConfig) bool {
			return c.HibernateAfter == 0 && c.LifecycleInterval == 10*time.Second
		}},
		{"bad hibernate", map[string]string{"DATABASE_URL": "x", "CP_HIBERNATE_AFTER": "-1h"}, true, nil},
		{"lifecycle off", map[string]string{"DATABASE_URL": "x", "CP_LIFECYCLE_INTERVAL": "off"}, false, func(c cpConfig) bool {
			return c.LifecycleInterval == 0
		}},
		{"lifecycle 0", map[string]string{"DATABASE_URL": "x", "CP_LIFECYCLE_INTERVAL": "0"}, false, func(c cpConfig) bool {
			return c.LifecycleInterval == 0
		}},
		{"lifecycle 2s", map[string]string{"DATABASE_URL": "x", "CP_LIFECYCLE_INTERVAL": "2s"}, false, func(c cpConfig) bool {
			return c.LifecycleInterval == 2*time.Second
		}},
		{"bad lifecycle", map[string]string{"DATABASE_URL": "x", "CP_LIFECYCLE_INTERVAL": "soon"}, true, nil},
		{"lago", map[string]string{"DATABASE_URL": "x", "LAGO_API_URL": "http://lago:3000", "LAGO_API_KEY": "k"}, false, func(c cpConfig) bool {
			return c.LagoURL == "http://lago:3000" && c.LagoAPIKey == "k"
		}},
		{"endpoints", map[string]string{"DATABASE_URL": "x", "CP_AGENT_ENDPOINTS": " a:1, ,b:2 "}, false, func(c cpConfig) bool {
			return len(c.AgentEndpoints) == 2 && c.AgentEndpoints[1] == "b:2"
		}},
		{"no database", map[string]string{}, true, nil},
		{"bad bool", map[string]string{"DATABASE_URL": "x", "CP_MIGRATE_ON_START": "maybe"}, true, nil},
		{"bad duration", map[string]string{"DATABASE_URL": "x", "CP_SHUTDOWN_TIMEOUT": "-1s"}, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadConfig(envOf(tc.env))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if tc.check != nil && !tc.check(c) {
				t.Fatalf("config %+v", c)
			}
		})
	}
}
