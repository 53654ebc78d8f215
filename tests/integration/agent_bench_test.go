package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/sandbox"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p/100+0.5)]
}

// BenchmarkAgentCreate measures create-to-ready over gRPC (the create
// returns once envd in the guest is initialised), one sandbox at a time,
// each destroyed before the next. Run with -benchtime=Nx.
func BenchmarkAgentCreate(b *testing.B) {
	e := newAgentEnv(b)
	a := e.startInProcess(b)
	ctx := context.Background()
	// Build the template snapshot (when usable) before timing.
	warm := a.create(ctx, &pb.CreateSandboxRequest{Template: "minimal", MemoryMb: 256})
	_, _ = a.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: warm.GetSandboxId()})
	var took []time.Duration
	mode := ""
	b.ResetTimer()
	for range b.N {
		sid := id.NewSandboxID()
		t0 := time.Now()
		sb := a.create(ctx, &pb.CreateSandboxRequest{SandboxId: sid, Template: "minimal", MemoryMb: 256})
		took = append(took, time.Since(t0))
		mode = sb.GetBootMode().String()
		b.StopTimer()
		if _, err := a.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: sid}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(took)
	b.ReportMetric(float64(pct(took, 50).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(pct(took, 95).Milliseconds()), "p95-ms")
	b.Logf("boot mode %s; create-to-ready p50 %s p95 %s over %d", mode, pct(took, 50), pct(took, 95), len(took))
}

type nopSink struct{}

func (nopSink) Started(uint32) error { return nil }
func (nopSink) Stdout([]byte) error  { return nil }
func (nopSink) Stderr([]byte) error  { return nil }

// BenchmarkAgentExec compares an exec round trip (`true`) through the
// agent's gRPC API (mTLS, stream) with the same exec made by the agent's
// sandbox manager straight to envd, alternating so both see the same
// guest load; the difference is what the agent's API adds.
func BenchmarkAgentExec(b *testing.B) {
	e := newAgentEnv(b)
	a := e.startInProcess(b)
	ctx := context.Background()
	sb := a.create(ctx, &pb.CreateSandboxRequest{Template: "minimal", MemoryMb: 256})
	sid := sb.GetSandboxId()
	m := a.agent.Manager()
	for range 20 { // warm both paths
		if _, err := a.exec(ctx, sid, "true"); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Exec(ctx, sid, sandbox.ExecSpec{Cmd: "true"}, nopSink{}); err != nil {
			b.Fatal(err)
		}
	}
	var viaAgent, direct, unary []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := a.c.Heartbeat(ctx, &pb.HeartbeatRequest{}); err != nil {
			b.Fatal(err)
		}
		unary = append(unary, time.Since(t0))
		t0 = time.Now()
		r, err := a.exec(ctx, sid, "true")
		if err != nil || r.Exit.GetExitCode() != 0 {
			b.Fatal(err)
		}
		viaAgent = append(viaAgent, time.Since(t0))
		t0 = time.Now()
		if _, err := m.Exec(ctx, sid, sandbox.ExecSpec{Cmd: "true"}, nopSink{}); err != nil {
			b.Fatal(err)
		}
		direct = append(direct, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(viaAgent)
	slices.Sort(direct)
	slices.Sort(unary)
	b.ReportMetric(float64(pct(unary, 50).Microseconds()), "unary-rpc-p50-us")
	b.ReportMetric(float64(pct(viaAgent, 50).Microseconds()), "agent-p50-us")
	b.ReportMetric(float64(pct(direct, 50).Microseconds()), "envd-p50-us")
	b.ReportMetric(float64((pct(viaAgent, 50) - pct(direct, 50)).Microseconds()), "added-p50-us")
	b.Logf("exec `true`: via agent p50 %s p95 %s; envd direct p50 %s p95 %s; n=%d",
		pct(viaAgent, 50), pct(viaAgent, 95), pct(direct, 50), pct(direct, 95), len(direct))
	_, _ = a.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: sid})
}

// smapsRSS returns a process's total resident kB and the resident kB of
// the mapping of exactly guestKB (QEMU's guest RAM block; the TCG
// translation cache is another, larger anonymous mapping).
func smapsRSS(pid int, guestKB int64) (total, guest int64, err error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var size int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "Size:":
			size = n
		case "Rss:":
			total += n
			if size == guestKB {
				guest += n
			}
		}
	}
	return total, guest, sc.Err()
}

// BenchmarkAgentIdleMemory reports, for idle sandboxes of 256 MiB: the
// VMM's resident memory outside the guest's RAM block (its own cost), the
// guest RAM actually resident, and the agent's Go heap per sandbox.
func BenchmarkAgentIdleMemory(b *testing.B) {
	const n = 3
	e := newAgentEnv(b)
	a := e.startInProcess(b)
	ctx := context.Background()
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	var ids []string
	for range n {
		ids = append(ids, a.create(ctx, &pb.CreateSandboxRequest{Template: "minimal", MemoryMb: 256}).GetSandboxId())
	}
	time.Sleep(3 * time.Second) // let them settle
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	b.ResetTimer()
	var vmmKB, guestKB, totalKB int64
	for range b.N {
		vmmKB, guestKB, totalKB = 0, 0, 0
		for _, sid := range ids {
			m, err := a.c.GetMetrics(ctx, &pb.GetMetricsRequest{SandboxId: sid})
			if err != nil {
				b.Fatal(err)
			}
			tot, guest, err := smapsRSS(int(m.GetSandboxes()[0].GetVmmPid()), 256<<10)
			if err != nil {
				b.Fatal(err)
			}
			totalKB += tot
			guestKB += guest
			vmmKB += tot - guest
		}
	}
	b.StopTimer()
	heapPer := (int64(ms1.HeapInuse) - int64(ms0.HeapInuse)) / n
	b.ReportMetric(float64(vmmKB/n)/1024, "vmm-overhead-MiB")
	b.ReportMetric(float64(guestKB/n)/1024, "guest-resident-MiB")
	b.ReportMetric(float64(heapPer)/1024, "agent-heap-KiB")
	b.Logf("per idle 256 MiB sandbox: VMM RSS %.1f MiB = guest RAM resident %.1f MiB + VMM own %.1f MiB; agent heap %s",
		float64(totalKB/n)/1024, float64(guestKB/n)/1024, float64(vmmKB/n)/1024, fmt.Sprintf("%.0f KiB", float64(heapPer)/1024))
	for _, sid := range ids {
		_, _ = a.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: sid})
	}
}
