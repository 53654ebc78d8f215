package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

func TestSandboxNetworkPolicy(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	k := mkKey(t, s, "alice", bigPool)
	p := &models.NetworkPolicy{Egress: models.EgressDenyAll, AllowCIDRs: []string{"198.51.100.0/24"}}
	sb := mkSandbox(t, s, k, func(n *store.NewSandbox) { n.Network = p })
	def := mkSandbox(t, s, k, nil)
	for _, got := range []store.Sandbox{sb, get(t, s, sb.ID)} {
		if got.Network == nil || got.Network.Egress != models.EgressDenyAll || !slices.Equal(got.Network.AllowCIDRs, p.AllowCIDRs) {
			t.Errorf("network %+v, want %+v", got.Network, p)
		}
	}
	if got := get(t, s, def.ID); got.Network != nil {
		t.Errorf("default network %+v, want nil (allow all)", got.Network)
	}
	page, err := s.ListSandboxes(ctx, k.Scope(), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range page.Sandboxes {
		if (got.ID == sb.ID) != (got.Network != nil) {
			t.Errorf("listed %s with network %+v", got.ID, got.Network)
		}
	}
	bad := store.NewSandbox{ID: "sb-0000beef", OwnerID: k.OwnerID, APIKeyID: k.ID, Template: "minimal",
		Resources: small(), Network: &models.NetworkPolicy{DenyCIDRs: []string{"nope"}}}
	if _, err := s.CreateSandbox(ctx, bad); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad policy: %v, want invalid argument", err)
	}
	if key, err := s.GetAPIKey(ctx, store.AdminScope, k.ID); err != nil || key.Used.VCPUs != 2 {
		t.Errorf("pool used %+v (%v) after a refused create, want 2 vCPUs (the two sandboxes)", key.Used, err)
	}
}

func TestUpdateSandbox(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	alice := mkKey(t, s, "alice", bigPool)
	bob := mkKey(t, s, "bob", bigPool)
	sb := mkRunning(t, s, alice, 60, time.Hour)
	if idle, _ := s.StillIdle(ctx, sb.ID); !idle {
		t.Fatal("setup: not idle")
	}
	// Metadata alone replaces the map and leaves the idle period alone.
	got, err := s.UpdateSandbox(ctx, alice.Scope(), sb.ID, store.SandboxUpdate{Metadata: map[string]string{"stage": "2"}})
	if err != nil || got.Metadata["stage"] != "2" || len(got.Metadata) != 1 || got.TimeoutSec != 60 {
		t.Fatalf("metadata update: %+v %v", got, err)
	}
	if idle, _ := s.StillIdle(ctx, sb.ID); !idle {
		t.Error("a metadata update restarted the idle period")
	}
	// A new timeout restarts it.
	got, err = s.UpdateSandbox(ctx, alice.Scope(), sb.ID, store.SandboxUpdate{TimeoutSec: ptr(600)})
	if err != nil || got.TimeoutSec != 600 || got.Metadata["stage"] != "2" {
		t.Fatalf("timeout update: %+v %v", got, err)
	}
	if idle, _ := s.StillIdle(ctx, sb.ID); idle {
		t.Error("a timeout update did not restart the idle period")
	}
	if _, err := s.UpdateSandbox(ctx, bob.Scope(), sb.ID, store.SandboxUpdate{TimeoutSec: ptr(1)}); !errdefs.IsNotFound(err) {
		t.Errorf("another owner: %v, want not found", err)
	}
	if _, err := s.UpdateSandbox(ctx, alice.Scope(), sb.ID, store.SandboxUpdate{TimeoutSec: ptr(-1)}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("negative timeout: %v", err)
	}
	if _, err := s.MarkStopped(ctx, alice.Scope(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateSandbox(ctx, alice.Scope(), sb.ID, store.SandboxUpdate{TimeoutSec: ptr(1)}); !errdefs.IsConflict(err) {
		t.Errorf("stopped sandbox: %v, want conflict", err)
	}
}
