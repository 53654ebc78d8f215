package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

func TestCreateAndGetSandbox(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	alice := mkKey(t, s, "alice", store.Pool{VCPUs: 4, MemoryMB: 4096, StorageMB: 1000})
	bob := mkKey(t, s, "bob", bigPool)

	sb := mkSandbox(t, s, alice, func(n *store.NewSandbox) {
		n.Resources = models.Resources{VCPUs: 2, MemoryMB: 1024, DiskMB: 500}
		n.Metadata = map[string]string{"team": "ml", "env": "dev"}
		n.EnvdTokenHash = fakeHash("token")
		n.TimeoutSec = 60
	})
	if sb.Status != models.StatusPending || sb.OwnerID != "alice" || sb.APIKeyID != alice.ID || sb.HostID != "" {
		t.Errorf("created %+v", sb)
	}
	if sb.VCPUs != 2 || sb.MemoryMB != 1024 || sb.DiskMB != 500 || sb.TimeoutSec != 60 || sb.Metadata["team"] != "ml" {
		t.Errorf("fields not stored: %+v", sb)
	}
	if sb.CreatedAt.IsZero() || !sb.StartedAt.IsZero() || sb.EnvdTokenHash != fakeHash("token") {
		t.Errorf("timestamps/token: %+v", sb)
	}
	k, _ := s.GetAPIKey(ctx, store.AdminScope, alice.ID)
	if k.Used != (store.Pool{VCPUs: 2, MemoryMB: 1024, StorageMB: 500}) {
		t.Errorf("used after create = %+v", k.Used)
	}

	tests := []struct {
		name  string
		scope store.Scope
		id    string
		ok    bool
	}{
		{"owner", alice.Scope(), sb.ID, true},
		{"admin", store.AdminScope, sb.ID, true},
		{"another owner", bob.Scope(), sb.ID, false},
		{"empty owner", store.Scope{}, sb.ID, false},
		{"missing", alice.Scope(), "sb-00000000", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.GetSandbox(ctx, tt.scope, tt.id)
			if tt.ok {
				if err != nil || got.ID != sb.ID || got.Metadata["env"] != "dev" {
					t.Errorf("got %+v, %v", got, err)
				}
				return
			}
			if !errdefs.IsNotFound(err) {
				t.Errorf("err = %v, want not found", err)
			}
		})
	}
}

