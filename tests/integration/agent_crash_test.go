package integration

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// createMany creates n sandboxes at once and returns their IDs.
func createMany(t *testing.T, ctx context.Context, a *agentClient, n, memoryMB int) []string {
	t.Helper()
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range ids {
		ids[i] = id.NewSandboxID()
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = a.c.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: ids[i], Template: "minimal", MemoryMb: int32(memoryMB)})
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create %d (%s): %v", i, ids[i], err)
		}
	}
	t.Logf("%d concurrent creates took %s", n, time.Since(start))
	return ids
}

// TestAgentSurvivesKill9 kills the agent process with SIGKILL while three
// sandboxes run; a new agent process reattaches to them and exec works in
// all three again.
func TestAgentSurvivesKill9(t *testing.T) {
	e := newAgentEnv(t)
	before := e.resources()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	p := e.startProcess(t)
	ids := createMany(t, ctx, p.agentClient, 3, 256)
	if _, err := p.c.PauseSandbox(ctx, &pb.PauseSandboxRequest{SandboxId: ids[2]}); err != nil {
		t.Fatal(err)
	}
	vmms := len(e.resources()["processes"])
	p.kill9(t)
	if got := len(e.resources()["processes"]); got != vmms || got < 3 {
		t.Fatalf("VMMs after the agent died: %d, before %d", got, vmms)
	}

	p2 := e.startProcess(t)
	rec := p2.waitLog(t, "recovered sandboxes", time.Second)
	if rec["reattached"] != float64(3) {
		t.Fatalf("recovery: %v", rec)
	}
	states := map[string]pb.SandboxState{}
	for _, s := range p2.list(ctx) {
		states[s.GetSandboxId()] = s.GetState()
	}
	if states[ids[0]] != pb.SandboxState_SANDBOX_STATE_RUNNING || states[ids[2]] != pb.SandboxState_SANDBOX_STATE_PAUSED {
		t.Fatalf("states after restart: %v", states)
	}
	if _, err := p2.c.ResumeSandbox(ctx, &pb.ResumeSandboxRequest{SandboxId: ids[2]}); err != nil {
		t.Fatal(err)
	}
	for _, sid := range ids {
		if out := p2.sh(ctx, sid, "echo hello from $(hostname)"); out != "hello from "+sid+"\n" {
			t.Fatalf("exec in %s after restart: %q", sid, out)
		}
	}
	// A graceful stop leaves them running too, and the next agent finds them.
	p2.stop()
	p3 := e.startProcess(t)
	for _, sid := range ids {
		if out := p3.sh(ctx, sid, "echo again"); out != "again\n" {
			t.Fatalf("exec in %s after a graceful restart: %q", sid, out)
		}
		if _, err := p3.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: sid}); err != nil {
			t.Fatal(err)
		}
	}
	p3.stop()
	e.assertSameResources(t, before)
}

// TestAgentKilledMidCreate kills the agent while a create is stopped at
// each of its steps; the next agent must release everything that create
// took: the test lists namespaces, host links and addresses, leases,
// cgroups, clones, directories and VMM processes before and after.
func TestAgentKilledMidCreate(t *testing.T) {
	e := newAgentEnv(t)
	before := e.resources()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	steps := []struct {
		step     string
		template bool     // from the template snapshot (else a cold boot)
		want     []string // resource kinds that must exist at the pause
	}{
		{agentstate.StepRecorded, false, []string{"sandbox-dirs"}},
		{agentstate.StepNetwork, false, []string{"sandbox-dirs", "netns", "host-links", "host-addrs", "leases"}},
		{agentstate.StepCgroup, false, []string{"sandbox-dirs", "netns", "leases", "cgroups"}},
		{agentstate.StepRootfs, false, []string{"sandbox-dirs", "netns", "leases", "cgroups", "clones"}},
		{agentstate.StepVM, false, []string{"sandbox-dirs", "netns", "leases", "cgroups", "clones", "processes"}},
		{agentstate.StepVM, true, []string{"sandbox-dirs", "netns", "leases", "cgroups", "clones", "processes"}},
	}
	for _, st := range steps {
		name := st.step
		if st.template {
			name += " from template"
		}
		t.Run(name, func(t *testing.T) {
			p := e.startProcess(t, "AGENT_TEST_PAUSE_CREATE_AT="+st.step)
			sid := id.NewSandboxID()
			errc := make(chan error, 1)
			go func() {
				_, err := p.c.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: sid, Template: "minimal", MemoryMb: 256, ColdBoot: !st.template})
				errc <- err
			}()
			hook := p.waitLog(t, "test hook: create paused", 5*time.Minute)
			if hook["step"] != st.step || hook["sandbox_id"] != sid {
				t.Fatalf("paused at %v", hook)
			}
			mid := e.resources()
			for _, k := range st.want {
				if len(mid[k]) == 0 {
					t.Errorf("at step %s no %s exists yet: %v", st.step, k, mid)
				}
			}
			p.kill9(t)
			if err := <-errc; status.Code(err) != codes.Unavailable {
				t.Fatalf("create cut by the crash: %v", err)
			}
			p2 := e.startProcess(t)
			rec := p2.waitLog(t, "recovered sandboxes", time.Second)
			if rec["released"] != float64(1) {
				t.Fatalf("recovery: %v", rec)
			}
			if l := p2.list(ctx); len(l) != 0 {
				t.Fatalf("sandboxes after recovery: %v", l)
			}
			p2.stop()
			e.assertSameResources(t, before)
		})
	}
}

