package agentclient

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/pgtest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

func TestDiff(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	old := now.Add(-time.Hour)
	fresh := now.Add(-5 * time.Second)
	row := func(id string, st models.SandboxStatus, created, updated time.Time) store.Sandbox {
		var sb store.Sandbox
		sb.ID, sb.Status, sb.CreatedAt, sb.UpdatedAt = id, st, created, updated
		return sb
	}
	agent := func(id string, st pb.SandboxState, created time.Time, mod ...func(*pb.Sandbox)) *pb.Sandbox {
		sb := &pb.Sandbox{SandboxId: id, State: st, CreatedAt: timestamppb.New(created)}
		for _, m := range mod {
			m(sb)
		}
		return sb
	}
	pausedAt := func(t time.Time) func(*pb.Sandbox) { return func(s *pb.Sandbox) { s.PausedAt = timestamppb.New(t) } }
	running, paused := pb.SandboxState_SANDBOX_STATE_RUNNING, pb.SandboxState_SANDBOX_STATE_PAUSED
	lost := func(id string, from models.SandboxStatus) Fix {
		return Fix{Kind: FixMarkError, SandboxID: id, From: from, To: models.StatusError, Reason: ReasonLost}
	}
	destroy := func(id string) Fix {
		return Fix{Kind: FixDestroy, SandboxID: id, Reason: "no live sandbox in the control plane"}
	}
	tests := []struct {
		name string
		rows []store.Sandbox
		inv  []*pb.Sandbox
		want []Fix
	}{
		{"in sync", []store.Sandbox{row("a", models.StatusRunning, old, old), row("b", models.StatusPaused, old, old)},
			[]*pb.Sandbox{agent("a", running, old), agent("b", paused, old, pausedAt(old))}, nil},
		{"running row missing on agent", []store.Sandbox{row("a", models.StatusRunning, old, old)}, nil,
			[]Fix{lost("a", models.StatusRunning)}},
		{"paused row missing on agent", []store.Sandbox{row("a", models.StatusPaused, old, old)}, nil,
			[]Fix{lost("a", models.StatusPaused)}},
		{"hibernated row missing: snapshot elsewhere", []store.Sandbox{row("a", models.StatusHibernated, old, old)}, nil, nil},
		{"new row missing: grace", []store.Sandbox{row("a", models.StatusRunning, fresh, fresh)}, nil, nil},
		{"row just updated: grace", []store.Sandbox{row("a", models.StatusRunning, old, fresh)}, nil, nil},
		{"starting row within starting grace", []store.Sandbox{row("a", models.StatusStarting, now.Add(-2*time.Minute), old)}, nil, nil},
		{"pending row within starting grace", []store.Sandbox{row("a", models.StatusPending, now.Add(-2*time.Minute), old)}, nil, nil},
		{"starting row past starting grace", []store.Sandbox{row("a", models.StatusStarting, old, old)}, nil,
			[]Fix{lost("a", models.StatusStarting)}},
		{"orphan on agent", nil, []*pb.Sandbox{agent("x", running, old)}, []Fix{destroy("x")}},
		{"orphan without created_at", nil, []*pb.Sandbox{{SandboxId: "x", State: running}}, []Fix{destroy("x")}},
		{"new orphan: grace", nil, []*pb.Sandbox{agent("x", running, fresh)}, nil},
		{"orphan already stopping", nil, []*pb.Sandbox{agent("x", pb.SandboxState_SANDBOX_STATE_STOPPED, old)}, nil},
		{"row stopped, still on agent", []store.Sandbox{row("a", models.StatusStopped, old, old)},
			[]*pb.Sandbox{agent("a", running, old)}, []Fix{destroy("a")}},
		{"row error, still on agent", []store.Sandbox{row("a", models.StatusError, old, old)},
			[]*pb.Sandbox{agent("a", paused, old)}, []Fix{destroy("a")}},
		{"new row protects its agent sandbox", []store.Sandbox{row("a", models.StatusStarting, fresh, fresh)},
			[]*pb.Sandbox{agent("a", running, old)}, nil},
		{"drift running -> paused", []store.Sandbox{row("a", models.StatusRunning, old, old)},
			[]*pb.Sandbox{agent("a", paused, old, pausedAt(old))},
			[]Fix{{Kind: FixSetStatus, SandboxID: "a", From: models.StatusRunning, To: models.StatusPaused}}},
		{"drift paused -> running", []store.Sandbox{row("a", models.StatusPaused, old, old)},
			[]*pb.Sandbox{agent("a", running, old)},
			[]Fix{{Kind: FixSetStatus, SandboxID: "a", From: models.StatusPaused, To: models.StatusRunning}}},
		{"drift just made on the agent: grace", []store.Sandbox{row("a", models.StatusRunning, old, old)},
			[]*pb.Sandbox{agent("a", paused, old, pausedAt(fresh))}, nil},
		{"illegal drift hibernated -> paused", []store.Sandbox{row("a", models.StatusHibernated, old, old)},
			[]*pb.Sandbox{agent("a", paused, old, pausedAt(old))},
			[]Fix{{Kind: FixMarkError, SandboxID: "a", From: models.StatusHibernated, To: models.StatusError,
				Reason: "state drift: control plane had hibernated, host has paused"}}},
		{"illegal drift starting past grace -> paused", []store.Sandbox{row("a", models.StatusStarting, old, old)},
			[]*pb.Sandbox{agent("a", paused, old, pausedAt(old))},
			[]Fix{{Kind: FixMarkError, SandboxID: "a", From: models.StatusStarting, To: models.StatusError,
				Reason: "state drift: control plane had starting, host has paused"}}},
		{"stuck starting row, agent running", []store.Sandbox{row("a", models.StatusStarting, old, old)},
			[]*pb.Sandbox{agent("a", running, old)},
			[]Fix{{Kind: FixSetStatus, SandboxID: "a", From: models.StatusStarting, To: models.StatusRunning}}},
		{"agent error", []store.Sandbox{row("a", models.StatusRunning, old, old)},
			[]*pb.Sandbox{agent("a", pb.SandboxState_SANDBOX_STATE_ERROR, old, func(s *pb.Sandbox) { s.Error = "vmm died" })},
			[]Fix{{Kind: FixMarkError, SandboxID: "a", From: models.StatusRunning, To: models.StatusError, Reason: "error on host: vmm died"}}},
		{"agent stopping a live row: wait", []store.Sandbox{row("a", models.StatusRunning, old, old)},
			[]*pb.Sandbox{agent("a", pb.SandboxState_SANDBOX_STATE_STOPPED, old)}, nil},
		{"agent state unspecified", []store.Sandbox{row("a", models.StatusRunning, old, old)},
			[]*pb.Sandbox{agent("a", pb.SandboxState_SANDBOX_STATE_UNSPECIFIED, old)}, nil},
		{"mixed, rows first", []store.Sandbox{row("a", models.StatusRunning, old, old), row("b", models.StatusRunning, old, old)},
			[]*pb.Sandbox{agent("z", running, old), agent("b", running, old)},
			[]Fix{lost("a", models.StatusRunning), destroy("z")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Diff(tc.rows, tc.inv, DiffOptions{Now: now, Grace: 30 * time.Second, StartingGrace: 10 * time.Minute})
			if !slices.Equal(got, tc.want) {
				t.Errorf("Diff:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// Over real gRPC: the first heartbeat reconciles (lost row, drift,
// orphan), and so does the first heartbeat after failed ones, while the
// periodic pass is an hour away.
func TestPoolReconciles(t *testing.T) {
	db := pgtest.New(t)
	st := store.New(db.Pool, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	key, err := st.CreateAPIKey(ctx, store.NewAPIKey{KeyHash: strings.Repeat("cd", 32), OwnerID: "o",
		Pool: &store.Pool{VCPUs: 8, MemoryMB: 4096, StorageMB: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpsertHost(ctx, store.HostRegistration{ID: "host-test", GRPCEndpoint: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	mk := func(id string, to ...models.SandboxStatus) {
		t.Helper()
		if _, err := st.CreateSandbox(ctx, store.NewSandbox{ID: id, OwnerID: "o", APIKeyID: key.ID, HostID: "host-test",
			Template: "minimal", Resources: models.Resources{VCPUs: 1, MemoryMB: 256}}); err != nil {
			t.Fatal(err)
		}
		for _, s := range to {
			if _, err := st.Transition(ctx, store.Transition{ID: id, To: s}); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("sb-0000001a", models.StatusStarting, models.StatusRunning) // in sync
	mk("sb-0000001b", models.StatusStarting, models.StatusRunning) // lost
	mk("sb-0000001c", models.StatusStarting, models.StatusRunning) // agent paused it
	old := timestamppb.New(time.Now().Add(-time.Hour))
	inv := newInventory(
		&pb.Sandbox{SandboxId: "sb-0000001a", State: pb.SandboxState_SANDBOX_STATE_RUNNING, CreatedAt: old},
		&pb.Sandbox{SandboxId: "sb-0000001c", State: pb.SandboxState_SANDBOX_STATE_PAUSED, CreatedAt: old, PausedAt: old},
		&pb.Sandbox{SandboxId: "sb-0000001d", State: pb.SandboxState_SANDBOX_STATE_RUNNING, CreatedAt: old}, // orphan
	)
	time.Sleep(20 * time.Millisecond) // past the rows' grace
	c := start(t, &scripted{inv: inv})
	p := NewPool(c.tlsForTest, st, slog.New(slog.DiscardHandler))
	defer p.Close()
	rec := NewReconciler(st, slog.New(slog.DiscardHandler), ReconcileOptions{Every: time.Hour, Grace: 10 * time.Millisecond, StartingGrace: 10 * time.Millisecond})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(rctx, []string{c.Endpoint()}, Heartbeats{Interval: 100 * time.Millisecond, Reconciler: rec})
	}()
	defer func() { cancel(); <-done }()

	waitFor(t, "orphan destroyed", func() bool { return slices.Contains(inv.destroyedIDs(), "sb-0000001d") })
	wantStatus := func(id string, want models.SandboxStatus, reason string) {
		t.Helper()
		waitFor(t, id+" "+string(want), func() bool {
			sb, err := st.GetSandbox(ctx, store.AdminScope, id)
			return err == nil && sb.Status == want && sb.Error == reason
		})
	}
	wantStatus("sb-0000001a", models.StatusRunning, "")
	wantStatus("sb-0000001b", models.StatusError, ReasonLost)
	wantStatus("sb-0000001c", models.StatusPaused, "")
	k, err := st.GetAPIKey(ctx, store.AdminScope, key.ID)
	if err != nil || k.Used.VCPUs != 2 || k.Used.MemoryMB != 512 {
		t.Fatalf("pool after losing one of three: %+v %v", k.Used, err)
	}
	if got := inv.destroyedIDs(); len(got) != 1 {
		t.Fatalf("destroyed %v, want only the orphan", got)
	}

	// The agent stops answering; meanwhile a sandbox without a row
	// appears. Only the reconnect can find it (Every is an hour).
	inv.setDown(true)
	waitStatus(t, st, models.HostUnhealthy)
	inv.put(&pb.Sandbox{SandboxId: "sb-0000001e", State: pb.SandboxState_SANDBOX_STATE_RUNNING, CreatedAt: old})
	inv.setDown(false)
	waitFor(t, "orphan destroyed after reconnect", func() bool { return slices.Contains(inv.destroyedIDs(), "sb-0000001e") })
	wantStatus("sb-0000001a", models.StatusRunning, "")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
