package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/api"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/sandbox"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// BenchmarkCPExec compares exec `true` through REST -> control plane ->
// agent -> envd with the agent's gRPC Exec and with the agent's own envd
// client (envd directly), on one real sandbox.
func BenchmarkCPExec(b *testing.B) {
	e := newCPEnv(b)
	key := e.key("bench", nil)
	sb := e.create(key, map[string]any{"template": "minimal", "memory_mb": 256})
	ctx := context.Background()
	m := e.agent.agent.Manager()
	execBody := func() []byte { b, _ := json.Marshal(api.ExecRequest{Cmd: "true"}); return b }()
	rest := func() {
		code, body := e.do("POST", "/v1/sandboxes/"+sb.ID+"/exec", key, bytes.NewReader(execBody))
		if code != 200 {
			b.Fatalf("exec: %d %s", code, body)
		}
	}
	for range 20 { // warm every path
		rest()
		if _, err := e.agent.exec(ctx, sb.ID, "true"); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Exec(ctx, sb.ID, sandbox.ExecSpec{Cmd: "true"}, nopSink{}); err != nil {
			b.Fatal(err)
		}
	}
	var viaREST, viaAgent, direct []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		rest()
		viaREST = append(viaREST, time.Since(t0))
		t0 = time.Now()
		if _, err := e.agent.exec(ctx, sb.ID, "true"); err != nil {
			b.Fatal(err)
		}
		viaAgent = append(viaAgent, time.Since(t0))
		t0 = time.Now()
		if _, err := m.Exec(ctx, sb.ID, sandbox.ExecSpec{Cmd: "true"}, nopSink{}); err != nil {
			b.Fatal(err)
		}
		direct = append(direct, time.Since(t0))
	}
	b.StopTimer()
	for _, s := range [][]time.Duration{viaREST, viaAgent, direct} {
		slices.Sort(s)
	}
	b.ReportMetric(float64(pct(viaREST, 50).Microseconds()), "rest-p50-us")
	b.ReportMetric(float64(pct(viaAgent, 50).Microseconds()), "agent-p50-us")
	b.ReportMetric(float64(pct(direct, 50).Microseconds()), "envd-p50-us")
	b.ReportMetric(float64((pct(viaREST, 50) - pct(viaAgent, 50)).Microseconds()), "cp-added-p50-us")
	b.ReportMetric(float64((pct(viaREST, 50) - pct(direct, 50)).Microseconds()), "total-added-p50-us")
	e.do("DELETE", "/v1/sandboxes/"+sb.ID, key, nil)
}

// BenchmarkCPList measures GET /v1/sandboxes (first page of 50) for an
// owner with 10,000 sandboxes. Rows are inserted through the store.
func BenchmarkCPList(b *testing.B) {
	e := newCPEnv(b)
	ck, err := api.NewKey(context.Background(), e.st, api.CreateKeyRequest{OwnerID: "lister",
		Pool:            &store.Pool{VCPUs: 1 << 20, MemoryMB: 1 << 30, StorageMB: 1 << 30},
		RateLimitPerSec: 1e6, RateLimitBurst: 1e6})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range 10000 {
		if _, err := e.st.CreateSandbox(ctx, store.NewSandbox{
			ID: id.NewSandboxID(), OwnerID: "lister", APIKeyID: ck.ID, Template: "minimal",
			Resources: models.Resources{VCPUs: 1, MemoryMB: 128}, TimeoutSec: 300,
			Metadata: map[string]string{"n": fmt.Sprint(i % 10)},
		}); err != nil {
			b.Fatal(err)
		}
	}
	// A live database has statistics from autovacuum; right after a bulk
	// insert it has none, and the planner then sorts the whole table
	// (about 10x slower), so gather them as autovacuum would.
	if _, err := e.st.Pool().Exec(ctx, "ANALYZE sandboxes"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	t0 := time.Now()
	for range b.N {
		code, body := e.do("GET", "/v1/sandboxes?limit=50", ck.Key, nil)
		if code != 200 {
			b.Fatalf("list: %d %s", code, body)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "req/s")
}

// BenchmarkCPCreate measures creates per second through REST (template
// snapshot restores on the real agent), with `conc` clients creating at
// once; every sandbox is deleted afterwards, outside the timing.
func BenchmarkCPCreate(b *testing.B) {
	e := newCPEnv(b)
	key := e.key("creator", &store.Pool{VCPUs: 64, MemoryMB: 64 << 10, StorageMB: 1 << 20})
	create := func() (string, error) {
		code, body := e.do("POST", "/v1/sandboxes", key, jsonBody(map[string]any{"template": "minimal", "memory_mb": 128}))
		if code != 201 {
			return "", fmt.Errorf("create: %d %s", code, body)
		}
		var sb api.SandboxView
		err := json.Unmarshal(body, &sb)
		return sb.ID, err
	}
	first, err := create() // builds the template snapshot
	if err != nil {
		b.Fatal(err)
	}
	e.do("DELETE", "/v1/sandboxes/"+first, key, nil)
	const conc = 4
	ids := make(chan string, b.N+conc)
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	work := make(chan struct{}, b.N)
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				id, err := create()
				if err != nil {
					b.Error(err)
					return
				}
				ids <- id
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "creates/s")
	b.StopTimer()
	close(ids)
	for id := range ids {
		e.do("DELETE", "/v1/sandboxes/"+id, key, nil)
	}
}

// BenchmarkCPHibernateWake measures, through REST on one real sandbox
// with a file and a background process: pause, resume, hibernate (VM saved
// to the agent's snapshot store and stopped) and wake (resume of a
// hibernated sandbox, to the response), then the first exec after a wake.
func BenchmarkCPHibernateWake(b *testing.B) {
	e := newCPEnv(b)
	key := e.key("bench", nil)
	sb := e.create(key, map[string]any{"template": "minimal", "memory_mb": 256})
	base := "/v1/sandboxes/" + sb.ID
	post := func(path string, body []byte) time.Duration {
		t0 := time.Now()
		code, out := e.do("POST", base+path, key, bytes.NewReader(body))
		if code != 200 {
			b.Fatalf("%s: %d %s", path, code, out)
		}
		return time.Since(t0)
	}
	echo, _ := json.Marshal(api.ExecRequest{Cmd: "true"})
	setup, _ := json.Marshal(api.ExecRequest{Cmd: "sh", Args: []string{"-c", "head -c 1048576 /dev/urandom > /root/blob; sleep 99999 &"}})
	post("/exec", setup)
	ph := phaseSamples{}
	b.ResetTimer()
	for range b.N {
		ph.add("pause", post("/pause", nil))
		ph.add("resume", post("/resume", nil))
		ph.add("hibernate", post("/hibernate", nil))
		ph.add("wake", post("/resume", nil))
		ph.add("exec-after-wake", post("/exec", echo))
	}
	b.StopTimer()
	ph.report(b)
	e.do("DELETE", base, key, nil)
}
