package qemu

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// Benchmarks with real QEMU. Run with -benchtime=10x for the ten runs the
// docs report; each reports p50/p95 of its phases in milliseconds:
//
//	go test -run '^$' -bench . -benchtime 10x ./internal/vm/qemu/

// samples collects durations of one named phase.
type samples map[string][]time.Duration

func (s samples) add(name string, d time.Duration) { s[name] = append(s[name], d) }

func (s samples) report(b *testing.B) {
	for name, ds := range s {
		slices.Sort(ds)
		b.ReportMetric(float64(percentile(ds, 50).Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(percentile(ds, 95).Microseconds())/1000, name+"-p95-ms")
	}
}

func benchDriver(b *testing.B) *Driver {
	d, err := New(Config{BootAttempts: 3})
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func reportRetries(b *testing.B, d *Driver) {
	st := d.Stats()
	b.ReportMetric(float64(st.BootRetries+st.RestoreRetries), "retries")
	b.Logf("accel %s, stats %+v", st.Accel, st)
}

// BenchmarkBoot: Create (guest running: envd answered the channel
// handshake), then envd /health, then the first exec.
func BenchmarkBoot(b *testing.B) {
	im := needImages(b)
	d := benchDriver(b)
	ctx := context.Background()
	s := samples{}
	n := 0
	for b.Loop() {
		b.StopTimer()
		spec := testSpec(b, im, fmt.Sprintf("qb-boot-%d", n))
		n++
		b.StartTimer()
		start := time.Now()
		inst, err := d.Create(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		s.add("create", time.Since(start))
		c := envdclient.New(inst, envdclient.Options{})
		if _, _, err := c.WaitHealthy(ctx, envdclient.Backoff{}); err != nil {
			b.Fatal(err)
		}
		s.add("boot-to-envd-healthy", time.Since(start))
		res, err := c.Shell(ctx, "echo hello", 30*time.Second)
		if err != nil || string(res.Stdout) != "hello\n" {
			b.Fatalf("first exec %q %v", res.Stdout, err)
		}
		s.add("create-to-first-exec", time.Since(start))
		b.StopTimer()
		inst.Destroy(ctx)
		b.StartTimer()
	}
	s.report(b)
	reportRetries(b, d)
}

// BenchmarkPauseResume: QMP stop and cont on one running VM.
func BenchmarkPauseResume(b *testing.B) {
	im := needImages(b)
	d := benchDriver(b)
	ctx := context.Background()
	inst, err := d.Create(ctx, testSpec(b, im, "qb-pause"))
	if err != nil {
		b.Fatal(err)
	}
	defer inst.Destroy(ctx)
	s := samples{}
	for b.Loop() {
		start := time.Now()
		if err := inst.Pause(ctx); err != nil {
			b.Fatal(err)
		}
		s.add("pause", time.Since(start))
		start = time.Now()
		if err := inst.Resume(ctx); err != nil {
			b.Fatal(err)
		}
		s.add("resume", time.Since(start))
	}
	s.report(b)
}

// BenchmarkSnapshotRestore: snapshot a running VM (memory + rootfs copy),
// destroy it, restore the snapshot into a fresh rootfs clone and run the
// first exec; the restored VM is the next round's source.
func BenchmarkSnapshotRestore(b *testing.B) {
	im := needImages(b)
	d := benchDriver(b)
	ctx := context.Background()
	var cur vm.Instance
	cur, err := d.Create(ctx, testSpec(b, im, "qb-snap"))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { cur.Destroy(ctx) }()
	c := envdclient.New(cur, envdclient.Options{})
	if _, _, err := c.WaitHealthy(ctx, envdclient.Backoff{}); err != nil {
		b.Fatal(err)
	}
	s := samples{}
	n := 0
	for b.Loop() {
		dir := b.TempDir()
		start := time.Now()
		if _, err := cur.Snapshot(ctx, dir); err != nil {
			b.Fatal(err)
		}
		s.add("snapshot", time.Since(start))
		b.StopTimer()
		cur.Destroy(ctx)
		start = time.Now()
		rootfs := cloneRootfs(b, filepath.Join(dir, SnapshotRootfsFile))
		s.add("rootfs-clone", time.Since(start))
		spec := vm.Spec{ID: fmt.Sprintf("qb-snap-%d", n), Rootfs: rootfs, RunDir: b.TempDir()}
		n++
		b.StartTimer()
		start = time.Now()
		r, err := d.Restore(ctx, spec, dir)
		if err != nil {
			b.Fatal(err)
		}
		cur = r
		s.add("restore", time.Since(start))
		c := envdclient.New(cur, envdclient.Options{})
		res, err := c.Shell(ctx, "echo hello", 30*time.Second)
		if err != nil || string(res.Stdout) != "hello\n" {
			b.Fatalf("first exec after restore %q %v", res.Stdout, err)
		}
		s.add("restore-to-first-exec", time.Since(start))
	}
	s.report(b)
	reportRetries(b, d)
}
