package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
)

func postInit(t *testing.T, e *envd, body map[string]any, token string) int {
	t.Helper()
	b, _ := json.Marshal(body)
	req := must(http.NewRequest("POST", e.base+"/init", bytes.NewReader(b)))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("X-Access-Token", token)
	}
	resp := must(http.DefaultClient.Do(req))
	resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent && resp.Header.Get("X-Envd-Version") == "" {
		t.Error("init reply lacks X-Envd-Version")
	}
	return resp.StatusCode
}

func TestAccessTokenAndInit(t *testing.T) {
	e := startEnvd(t)
	ctx := ctxT(t, 20*time.Second)
	now := time.Now().UTC()
	if c := postInit(t, e, map[string]any{
		"accessToken": "tok-1", "envVars": map[string]string{"FROM_INIT": "yes"},
		"defaultUser": "nobody", "timestamp": now.Format(time.RFC3339Nano),
	}, ""); c != 204 {
		t.Fatalf("first init: %d", c)
	}

	// Without the token: plain routes 401, RPCs Unauthenticated; /health open.
	for _, path := range []string{"/envs", "/metrics", "/files?path=/etc/hostname"} {
		resp := must(http.Get(e.base + path))
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.Contains(string(body), "message") {
			t.Errorf("GET %s without token: %d %s", path, resp.StatusCode, body)
		}
	}
	resp := must(http.Get(e.base + "/health"))
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("health with token set: %d", resp.StatusCode)
	}
	pc := e.process()
	if _, err := pc.List(ctx, connect.NewRequest(&pb.ListRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("list without token: %v", err)
	}
	bad := connect.NewRequest(&pb.ListRequest{})
	bad.Header().Set("X-Access-Token", "tok-2")
	if _, err := pc.List(ctx, bad); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("list with wrong token: %v", err)
	}

	// With the token: defaults from /init apply.
	req := sh(`echo "$FROM_INIT $(id -un) $E2B_SANDBOX"`)
	req.Header().Set("X-Access-Token", "tok-1")
	r := run(t, ctx, pc, req)
	if got := strings.TrimSpace(r.stdout.String()); got != "yes nobody true" {
		t.Fatalf("defaults not applied: %q", got)
	}
	envReq := must(http.NewRequest("GET", e.base+"/envs", nil))
	envReq.Header.Set("X-Access-Token", "tok-1")
	resp = must(http.DefaultClient.Do(envReq))
	var envs map[string]string
	json.NewDecoder(resp.Body).Decode(&envs)
	resp.Body.Close()
	if envs["FROM_INIT"] != "yes" {
		t.Fatalf("/envs = %v", envs)
	}
	mReq := must(http.NewRequest("GET", e.base+"/metrics", nil))
	mReq.Header.Set("X-Access-Token", "tok-1")
	resp = must(http.DefaultClient.Do(mReq))
	var m map[string]float64
	json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if m["mem_total"] <= 0 || m["cpu_count"] < 1 || m["disk_total"] <= 0 {
		t.Fatalf("/metrics = %v", m)
	}

	// Changing the token needs the old one; an older timestamp is ignored.
	if c := postInit(t, e, map[string]any{"accessToken": "tok-3"}, "wrong"); c != 401 {
		t.Fatalf("token change without old token: %d", c)
	}
	if c := postInit(t, e, map[string]any{
		"envVars": map[string]string{"FROM_INIT": "stale"}, "timestamp": now.Add(-time.Minute).Format(time.RFC3339Nano),
	}, "tok-1"); c != 204 {
		t.Fatalf("stale init: %d", c)
	}
	if c := postInit(t, e, map[string]any{"defaultUser": "no-such-user"}, "tok-1"); c != 400 {
		t.Fatalf("unknown default user: %d", c)
	}
	resp = must(http.DefaultClient.Do(envReq.Clone(envReq.Context())))
	json.NewDecoder(resp.Body).Decode(&envs)
	resp.Body.Close()
	if envs["FROM_INIT"] != "yes" {
		t.Fatalf("stale init applied: %v", envs)
	}
}
