package metrics

import (
	"context"
	"errors"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/wrenn-dev/wrenn-sandbox/internal/cgroup"
)

// listerState is what the agent's sandbox table would hand the exporter.
type listerState struct {
	mu    sync.Mutex
	infos []SandboxInfo
	err   error
}

func (l *listerState) set(infos []SandboxInfo, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.infos, l.err = infos, err
}

func (l *listerState) Sandboxes(context.Context) ([]SandboxInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]SandboxInfo(nil), l.infos...), l.err
}

func TestExporterSandboxMetrics(t *testing.T) {
	cg := testCgroups(t)
	tn := newTestNet(t)
	ctx := context.Background()
	h, err := cg.Create(ctx, "sb-a", cgroup.Limits{VCPUs: 1, MemoryMB: 128, PIDs: 32})
	if err != nil {
		t.Fatal(err)
	}
	startIn(t, cg, h, busyScript)
	dir := t.TempDir()
	rootA, rootB := sparseRootfs(t, dir, "a.ext4"), sparseRootfs(t, dir, "b.ext4")

	a := SandboxInfo{SandboxID: "sb-a", Cgroup: h, Rootfs: rootA, Veth: tn.host, Netns: tn.path}
	b := SandboxInfo{SandboxID: "sb-b", Rootfs: rootB} // no cgroup, no network
	lister := &listerState{}
	lister.set([]SandboxInfo{a, b, a}, nil) // a duplicate must not break the scrape
	e, err := NewExporter(ExporterConfig{
		Lister:    lister,
		Collector: NewCollector(cg, NetlinkReader{}),
		Logger:    testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, e.Handler())

	first := scrape(t, url)
	sentIn := tn.send(t, tn.host, 4, 1500)
	sentOut := tn.send(t, tn.peer, 9, 100)
	second := scrape(t, url)

	la, lb := map[string]string{"sandbox_id": "sb-a"}, map[string]string{"sandbox_id": "sb-b"}
	if got := mustValue(t, second, "wrenn_sandboxes", nil); got != 2 {
		t.Errorf("wrenn_sandboxes = %v, want 2", got)
	}
	types := []struct {
		name string
		typ  dto.MetricType
	}{
		{"wrenn_sandbox_cpu_seconds_total", dto.MetricType_COUNTER},
		{"wrenn_sandbox_memory_bytes", dto.MetricType_GAUGE},
		{"wrenn_sandbox_memory_limit_bytes", dto.MetricType_GAUGE},
		{"wrenn_sandbox_pids", dto.MetricType_GAUGE},
		{"wrenn_sandbox_oom_kills_total", dto.MetricType_COUNTER},
		{"wrenn_sandbox_disk_bytes", dto.MetricType_GAUGE},
		{"wrenn_sandbox_network_receive_bytes_total", dto.MetricType_COUNTER},
		{"wrenn_sandbox_network_transmit_bytes_total", dto.MetricType_COUNTER},
	}
	for _, c := range types {
		_, typ, ok := series(second, c.name, la)
		if !ok || typ != c.typ {
			t.Errorf("%s{sandbox_id=sb-a}: present %v type %v, want %v", c.name, ok, typ, c.typ)
		}
	}
	checks := []struct {
		name   string
		labels map[string]string
		ok     func(float64) bool
		want   string
	}{
		{"wrenn_sandbox_cpu_seconds_total", la, func(v float64) bool { return v > 0 }, "> 0"},
		{"wrenn_sandbox_memory_bytes", la, func(v float64) bool { return v >= 2_000_000 }, ">= 2 MB"},
		{"wrenn_sandbox_memory_limit_bytes", la, func(v float64) bool { return v == 128<<20 }, "128 MiB"},
		{"wrenn_sandbox_pids", la, func(v float64) bool { return v == 1 }, "1"},
		{"wrenn_sandbox_oom_kills_total", la, func(v float64) bool { return v == 0 }, "0"},
		{"wrenn_sandbox_disk_bytes", la, func(v float64) bool { return v == float64(allocated(t, rootA)) }, "stat blocks of a"},
		{"wrenn_sandbox_disk_bytes", lb, func(v float64) bool { return v == float64(allocated(t, rootB)) }, "stat blocks of b"},
	}
	for _, c := range checks {
		if v := mustValue(t, second, c.name, c.labels); !c.ok(v) {
			t.Errorf("%s%v = %v, want %s", c.name, c.labels, v, c.want)
		}
	}
	delta := func(name string) float64 {
		return mustValue(t, second, name, la) - mustValue(t, first, name, la)
	}
	if d := delta("wrenn_sandbox_network_receive_bytes_total"); d != float64(sentIn) {
		t.Errorf("received +%v bytes, want +%d", d, sentIn)
	}
	if d := delta("wrenn_sandbox_network_transmit_bytes_total"); d != float64(sentOut) {
		t.Errorf("sent +%v bytes, want +%d", d, sentOut)
	}
	for _, name := range []string{"wrenn_sandbox_cpu_seconds_total", "wrenn_sandbox_network_receive_bytes_total"} {
		if _, _, ok := series(second, name, lb); ok {
			t.Errorf("%s present for sb-b, which has no such source", name)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := second[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}

	// Destroyed sandboxes disappear from the next scrape.
	lister.set([]SandboxInfo{b}, nil)
	third := scrape(t, url)
	if names := hasLabel(third, "sandbox_id", "sb-a"); len(names) != 0 {
		t.Errorf("sb-a still exported after removal: %v", names)
	}
	if got := mustValue(t, third, "wrenn_sandboxes", nil); got != 1 {
		t.Errorf("wrenn_sandboxes = %v, want 1", got)
	}

	// A failing lister costs the sandbox metrics of that scrape, not the
	// endpoint.
	lister.set(nil, errors.New("state store unavailable"))
	fourth := scrape(t, url)
	if _, ok := fourth["wrenn_sandboxes"]; ok {
		t.Error("wrenn_sandboxes exported although listing failed")
	}
	if got := mustValue(t, fourth, "wrenn_sandbox_stats_errors_total", map[string]string{"source": "list"}); got != 1 {
		t.Errorf("list errors = %v, want 1", got)
	}
	if _, ok := fourth["go_goroutines"]; !ok {
		t.Error("agent metrics missing when listing failed")
	}
}

func TestExporterWithoutLister(t *testing.T) {
	e, err := NewExporter(ExporterConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, serve(t, e.Handler()))
	if _, ok := fams["wrenn_sandboxes"]; ok {
		t.Error("sandbox metrics without a lister")
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("go collector missing")
	}
}
