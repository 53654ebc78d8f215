package snapshot

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem/fstest"
)

// Create from a template snapshot to the first exec, ten runs:
//
//	go test -run '^$' -bench CreateFromTemplate -benchtime 10x ./internal/snapshot/
//
// The snapshot is built before the timer starts. Phases: clone, restore
// (VMM start to guest running), init (channel handshake + /init), exec
// (the first command) and total. WRENN_BENCH_MEMORY_MB, _KERNEL_ARGS and
// _WARMUP override the template settings, to compare them.
func BenchmarkCreateFromTemplate(b *testing.B) {
	reg := fstest.MinimalRegistry(b)
	os.Setenv("WRENN_TEST_QUIET", "1")
	m := testManager(b, reg, benchOverrides)
	ctx := context.Background()
	t, err := m.Ensure(ctx, fstest.Minimal, "")
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("template: boot %v, snapshot %d MiB state in %v", t.BootTook, t.Snapshot.MemBytes>>20, t.Snapshot.Took)
	s := samples{}
	n := 0
	for b.Loop() {
		b.StopTimer()
		spec := sandboxSpec(b, fmt.Sprintf("sb-%d", n), fstest.Minimal)
		spec.Init = envdclient.InitRequest{AccessToken: "tok", EnvVars: map[string]string{"N": strconv.Itoa(n)}, Hostname: spec.ID}
		n++
		b.StartTimer()
		start := time.Now()
		sb, err := m.CreateFromTemplate(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		created := time.Since(start)
		res, err := sb.Envd.Shell(ctx, "echo $N", 30*time.Second)
		if err != nil || string(res.Stdout) != strconv.Itoa(n-1)+"\n" {
			b.Fatalf("first exec: %q %v", res.Stdout, err)
		}
		total := time.Since(start)
		b.StopTimer()
		s.add("clone", sb.Timings.Clone)
		s.add("restore", sb.Timings.Restore)
		s.add("init", sb.Timings.Init)
		s.add("exec", total-created)
		s.add("create-to-first-exec", total)
		sb.Destroy(ctx)
		b.StartTimer()
	}
	s.report(b)
	b.ReportMetric(float64(t.Snapshot.MemBytes)/(1<<20), "state-MiB")
}

// benchOverrides applies the WRENN_BENCH_* settings.
func benchOverrides(c *Config) {
	if v, err := strconv.Atoi(os.Getenv("WRENN_BENCH_MEMORY_MB")); err == nil {
		c.MemoryMB = v
	}
	if v := os.Getenv("WRENN_BENCH_KERNEL_ARGS"); v != "" {
		c.KernelArgs = v
	}
	if v := os.Getenv("WRENN_BENCH_WARMUP"); v != "" {
		c.Warmup = v
	}
}

// samples collects durations by phase.
type samples map[string][]time.Duration

func (s samples) add(name string, d time.Duration) { s[name] = append(s[name], d) }

func (s samples) report(b *testing.B) {
	for name, ds := range s {
		slices.Sort(ds)
		b.ReportMetric(ms(percentile(ds, 50)), name+"-p50-ms")
		b.ReportMetric(ms(percentile(ds, 95)), name+"-p95-ms")
	}
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p/100+0.5)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
