package integration

// Control plane end to end: the REST API (internal/api) on a real
// PostgreSQL (pgtest), scheduling onto a real host agent reached over
// mTLS by internal/agentclient, booting real QEMU VMs from the minimal
// template.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/api"
	"github.com/wrenn-dev/wrenn-sandbox/internal/config"
	"github.com/wrenn-dev/wrenn-sandbox/internal/lifecycle"
	"github.com/wrenn-dev/wrenn-sandbox/internal/pgtest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/scheduler"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// cpAgents adapts the agent pool to api.Agents.
type cpAgents struct{ p *agentclient.Pool }

func (a cpAgents) Agent(hostID string) (api.Agent, error) {
	c, err := a.p.Get(hostID)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// cpEnv is a control plane in front of one real agent.
type cpEnv struct {
	t     testing.TB
	st    *store.Store
	srv   *httptest.Server
	agent *agentClient
	pool  *agentclient.Pool
}

func newCPEnv(t testing.TB) *cpEnv {
	t.Helper()
	ae := newAgentEnv(t)
	agent := ae.startInProcess(t, "AGENT_TOTAL_VCPUS=64", "AGENT_TOTAL_MEMORY_MB=16384")
	db := pgtest.New(t)
	log := slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelInfo}))
	if _, bench := t.(*testing.B); bench {
		log = slog.New(slog.DiscardHandler) // per-request logs would be what is measured
	}
	st := store.New(db.Pool, log)
	tlsCfg, err := config.ClientTLS(ae.certs.Client, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	pool := agentclient.NewPool(tlsCfg, st, log)
	t.Cleanup(func() { _ = pool.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pool.Register(ctx, agent.addr); err != nil {
		t.Fatal(err)
	}
	sched, err := scheduler.New(scheduler.LeastLoaded, st, "")
	if err != nil {
		t.Fatal(err)
	}
	audit := st.NewAuditWriter(store.AuditOptions{})
	s, err := api.New(api.Config{}, api.Deps{Store: st, Agents: cpAgents{pool}, Scheduler: sched, Audit: audit, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	e := &cpEnv{t: t, st: st, srv: httptest.NewServer(s.Handler()), agent: agent, pool: pool}
	t.Cleanup(func() {
		e.srv.Close()
		_ = audit.Close(context.Background())
	})
	return e
}

// key makes a user key whose rate limit (1000/s, burst 100) stays out of
// the way of these tests.
func (e *cpEnv) key(owner string, pool *store.Pool) string {
	e.t.Helper()
	k, err := api.NewKey(context.Background(), e.st, api.CreateKeyRequest{OwnerID: owner, Pool: pool,
		RateLimitPerSec: 1000, RateLimitBurst: 100})
	if err != nil {
		e.t.Fatal(err)
	}
	return k.Key
}

func (e *cpEnv) do(method, path, key string, body io.Reader, hdr ...string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("X-API-Key", key)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// create makes a sandbox through REST and returns it once running.
func (e *cpEnv) create(key string, body map[string]any) api.SandboxView {
	e.t.Helper()
	code, out := e.do("POST", "/v1/sandboxes", key, jsonBody(body))
	if code != 201 {
		e.t.Fatalf("create: %d %s", code, out)
	}
	var sb api.SandboxView
	if err := json.Unmarshal(out, &sb); err != nil {
		e.t.Fatal(err)
	}
	return sb
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

// Create, exec (plain and streamed), files, pause, resume and destroy
// through HTTP against a real VM.
func TestCPLifecycleRealAgent(t *testing.T) {
	e := newCPEnv(t)
	key := e.key("alice", nil)
	code, body := e.do("POST", "/v1/sandboxes", key, jsonBody(map[string]any{
		"template": "minimal", "memory_mb": 256, "metadata": map[string]string{"t": "it"}, "envs": map[string]string{"GREETING": "hi"},
		"network": map[string]any{"egress": "deny_all", "allow_cidrs": []string{"198.51.100.0/24"}}}))
	if code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	var sb api.SandboxView
	if err := json.Unmarshal(body, &sb); err != nil || sb.Status != "running" || sb.HostID != "host-it" {
		t.Fatalf("created %s (%v)", body, err)
	}
	base := "/v1/sandboxes/" + sb.ID
	code, body = e.do("POST", base+"/exec", key, jsonBody(api.ExecRequest{Cmd: "sh", Args: []string{"-c", "echo hello $GREETING; echo err >&2; exit 7"}}))
	var res api.ExecResult
	if err := json.Unmarshal(body, &res); code != 200 || err != nil || res.Stdout != "hello hi\n" || res.Stderr != "err\n" || res.ExitCode != 7 {
		t.Fatalf("exec: %d %s", code, body)
	}
	code, body = e.do("POST", base+"/exec", key, jsonBody(api.ExecRequest{Cmd: "sh", Args: []string{"-c", "echo one; sleep 0.2; echo two"}}),
		"Accept", "text/event-stream")
	var events []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			events = append(events, ev)
		}
	}
	if code != 200 || events[0] != "start" || events[len(events)-1] != "exit" || !strings.Contains(string(body), `"exit_code":0`) {
		t.Fatalf("stream: %d %v %s", code, events, body)
	}
	payload := bytes.Repeat([]byte("wrenn!"), 200000) // 1.2 MB, several chunks
	code, body = e.do("PUT", base+"/files?path=/tmp/up.bin", key, bytes.NewReader(payload))
	if code != 200 || !strings.Contains(string(body), `"bytes_written":1200000`) {
		t.Fatalf("upload: %d %s", code, body)
	}
	code, body = e.do("GET", base+"/files/tmp/up.bin", key, nil)
	if code != 200 || !bytes.Equal(body, payload) {
		t.Fatalf("download: %d, %d bytes", code, len(body))
	}
	if code, body = e.do("GET", base+"/files/tmp/none", key, nil); code != 404 {
		t.Fatalf("missing file: %d %s", code, body)
	}
	if code, body = e.do("POST", base+"/pause", key, nil); code != 200 || !strings.Contains(string(body), `"paused"`) {
		t.Fatalf("pause: %d %s", code, body)
	}
	if code, _ = e.do("POST", base+"/pause", key, nil); code != 409 {
		t.Fatalf("pause twice: %d", code)
	}
	if code, _ = e.do("POST", base+"/exec", key, jsonBody(api.ExecRequest{Cmd: "true"})); code != 409 {
		t.Fatalf("exec while paused: %d", code)
	}
	if code, body = e.do("POST", base+"/resume", key, nil); code != 200 {
		t.Fatalf("resume: %d %s", code, body)
	}
	code, body = e.do("POST", base+"/exec", key, jsonBody(api.ExecRequest{Cmd: "cat", Args: []string{"/tmp/up.bin"}}))
	if err := json.Unmarshal(body, &res); code != 200 || err != nil || len(res.Stdout) != len(payload) {
		t.Fatalf("exec after resume: %d %d", code, len(res.Stdout))
	}

	// Idle past timeout_sec: the lifecycle manager pauses the real VM;
	// a resume finds everything as it was.
	ctx := context.Background()
	if _, err := e.st.Pool().Exec(ctx, `UPDATE sandboxes SET last_active_at = now() - make_interval(secs => timeout_sec + 1)
		WHERE id = $1`, sb.ID); err != nil {
		t.Fatal(err)
	}
	lm := lifecycle.New(e.st, e.pool, nil, lifecycle.Config{})
	if n, err := lm.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("idle sweep paused %d (%v), want 1", n, err)
	}
	if code, body = e.do("GET", base, key, nil); code != 200 || !strings.Contains(string(body), `"status":"paused"`) {
		t.Fatalf("after idle sweep: %d %s", code, body)
	}
	got, err := e.agent.c.GetSandbox(ctx, &pb.GetSandboxRequest{SandboxId: sb.ID})
	if err != nil || got.GetSandbox().GetState() != pb.SandboxState_SANDBOX_STATE_PAUSED {
		t.Fatalf("agent after the idle pause: %v %v", got, err)
	}
	// The egress policy given to the REST create is what the agent applied.
	if n := got.GetSandbox().GetNetwork(); n.GetEgress() != pb.NetworkPolicy_EGRESS_DENY_ALL ||
		len(n.GetAllowCidrs()) != 1 || n.GetAllowCidrs()[0] != "198.51.100.0/24" {
		t.Fatalf("agent's network policy %v, want deny all but 198.51.100.0/24", n)
	}
	// Paused past HibernateAfter: the sweep hibernates it (the VM stops);
	// a REST resume wakes it from the snapshot with its files and its
	// background process.
	code, body = e.do("POST", base+"/resume", key, nil)
	if code != 200 {
		t.Fatalf("resume after idle pause: %d %s", code, body)
	}
	code, body = e.do("POST", base+"/exec", key, jsonBody(api.ExecRequest{Cmd: "sh", Args: []string{"-c", "sleep 3600 & echo $!"}}))
	if err := json.Unmarshal(body, &res); code != 200 || err != nil || res.ExitCode != 0 {
		t.Fatalf("start a background process: %d %s", code, body)
	}
	bgPID := strings.TrimSpace(res.Stdout)
	if code, body = e.do("POST", base+"/pause", key, nil); code != 200 {
		t.Fatalf("pause: %d %s", code, body)
	}
	hib := lifecycle.New(e.st, e.pool, nil, lifecycle.Config{HibernateAfter: time.Millisecond})
	time.Sleep(5 * time.Millisecond)
	if n, err := hib.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("hibernate sweep changed %d (%v), want 1", n, err)
	}
	got, err = e.agent.c.GetSandbox(ctx, &pb.GetSandboxRequest{SandboxId: sb.ID})
	if err != nil || got.GetSandbox().GetState() != pb.SandboxState_SANDBOX_STATE_HIBERNATED {
		t.Fatalf("agent after the hibernate sweep: %v %v", got, err)
	}
	if code, body = e.do("POST", base+"/exec", key, jsonBody(api.ExecRequest{Cmd: "true"})); code != 409 {
		t.Fatalf("exec while hibernated: %d %s", code, body)
	}
	if code, body = e.do("POST", base+"/resume", key, nil); code != 200 || !strings.Contains(string(body), `"status":"running"`) {
		t.Fatalf("wake: %d %s", code, body)
	}
	code, body = e.do("POST", base+"/exec", key, jsonBody(api.ExecRequest{Cmd: "sh", Args: []string{"-c", "wc -c < /tmp/up.bin; kill -0 " + bgPID + " && echo alive"}}))
	if err := json.Unmarshal(body, &res); code != 200 || err != nil || res.Stdout != "1200000\nalive\n" {
		t.Fatalf("exec after hibernate and wake: %d %s", code, body)
	}
	// And by hand: hibernate a running sandbox through REST, wake it.
	if code, body = e.do("POST", base+"/hibernate", key, nil); code != 200 || !strings.Contains(string(body), `"status":"hibernated"`) {
		t.Fatalf("REST hibernate: %d %s", code, body)
	}
	if code, body = e.do("POST", base+"/resume", key, nil); code != 200 {
		t.Fatalf("REST wake: %d %s", code, body)
	}
	code, body = e.do("POST", base+"/exec", key, jsonBody(api.ExecRequest{Cmd: "kill", Args: []string{"-0", bgPID}}))
	if err := json.Unmarshal(body, &res); code != 200 || err != nil || res.ExitCode != 0 {
		t.Fatalf("background process after REST hibernate and wake: %d %s", code, body)
	}

	if code, body = e.do("DELETE", base, key, nil); code != 204 {
		t.Fatalf("delete: %d %s", code, body)
	}
	if left := e.agent.list(context.Background()); len(left) != 0 {
		t.Fatalf("agent still has %d sandboxes", len(left))
	}
}

// 50 concurrent creates against a pool that fits 5 small VMs: exactly 5
// boot, 45 get pool_exhausted, and after cleanup the pool is free and the
// agent has nothing left.
func TestCPQuotaRealAgent(t *testing.T) {
	e := newCPEnv(t)
	key := e.key("carol", &store.Pool{VCPUs: 5, MemoryMB: 5 * 256, StorageMB: 100000})
	var wg sync.WaitGroup
	codes := make([]int, 50)
	bodies := make([][]byte, 50)
	for i := range codes {
		wg.Go(func() {
			codes[i], bodies[i] = e.do("POST", "/v1/sandboxes", key, jsonBody(map[string]any{"template": "minimal", "vcpus": 1, "memory_mb": 256}))
		})
	}
	wg.Wait()
	var ids []string
	exhausted := 0
	for i, c := range codes {
		switch {
		case c == 201:
			var v api.SandboxView
			_ = json.Unmarshal(bodies[i], &v)
			ids = append(ids, v.ID)
		case c == 429 && strings.Contains(string(bodies[i]), `"pool_exhausted"`):
			exhausted++
		default:
			t.Errorf("create %d: %d %s", i, c, bodies[i])
		}
	}
	if len(ids) != 5 || exhausted != 45 {
		t.Fatalf("%d created, %d pool_exhausted", len(ids), exhausted)
	}
	if n := len(e.agent.list(context.Background())); n != 5 {
		t.Fatalf("agent runs %d sandboxes", n)
	}
	for _, id := range ids {
		if code, body := e.do("DELETE", "/v1/sandboxes/"+id, key, nil); code != 204 {
			t.Fatalf("delete %s: %d %s", id, code, body)
		}
	}
	keys, err := e.st.ListAPIKeys(context.Background(), store.AdminScope)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Used != (store.Pool{}) {
			t.Fatalf("key %s still uses %+v", k.OwnerID, k.Used)
		}
	}
	if n := len(e.agent.list(context.Background())); n != 0 {
		t.Fatalf("agent still runs %d sandboxes", n)
	}
}
