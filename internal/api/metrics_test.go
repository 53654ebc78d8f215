package api

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// scrape fetches /metrics (no key) and parses it.
func (e *env) scrape() map[string]*dto.MetricFamily {
	e.t.Helper()
	r := e.do("GET", "/metrics", "", nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("scrape: %d %s", r.status, r.body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		e.t.Fatalf("parse metrics: %v", err)
	}
	return mfs
}

// value returns the counter, gauge or histogram count of the series of
// family name whose labels are exactly want; ok is false without one.
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, Config{MetricsPerKey: true})
	sb := e.create(e.alice, CreateRequest{VCPUs: 2, MemoryMB: 512})
	e.create(e.alice, CreateRequest{VCPUs: 1, MemoryMB: 256})
	if r := e.do("POST", "/v1/sandboxes/"+sb.ID+"/pause", e.alice, nil); r.status != http.StatusOK {
		t.Fatalf("pause: %d %s", r.status, r.body)
	}
	for range 3 {
		e.do("GET", "/v1/sandboxes/"+sb.ID, e.alice, nil)
	}
	e.do("GET", "/v1/sandboxes/sb-00000000", e.alice, nil)  // 404
	e.do("GET", "/v1/sandboxes", "", nil)                   // 401
	e.do("GET", "/no/such/route/sb-12345678", e.alice, nil) // unmatched
	keys, err := e.st.ListAPIKeys(context.Background(), store.AdminScope)
	if err != nil {
		t.Fatal(err)
	}
	var bobID string
	for _, k := range keys {
		if k.OwnerID == "bob" {
			bobID = k.ID
		}
	}
	if r := e.do("DELETE", "/v1/keys/"+bobID, e.admin, nil); r.status/100 != 2 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if keys, err = e.st.ListAPIKeys(context.Background(), store.AdminScope); err != nil {
		t.Fatal(err)
	}

	mfs := e.scrape()
	reqs := []struct {
		method, route, code string
		want                float64
	}{
		{"POST", "/v1/sandboxes", "201", 2},
		{"POST", "/v1/sandboxes/{id}/pause", "200", 1},
		{"GET", "/v1/sandboxes/{id}", "200", 3},
		{"GET", "/v1/sandboxes/{id}", "404", 1},
		// Refused by the /v1 middleware before the sub-router matched.
		{"GET", "/v1/*", "401", 1},
		{"GET", unmatchedRoute, "404", 1},
	}
	for _, tc := range reqs {
		l := map[string]string{"method": tc.method, "route": tc.route, "code": tc.code}
		if got, ok := value(mfs, "wrenn_http_requests_total", l); !ok || got != tc.want {
			t.Errorf("requests_total%v = %v (present %v), want %v", l, got, ok, tc.want)
		}
		if got, ok := value(mfs, "wrenn_http_request_duration_seconds", l); !ok || got != tc.want {
			t.Errorf("request_duration_seconds%v count = %v (present %v), want %v", l, got, ok, tc.want)
		}
	}
	for _, m := range mfs["wrenn_http_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "route" && (strings.Contains(l.GetValue(), "sb-") || strings.Contains(l.GetValue(), "/no/")) {
				t.Errorf("raw path in route label: %q", l.GetValue())
			}
		}
	}

	states := map[string]float64{"running": 1, "paused": 1, "pending": 0, "starting": 0, "hibernated": 0, "stopped": 0, "error": 0}
	for st, want := range states {
		if got, ok := value(mfs, "wrenn_sandboxes", map[string]string{"status": st}); !ok || got != want {
			t.Errorf("wrenn_sandboxes{status=%s} = %v (present %v), want %v", st, got, ok, want)
		}
	}

	var used, limit store.Pool
	for _, k := range keys {
		used = addPool(used, k.Used)
		if !k.Revoked() {
			limit = addPool(limit, k.Pool)
		}
	}
	aliceUsed := e.used("alice")
	if aliceUsed.VCPUs != 3 || aliceUsed.MemoryMB != 768 {
		t.Fatalf("alice uses %+v", aliceUsed)
	}
	var aliceID string
	for _, k := range keys {
		if k.OwnerID == "alice" {
			aliceID = k.ID
		}
	}
	for _, r := range []struct {
		name         string
		used, limit  int
		aliceU, bobL int
	}{
		{store.ResourceVCPUs, used.VCPUs, limit.VCPUs, 3, 64},
		{store.ResourceMemoryMB, used.MemoryMB, limit.MemoryMB, 768, 64 << 10},
		{store.ResourceStorageMB, used.StorageMB, limit.StorageMB, aliceUsed.StorageMB, 1 << 20},
	} {
		res := map[string]string{"resource": r.name}
		if got, _ := value(mfs, "wrenn_pool_used", res); got != float64(r.used) || r.used < r.aliceU {
			t.Errorf("wrenn_pool_used{%s} = %v, want %v", r.name, got, r.used)
		}
		if got, _ := value(mfs, "wrenn_pool_limit", res); got != float64(r.limit) || r.limit == 0 {
			t.Errorf("wrenn_pool_limit{%s} = %v, want %v", r.name, got, r.limit)
		}
		if got, _ := value(mfs, "wrenn_key_pool_used", map[string]string{"key_id": aliceID, "resource": r.name}); got != float64(r.aliceU) {
			t.Errorf("wrenn_key_pool_used{alice,%s} = %v, want %v", r.name, got, r.aliceU)
		}
		// A revoked key still reports its own limit, but not in the sum.
		if got, _ := value(mfs, "wrenn_key_pool_limit", map[string]string{"key_id": bobID, "resource": r.name}); got != float64(r.bobL) {
			t.Errorf("wrenn_key_pool_limit{bob,%s} = %v, want %v", r.name, got, r.bobL)
		}
	}
	if got, ok := value(mfs, "wrenn_metrics_store_up", map[string]string{}); !ok || got != 1 {
		t.Errorf("store_up = %v %v", got, ok)
	}

	// A second scrape counts the first one, under its pattern.
	mfs = e.scrape()
	if got, _ := value(mfs, "wrenn_http_requests_total", map[string]string{"method": "GET", "route": "/metrics", "code": "200"}); got != 1 {
		t.Errorf("scrapes counted %v, want 1", got)
	}
}

// Without MetricsPerKey there is no per-key series.
func TestMetricsNoPerKey(t *testing.T) {
	e := newEnv(t, Config{})
	mfs := e.scrape()
	if _, ok := mfs["wrenn_key_pool_used"]; ok {
		t.Error("per-key series without MetricsPerKey")
	}
	if _, ok := value(mfs, "wrenn_pool_limit", map[string]string{"resource": store.ResourceVCPUs}); !ok {
		t.Error("no pool limit series")
	}
}
