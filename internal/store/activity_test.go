package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// mkRunning creates a running sandbox with timeout_sec and, when idleFor
// is not zero, last activity that long ago.
func mkRunning(t *testing.T, s *store.Store, k store.APIKey, timeoutSec int, idleFor time.Duration) store.Sandbox {
	t.Helper()
	ctx := context.Background()
	sb := mkSandbox(t, s, k, func(n *store.NewSandbox) { n.TimeoutSec = timeoutSec })
	for _, to := range []models.SandboxStatus{models.StatusStarting, models.StatusRunning} {
		if _, err := s.Transition(ctx, store.Transition{ID: sb.ID, To: to}); err != nil {
			t.Fatal(err)
		}
	}
	if idleFor > 0 {
		if _, err := s.Pool().Exec(ctx, `UPDATE sandboxes SET last_active_at = now() - make_interval(secs => $2)
			WHERE id = $1`, sb.ID, idleFor.Seconds()); err != nil {
			t.Fatal(err)
		}
	}
	return get(t, s, sb.ID)
}

func TestIdleSandboxes(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	k := mkKey(t, s, "alice", bigPool)
	older := mkRunning(t, s, k, 60, 10*time.Minute)
	idle := mkRunning(t, s, k, 60, 2*time.Minute)
	mkRunning(t, s, k, 600, 2*time.Minute) // within its timeout
	mkRunning(t, s, k, 0, time.Hour)       // timeout 0: never idle
	mkRunning(t, s, k, 60, 0)              // just started
	paused := mkRunning(t, s, k, 60, 10*time.Minute)
	if _, err := s.Transition(ctx, store.Transition{ID: paused.ID, To: models.StatusPaused}); err != nil {
		t.Fatal(err)
	}
	mkSandbox(t, s, k, func(n *store.NewSandbox) { n.TimeoutSec = 1 }) // pending

	got, err := s.IdleSandboxes(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != older.ID || got[1].ID != idle.ID {
		t.Fatalf("idle = %v, want [%s %s] (longest idle first)", ids(got), older.ID, idle.ID)
	}
	if got, err := s.IdleSandboxes(ctx, 1); err != nil || len(got) != 1 || got[0].ID != older.ID {
		t.Errorf("idle limit 1 = %v, %v", ids(got), err)
	}
	if got, err := s.IdleSandboxes(ctx, 0, older.ID); err != nil || len(got) != 1 || got[0].ID != idle.ID {
		t.Errorf("idle without %s = %v, %v", older.ID, ids(got), err)
	}

	// Activity ends idleness; only running sandboxes are touched.
	if still, err := s.StillIdle(ctx, idle.ID); err != nil || !still {
		t.Fatalf("still idle before touch: %v %v", still, err)
	}
	n, err := s.TouchSandboxes(ctx, []string{idle.ID, paused.ID, id.NewSandboxID()})
	if err != nil || n != 1 {
		t.Fatalf("touch: %d rows, %v; want 1", n, err)
	}
	if still, err := s.StillIdle(ctx, idle.ID); err != nil || still {
		t.Errorf("still idle after touch: %v %v", still, err)
	}
	if got, _ := s.GetSandbox(ctx, store.AdminScope, paused.ID); !got.LastActiveAt.Equal(paused.LastActiveAt) {
		t.Errorf("paused sandbox touched: %v -> %v", paused.LastActiveAt, got.LastActiveAt)
	}
	if got, err := s.IdleSandboxes(ctx, 0); err != nil || len(got) != 1 || got[0].ID != older.ID {
		t.Errorf("idle after touch = %v, %v", ids(got), err)
	}
	if n, err := s.TouchSandboxes(ctx, nil); n != 0 || err != nil {
		t.Errorf("touch nothing: %d %v", n, err)
	}
}

func TestActivityRecorder(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	k := mkKey(t, s, "alice", bigPool)
	a := mkRunning(t, s, k, 60, 10*time.Minute)
	b := mkRunning(t, s, k, 60, 10*time.Minute)
	r := s.NewActivityRecorder(50 * time.Millisecond)
	r.Touch(a.ID)
	r.Touch(a.ID)
	deadline := time.Now().Add(5 * time.Second)
	for {
		still, err := s.StillIdle(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !still {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a touch was not written within 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Close writes what is pending, even before the next tick.
	r2 := s.NewActivityRecorder(time.Hour)
	r2.Touch(b.ID)
	if err := r2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if still, err := s.StillIdle(ctx, b.ID); err != nil || still {
		t.Errorf("b still idle after Close: %v %v", still, err)
	}
	r2.Touch(a.ID) // after Close: ignored, no panic
	if err := r2.Close(ctx); err != nil {
		t.Errorf("second close: %v", err)
	}
	if err := r.Close(ctx); err != nil {
		t.Error(err)
	}
}

func ids(sbs []store.Sandbox) []string {
	out := make([]string, len(sbs))
	for i, sb := range sbs {
		out[i] = sb.ID
	}
	return out
}
