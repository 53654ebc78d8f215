package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// Each run (running to anything else) is billed once, in the transaction
// that ends it; nothing is enqueued while usage events are off.
func TestRuntimeUsageEvents(t *testing.T) {
	ctx := context.Background()
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("usage=%v", on), func(t *testing.T) {
			s, _ := newStore(t)
			s.SetUsageEvents(on)
			k := mkKey(t, s, "alice", bigPool)
			sb := mkRunning(t, s, k, 60, 0) // pending -> starting -> running
			move := func(to models.SandboxStatus) {
				t.Helper()
				if _, err := s.Transition(ctx, store.Transition{ID: sb.ID, To: to}); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(20 * time.Millisecond)
			move(models.StatusPaused)
			move(models.StatusRunning)
			move(models.StatusHibernated) // ends the second run
			move(models.StatusRunning)
			if _, err := s.MarkStopped(ctx, store.AdminScope, sb.ID); err != nil { // ends the third
				t.Fatal(err)
			}
			msgs, err := s.ClaimOutbox(ctx, 100, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if !on {
				if len(msgs) != 0 {
					t.Fatalf("%d events with usage off", len(msgs))
				}
				return
			}
			if len(msgs) != 3 {
				t.Fatalf("%d events, want 3 (one per run)", len(msgs))
			}
			seen := map[string]bool{}
			for i, m := range msgs {
				var ev store.UsageEvent
				if err := json.Unmarshal(m.Payload, &ev); err != nil {
					t.Fatal(err)
				}
				p := ev.Properties
				if ev.Code != store.UsageEventCode || ev.ExternalSubscriptionID != "alice" || ev.TransactionID != m.TransactionID ||
					p.SandboxID != sb.ID || p.VCPUs != 1 || p.MemoryMB != 128 || p.Seconds < 0 ||
					p.VCPUSeconds != p.Seconds || p.GBSeconds != p.Seconds/8 || seen[ev.TransactionID] {
					t.Errorf("event %d: %s", i, m.Payload)
				}
				seen[ev.TransactionID] = true
				if i == 0 && p.Seconds < 0.02 {
					t.Errorf("first run billed %.3f s, ran at least 0.02", p.Seconds)
				}
			}
		})
	}
}

// A run on a host that is declared gone is billed up to the host's last
// heartbeat, not up to when the control plane gave up on it.
func TestRuntimeUsageOfAGoneHost(t *testing.T) {
	ctx := context.Background()
	s, d := newStore(t)
	s.SetUsageEvents(true)
	if _, err := s.UpsertHost(ctx, store.HostRegistration{ID: "h1", GRPCEndpoint: "127.0.0.1:1",
		Capacity: models.Capacity{TotalVCPUs: 8, TotalMemoryMB: 8192}}); err != nil {
		t.Fatal(err)
	}
	k := mkKey(t, s, "alice", bigPool)
	sb := mkSandbox(t, s, k, func(n *store.NewSandbox) { n.HostID = "h1" })
	for _, to := range []models.SandboxStatus{models.StatusStarting, models.StatusRunning} {
		if _, err := s.Transition(ctx, store.Transition{ID: sb.ID, To: to}); err != nil {
			t.Fatal(err)
		}
	}
	// It ran 10 minutes; the host's last heartbeat was 5 minutes ago.
	if _, err := d.Pool.Exec(ctx, `UPDATE sandboxes SET running_since = now() - interval '10 minutes' WHERE id = $1`, sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool.Exec(ctx, `UPDATE hosts SET last_heartbeat = now() - interval '5 minutes' WHERE id = 'h1'`); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.FailHostSandboxes(ctx, "h1", "host h1 gone"); err != nil || len(ids) != 1 {
		t.Fatalf("fail host: %v %v", ids, err)
	}
	msgs, err := s.ClaimOutbox(ctx, 10, time.Minute)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%d events (%v), want 1", len(msgs), err)
	}
	var ev store.UsageEvent
	if err := json.Unmarshal(msgs[0].Payload, &ev); err != nil {
		t.Fatal(err)
	}
	if s := ev.Properties.Seconds; s < 299 || s > 302 {
		t.Errorf("billed %.1f s, want the 300 s up to the last heartbeat", s)
	}
}

// A long run is billed in pieces that add up to the whole.
func TestCheckpointRuns(t *testing.T) {
	ctx := context.Background()
	s, d := newStore(t)
	k := mkKey(t, s, "alice", bigPool)
	long := mkRunning(t, s, k, 0, 0)
	mkRunning(t, s, k, 0, 0) // a short run: not billed yet
	if _, err := d.Pool.Exec(ctx, `UPDATE sandboxes SET running_since = now() - interval '2 hours' WHERE id = $1`, long.ID); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CheckpointRuns(ctx, time.Hour, 0); n != 0 || err != nil {
		t.Fatalf("with usage off: %d %v", n, err)
	}
	s.SetUsageEvents(true)
	if n, err := s.CheckpointRuns(ctx, time.Hour, 0); n != 1 || err != nil {
		t.Fatalf("checkpoint: %d %v, want 1 (only the long run)", n, err)
	}
	if n, err := s.CheckpointRuns(ctx, time.Hour, 0); n != 0 || err != nil {
		t.Fatalf("second checkpoint: %d %v, want 0 (just billed)", n, err)
	}
	if _, err := s.MarkStopped(ctx, store.AdminScope, long.ID); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.ClaimOutbox(ctx, 10, time.Minute)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("%d events (%v), want the checkpoint and the rest of the run", len(msgs), err)
	}
	var total float64
	txs := map[string]bool{}
	for _, m := range msgs {
		var ev store.UsageEvent
		if err := json.Unmarshal(m.Payload, &ev); err != nil || ev.Properties.SandboxID != long.ID {
			t.Fatalf("event %s (%v)", m.Payload, err)
		}
		total += ev.Properties.Seconds
		txs[ev.TransactionID] = true
	}
	if len(txs) != 2 || total < 7199 || total > 7210 {
		t.Errorf("pieces bill %.1f s under %d transaction ids, want 7200 s under 2", total, len(txs))
	}

}