func TestCreateSandboxRejects(t *testing.T) {
	ctx := context.Background()
	s, d := newStore(t)
	k := mkKey(t, s, "alice", store.Pool{VCPUs: 4, MemoryMB: 4096, StorageMB: 100})
	taken := mkSandbox(t, s, k, nil)

	tests := []struct {
		name string
		mut  func(*store.NewSandbox)
		want error
	}{
		{"duplicate id", func(n *store.NewSandbox) { n.ID = taken.ID }, errdefs.ErrAlreadyExists},
		{"no template", func(n *store.NewSandbox) { n.Template = "" }, errdefs.ErrInvalidArgument},
		{"zero vcpus", func(n *store.NewSandbox) { n.Resources.VCPUs = 0 }, errdefs.ErrInvalidArgument},
		{"unknown key", func(n *store.NewSandbox) { n.APIKeyID = "key-nothere" }, errdefs.ErrNotFound},
		{"unknown host", func(n *store.NewSandbox) { n.HostID = "host-nothere" }, errdefs.ErrInvalidArgument},
		{"bad token hash", func(n *store.NewSandbox) { n.EnvdTokenHash = "secret" }, errdefs.ErrInvalidArgument},
		{"too many vcpus", func(n *store.NewSandbox) { n.Resources.VCPUs = 4 }, errdefs.ErrPoolExhausted},
		{"too much disk", func(n *store.NewSandbox) { n.Resources.DiskMB = 101 }, errdefs.ErrPoolExhausted},
		{"bad outbox", func(n *store.NewSandbox) {
			n.Outbox = []store.OutboxEvent{{TransactionID: "t", Payload: json.RawMessage("{")}}
		}, errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := store.NewSandbox{ID: id.NewSandboxID(), OwnerID: "alice", APIKeyID: k.ID, Template: "minimal",
				Resources: small()}
			tt.mut(&n)
			_, err := s.CreateSandbox(ctx, n)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			// Nothing half-done: the reservation rolled back with the insert.
			got, _ := s.GetAPIKey(ctx, store.AdminScope, k.ID)
			if got.Used != (store.Pool{VCPUs: 1, MemoryMB: 128}) {
				t.Errorf("used after failed create = %+v", got.Used)
			}
			var rows int
			if err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM sandboxes`).Scan(&rows); err != nil || rows != 1 {
				t.Errorf("sandbox rows = %d, %v", rows, err)
			}
		})
	}

	t.Run("pool error names the resource", func(t *testing.T) {
		_, err := s.CreateSandbox(ctx, store.NewSandbox{ID: id.NewSandboxID(), OwnerID: "alice", APIKeyID: k.ID,
			Template: "minimal", Resources: models.Resources{VCPUs: 1, MemoryMB: 4000}})
		var pe *store.PoolExhaustedError
		if !errors.As(err, &pe) {
			t.Fatalf("err = %v", err)
		}
		if pe.Resource != store.ResourceMemoryMB || pe.Requested != 4000 || pe.Used != 128 || pe.Limit != 4096 {
			t.Errorf("got %+v", pe)
		}
		if !errdefs.IsResourceExhausted(err) || errdefs.Kind(err) != errdefs.ErrPoolExhausted {
			t.Errorf("kind = %v", errdefs.Kind(err))
		}
	})

	t.Run("revoked key cannot reserve", func(t *testing.T) {
		r := mkKey(t, s, "carol", bigPool)
		if _, err := s.RevokeAPIKey(ctx, store.AdminScope, r.ID); err != nil {
			t.Fatal(err)
		}
		_, err := s.CreateSandbox(ctx, store.NewSandbox{ID: id.NewSandboxID(), OwnerID: "carol", APIKeyID: r.ID,
			Template: "minimal", Resources: small()})
		if !errors.Is(err, errdefs.ErrUnauthenticated) {
			t.Errorf("err = %v, want unauthenticated", err)
		}
	})
}

// TestTransitions tries every (from, to) pair against a real row: legal
// moves succeed, illegal ones and stale expectations are conflicts, and
// the row is unchanged by a refused move.
func TestTransitions(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	k := mkKey(t, s, "alice", bigPool)

	// put makes a sandbox and drives it to st along legal moves.
	paths := map[models.SandboxStatus][]models.SandboxStatus{
		models.StatusPending:    nil,
		models.StatusStarting:   {models.StatusStarting},
		models.StatusRunning:    {models.StatusStarting, models.StatusRunning},
		models.StatusPaused:     {models.StatusStarting, models.StatusRunning, models.StatusPaused},
		models.StatusHibernated: {models.StatusStarting, models.StatusRunning, models.StatusHibernated},
		models.StatusStopped:    {models.StatusStopped},
		models.StatusError:      {models.StatusError},
	}
	put := func(t *testing.T, st models.SandboxStatus) store.Sandbox {
		sb := mkSandbox(t, s, k, nil)
		cur := models.StatusPending
		for _, next := range paths[st] {
			var err error
			sb, err = s.Transition(ctx, store.Transition{ID: sb.ID, From: []models.SandboxStatus{cur}, To: next})
			if err != nil {
				t.Fatalf("drive to %s: %v", st, err)
			}
			cur = next
		}
		return sb
	}

	for _, from := range models.AllStatuses {
		for _, to := range models.AllStatuses {
			t.Run(string(from)+"->"+string(to), func(t *testing.T) {
				sb := put(t, from)
				got, err := s.Transition(ctx, store.Transition{ID: sb.ID, From: []models.SandboxStatus{from}, To: to})
				if models.CanTransition(from, to) {
					if err != nil || got.Status != to {
						t.Fatalf("legal move: %+v, %v", got.Status, err)
					}
				} else {
					var ce *store.StatusConflictError
					if !errdefs.IsConflict(err) || !errors.As(err, &ce) {
						t.Fatalf("illegal move: err = %v, want conflict", err)
					}
					now, _ := s.GetSandbox(ctx, store.AdminScope, sb.ID)
					if now.Status != from {
						t.Fatalf("refused move changed status to %s", now.Status)
					}
				}
				// A stale expectation: the row is in from, the caller
				// believes it is in some other legal predecessor of to.
				for _, other := range models.AllStatuses {
					if other == from || !models.CanTransition(other, to) || models.CanTransition(from, to) {
						continue
					}
					_, err := s.Transition(ctx, store.Transition{ID: sb.ID, From: []models.SandboxStatus{other}, To: to})
					var ce *store.StatusConflictError
					if !errors.As(err, &ce) || ce.Current != from {
						t.Fatalf("stale CAS from %s: err = %v, want conflict naming %s", other, err, from)
					}
				}
			})
		}
	}
}

func TestTransitionFieldsAndScope(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	k := mkKey(t, s, "alice", bigPool)
	if _, err := s.UpsertHost(ctx, store.HostRegistration{ID: "host-1", GRPCEndpoint: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	sb := mkSandbox(t, s, k, nil)
	from := func(st models.SandboxStatus) []models.SandboxStatus { return []models.SandboxStatus{st} }

	if _, err := s.Transition(ctx, store.Transition{ID: sb.ID, OwnerID: "bob", From: from(models.StatusPending),
		To: models.StatusStarting}); !errdefs.IsNotFound(err) {
		t.Errorf("other owner's transition: err = %v, want not found", err)
	}
	if _, err := s.Transition(ctx, store.Transition{ID: "sb-00000000", To: models.StatusStarting}); !errdefs.IsNotFound(err) {
		t.Errorf("missing sandbox: err = %v, want not found", err)
	}
	if _, err := s.Transition(ctx, store.Transition{ID: sb.ID, To: "exploded"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown status: err = %v", err)
	}

	got, err := s.Transition(ctx, store.Transition{ID: sb.ID, OwnerID: "alice", From: from(models.StatusPending),
		To: models.StatusStarting, Set: store.SandboxPatch{HostID: ptr("host-1"), VsockCID: ptr(7)}})
	if err != nil || got.HostID != "host-1" || got.VsockCID != 7 {
		t.Fatalf("starting: %+v, %v", got, err)
	}
	got, err = s.Transition(ctx, store.Transition{ID: sb.ID, From: from(models.StatusStarting), To: models.StatusRunning,
		Set: store.SandboxPatch{GuestIP: ptr("10.0.0.2")}})
	if err != nil || got.GuestIP != "10.0.0.2" || got.HostID != "host-1" || got.StartedAt.IsZero() || got.LastActiveAt.IsZero() {
		t.Fatalf("running: %+v, %v", got, err)
	}
	firstStart := got.StartedAt
	got, err = s.Transition(ctx, store.Transition{ID: sb.ID, From: from(models.StatusRunning), To: models.StatusPaused,
		Set: store.SandboxPatch{SnapshotPath: ptr("/snap/1")}})
	if err != nil || got.PausedAt.IsZero() || got.SnapshotPath != "/snap/1" {
		t.Fatalf("paused: %+v, %v", got, err)
	}
	got, err = s.Transition(ctx, store.Transition{ID: sb.ID, From: from(models.StatusPaused), To: models.StatusHibernated,
		Set: store.SandboxPatch{HibernateLocation: ptr("s3://b/sb")}})
	if err != nil || got.HibernateLocation != "s3://b/sb" || got.PausedAt.IsZero() {
		t.Fatalf("hibernated: %+v, %v", got, err)
	}
	got, err = s.Transition(ctx, store.Transition{ID: sb.ID, From: from(models.StatusHibernated), To: models.StatusRunning})
	if err != nil || !got.PausedAt.IsZero() || !got.StartedAt.Equal(firstStart) {
		t.Fatalf("resumed: paused_at %v started_at %v (first %v), %v", got.PausedAt, got.StartedAt, firstStart, err)
	}
	// A multi-status expectation.
	got, err = s.Transition(ctx, store.Transition{ID: sb.ID,
		From: []models.SandboxStatus{models.StatusPaused, models.StatusRunning}, To: models.StatusStopped})
	if err != nil || got.StoppedAt.IsZero() {
		t.Fatalf("stopped: %+v, %v", got, err)
	}
	// Stopping again is a conflict that names the current status.
	_, err = s.MarkStopped(ctx, store.Scope{OwnerID: "alice"}, sb.ID)
	var ce *store.StatusConflictError
	if !errors.As(err, &ce) || ce.Current != models.StatusStopped {
		t.Errorf("second stop: %v", err)
	}
}

func TestReleaseExactlyOnce(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	k := mkKey(t, s, "alice", store.Pool{VCPUs: 8, MemoryMB: 8192, StorageMB: 8192})
	a := mkSandbox(t, s, k, func(n *store.NewSandbox) { n.Resources = models.Resources{VCPUs: 2, MemoryMB: 512, DiskMB: 10} })
	b := mkSandbox(t, s, k, func(n *store.NewSandbox) { n.Resources = models.Resources{VCPUs: 3, MemoryMB: 1024, DiskMB: 20} })
	used := func() store.Pool {
		got, err := s.GetAPIKey(ctx, store.AdminScope, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.Used
	}
	if u := used(); u != (store.Pool{VCPUs: 5, MemoryMB: 1536, StorageMB: 30}) {
		t.Fatalf("used = %+v", u)
	}

	// error releases; error -> stopped does not release again.
	if _, err := s.MarkError(ctx, a.ID, "boot failed"); err != nil {
		t.Fatal(err)
	}
	if u := used(); u != (store.Pool{VCPUs: 3, MemoryMB: 1024, StorageMB: 20}) {
		t.Fatalf("used after error = %+v", u)
	}
	got, _ := s.GetSandbox(ctx, store.AdminScope, a.ID)
	if got.Error != "boot failed" || got.Status != models.StatusError {
		t.Errorf("error row: %+v", got)
	}
	if _, err := s.MarkStopped(ctx, store.AdminScope, a.ID); err != nil {
		t.Fatal(err)
	}
	if released, err := s.Release(ctx, a.ID); err != nil || released {
		t.Errorf("explicit release after stop: %v, %v", released, err)
	}
	if u := used(); u != (store.Pool{VCPUs: 3, MemoryMB: 1024, StorageMB: 20}) {
		t.Fatalf("used after double release = %+v", u)
	}

	// Explicit release, then stop: once.
	if released, err := s.Release(ctx, b.ID); err != nil || !released {
		t.Fatalf("release b: %v, %v", released, err)
	}
	if _, err := s.MarkStopped(ctx, store.Scope{OwnerID: "alice"}, b.ID); err != nil {
		t.Fatal(err)
	}
	if u := used(); u != (store.Pool{}) {
		t.Fatalf("used after all released = %+v", u)
	}
	if drift, err := s.CheckPools(ctx); err != nil || len(drift) != 0 {
		t.Errorf("pool drift: %+v, %v", drift, err)
	}
	if released, err := s.Release(ctx, "sb-00000000"); err != nil || released {
		t.Errorf("release of unknown sandbox: %v, %v", released, err)
	}
}

func TestOutboxWithStateChange(t *testing.T) {
	ctx := context.Background()
	s, d := newStore(t)
	k := mkKey(t, s, "alice", store.Pool{VCPUs: 1, MemoryMB: 8192, StorageMB: 0})
	ev := func(tx string) store.OutboxEvent {
		return store.OutboxEvent{TransactionID: tx, Payload: json.RawMessage(`{"code":"sandbox_created"}`)}
	}
	count := func() int {
		var n int
		if err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM usage_outbox`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	sb := mkSandbox(t, s, k, func(n *store.NewSandbox) { n.Outbox = []store.OutboxEvent{ev("create-1")} })
	if count() != 1 {
		t.Fatal("outbox event not written with the create")
	}
	// A refused create writes no event.
	_, err := s.CreateSandbox(ctx, store.NewSandbox{ID: id.NewSandboxID(), OwnerID: "alice", APIKeyID: k.ID,
		Template: "minimal", Resources: small(), Outbox: []store.OutboxEvent{ev("create-2")}})
	if !errors.Is(err, errdefs.ErrPoolExhausted) || count() != 1 {
		t.Fatalf("refused create: %v, outbox rows %d", err, count())
	}
	// A refused transition writes no event; a successful one does, once.
	_, err = s.Transition(ctx, store.Transition{ID: sb.ID, From: []models.SandboxStatus{models.StatusRunning},
		To: models.StatusPaused, Outbox: []store.OutboxEvent{ev("pause-1")}})
	if !errdefs.IsConflict(err) || count() != 1 {
		t.Fatalf("refused transition: %v, rows %d", err, count())
	}
	if _, err := s.MarkStopped(ctx, store.AdminScope, sb.ID, ev("stop-1"), ev("stop-1")); err != nil {
		t.Fatal(err)
	}
	if count() != 2 {
		t.Fatalf("outbox rows = %d, want 2 (duplicate transaction id stored once)", count())
	}

	// Claim, fail, claim again later, send.
	msgs, err := s.ClaimOutbox(ctx, 10, 0)
	if err != nil || len(msgs) != 2 || msgs[0].TransactionID != "create-1" || msgs[0].Attempts != 1 {
		t.Fatalf("claim: %+v, %v", msgs, err)
	}
	var payload map[string]string
	if err := json.Unmarshal(msgs[0].Payload, &payload); err != nil || payload["code"] != "sandbox_created" {
		t.Errorf("payload %s: %v", msgs[0].Payload, err)
	}
	if err := s.MarkOutboxFailed(ctx, msgs[0].ID, "lago down", 0); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkOutboxSent(ctx, msgs[1].ID); err != nil {
		t.Fatal(err)
	}
	again, err := s.ClaimOutbox(ctx, 10, 0)
	if err != nil || len(again) != 1 || again[0].ID != msgs[0].ID || again[0].Attempts != 2 {
		t.Fatalf("second claim: %+v, %v", again, err)
	}
	// A lease hides a claimed event from other claimers.
	if err := s.MarkOutboxFailed(ctx, again[0].ID, "still down", 0); err != nil {
		t.Fatal(err)
	}
	leased, err := s.ClaimOutbox(ctx, 10, 3600e9)
	if err != nil || len(leased) != 1 {
		t.Fatalf("leased claim: %+v, %v", leased, err)
	}
	if other, err := s.ClaimOutbox(ctx, 10, 0); err != nil || len(other) != 0 {
		t.Errorf("claim during a lease: %+v, %v", other, err)
	}
}