// TestAgentConcurrentCreatesAndExhaustion creates ten sandboxes at once
// (all must succeed), then checks that running out of host memory or of
// addresses gives RESOURCE_EXHAUSTED and leaves nothing behind.
func TestAgentConcurrentCreatesAndExhaustion(t *testing.T) {
	e := newAgentEnv(t)
	before := e.resources()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	t.Run("ten at once", func(t *testing.T) {
		a := e.startInProcess(t)
		ids := createMany(t, ctx, a, 10, 128)
		for _, sid := range ids {
			if out := a.sh(ctx, sid, "echo ok"); out != "ok\n" {
				t.Fatalf("%s: %q", sid, out)
			}
		}
		hb, err := a.c.Heartbeat(ctx, &pb.HeartbeatRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if hb.GetCapacity().GetSandboxCount() != 10 || hb.GetCapacity().GetUsedMemoryMb() != 1280 {
			t.Fatalf("capacity %+v", hb.GetCapacity())
		}
		var wg sync.WaitGroup
		for _, sid := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := a.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: sid}); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		a.stop()
	})

	t.Run("memory", func(t *testing.T) {
		a := e.startInProcess(t, "AGENT_TOTAL_MEMORY_MB=400")
		first := a.create(ctx, &pb.CreateSandboxRequest{Template: "minimal", MemoryMb: 256})
		_, err := a.c.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: id.NewSandboxID(), Template: "minimal", MemoryMb: 256})
		wantCode(t, err, codes.ResourceExhausted, "second sandbox beyond host memory")
		if !strings.Contains(status.Convert(err).Message(), "memory") {
			t.Fatalf("message %q does not say what ran out", status.Convert(err).Message())
		}
		_, err = a.c.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: id.NewSandboxID(), Template: "minimal", Vcpus: 64, MemoryMb: 64})
		wantCode(t, err, codes.ResourceExhausted, "more vcpus than the host has")
		// The agent still works.
		if out := a.sh(ctx, first.GetSandboxId(), "echo alive"); out != "alive\n" {
			t.Fatal(out)
		}
		if _, err := a.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: first.GetSandboxId()}); err != nil {
			t.Fatal(err)
		}
		a.stop()
	})

	t.Run("addresses", func(t *testing.T) {
		// A /30 pool holds exactly one sandbox network.
		a := e.startInProcess(t, "AGENT_NETWORK_POOL=10.231.9.0/30")
		first := a.create(ctx, &pb.CreateSandboxRequest{Template: "minimal", MemoryMb: 128})
		_, err := a.c.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: id.NewSandboxID(), Template: "minimal", MemoryMb: 128})
		wantCode(t, err, codes.ResourceExhausted, "second sandbox in a one-block pool")
		if hb, _ := a.c.Heartbeat(ctx, &pb.HeartbeatRequest{}); hb.GetCapacity().GetSandboxCount() != 1 {
			t.Fatalf("a failed create is still counted: %+v", hb.GetCapacity())
		}
		if _, err := a.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: first.GetSandboxId()}); err != nil {
			t.Fatal(err)
		}
		a.stop()
	})
	e.assertSameResources(t, before)
}
