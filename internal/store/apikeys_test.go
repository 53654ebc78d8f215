package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

func TestAPIKeys(t *testing.T) {
	ctx := context.Background()
	s, d := newStore(t)

	admin, err := s.CreateAPIKey(ctx, store.NewAPIKey{
		KeyHash: fakeHash("admin"), KeyPrefix: "wrn_AbCd", Name: "root", OwnerID: "ops", IsAdmin: true,
		RateLimitPerSec: 5, RateLimitBurst: 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	if admin.Pool != (store.Pool{VCPUs: 2, MemoryMB: 8192, StorageMB: 20480}) || admin.Plan != "hobby" {
		t.Errorf("defaults not applied: %+v", admin)
	}
	if admin.RateLimitPerSec != 5 || admin.RateLimitBurst != 20 || !admin.IsAdmin || admin.Revoked() {
		t.Errorf("fields not stored: %+v", admin)
	}
	if len(admin.ID) != len("key-12345678") {
		t.Errorf("generated id %q", admin.ID)
	}
	alice := mkKey(t, s, "alice", store.Pool{VCPUs: 4, MemoryMB: 1024, StorageMB: 0})
	alice2 := mkKey(t, s, "alice", store.Pool{VCPUs: 1, MemoryMB: 1, StorageMB: 1})
	bob := mkKey(t, s, "bob", store.Pool{VCPUs: 1, MemoryMB: 1, StorageMB: 1})
	if alice.RateLimitPerSec != 0 || alice.RateLimitBurst != 0 {
		t.Errorf("unset rate limits should read 0: %+v", alice)
	}

	t.Run("only the hash is stored", func(t *testing.T) {
		var n int
		if err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM api_keys WHERE key_hash !~ '^[0-9a-f]{64}$'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d keys stored in a form other than SHA-256 hex", n)
		}
		_, err := s.CreateAPIKey(ctx, store.NewAPIKey{KeyHash: "wrn_plaintextkeyplaintextkeyplaintext", OwnerID: "x"})
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("plaintext as hash: err = %v, want invalid argument", err)
		}
	})

	t.Run("duplicate hash", func(t *testing.T) {
		_, err := s.CreateAPIKey(ctx, store.NewAPIKey{KeyHash: admin.KeyHash, OwnerID: "x"})
		if !errors.Is(err, errdefs.ErrAlreadyExists) {
			t.Errorf("err = %v, want already exists", err)
		}
	})

	t.Run("by hash", func(t *testing.T) {
		got, err := s.APIKeyByHash(ctx, alice.KeyHash)
		if err != nil || got.ID != alice.ID || got.OwnerID != "alice" {
			t.Fatalf("got %+v, %v", got, err)
		}
		if _, err := s.APIKeyByHash(ctx, fakeHash("nope")); !errdefs.IsNotFound(err) {
			t.Errorf("unknown hash: err = %v, want not found", err)
		}
	})

	t.Run("list and get are scoped", func(t *testing.T) {
		all, err := s.ListAPIKeys(ctx, admin.Scope())
		if err != nil || len(all) != 4 {
			t.Fatalf("admin list = %d keys, %v", len(all), err)
		}
		mine, err := s.ListAPIKeys(ctx, alice.Scope())
		if err != nil || len(mine) != 2 || mine[0].ID != alice.ID || mine[1].ID != alice2.ID {
			t.Fatalf("alice list = %+v, %v", mine, err)
		}
		if _, err := s.GetAPIKey(ctx, alice.Scope(), bob.ID); !errdefs.IsNotFound(err) {
			t.Errorf("alice gets bob's key: err = %v", err)
		}
		if _, err := s.GetAPIKey(ctx, admin.Scope(), bob.ID); err != nil {
			t.Errorf("admin gets bob's key: %v", err)
		}
	})

	t.Run("revoke", func(t *testing.T) {
		if _, err := s.RevokeAPIKey(ctx, alice.Scope(), bob.ID); !errdefs.IsNotFound(err) {
			t.Errorf("alice revokes bob's key: err = %v", err)
		}
		r1, err := s.RevokeAPIKey(ctx, bob.Scope(), bob.ID)
		if err != nil || !r1.Revoked() {
			t.Fatalf("revoke: %+v, %v", r1, err)
		}
		r2, err := s.RevokeAPIKey(ctx, admin.Scope(), bob.ID)
		if err != nil || !r2.RevokedAt.Equal(*r1.RevokedAt) {
			t.Errorf("second revoke changed the time or failed: %v, %v", r2.RevokedAt, err)
		}
		got, _ := s.APIKeyByHash(ctx, bob.KeyHash)
		if !got.Revoked() {
			t.Error("revocation not visible by hash")
		}
		if _, err := s.RevokeAPIKey(ctx, admin.Scope(), "key-nothere"); !errdefs.IsNotFound(err) {
			t.Errorf("revoke unknown: err = %v", err)
		}
	})

	t.Run("touch writes at most once a minute", func(t *testing.T) {
		if err := s.TouchAPIKey(ctx, alice.ID); err != nil {
			t.Fatal(err)
		}
		k1, _ := s.GetAPIKey(ctx, admin.Scope(), alice.ID)
		if k1.LastUsedAt == nil {
			t.Fatal("last_used_at not set")
		}
		if err := s.TouchAPIKey(ctx, alice.ID); err != nil {
			t.Fatal(err)
		}
		k2, _ := s.GetAPIKey(ctx, admin.Scope(), alice.ID)
		if !k2.LastUsedAt.Equal(*k1.LastUsedAt) {
			t.Error("second touch within a minute wrote again")
		}
		if _, err := d.Pool.Exec(ctx, `UPDATE api_keys SET last_used_at = now() - interval '2 minutes' WHERE id = $1`, alice.ID); err != nil {
			t.Fatal(err)
		}
		if err := s.TouchAPIKey(ctx, alice.ID); err != nil {
			t.Fatal(err)
		}
		k3, _ := s.GetAPIKey(ctx, admin.Scope(), alice.ID)
		if !k3.LastUsedAt.After(*k1.LastUsedAt) {
			t.Error("touch after a minute did not write")
		}
	})

	t.Run("set pool limits", func(t *testing.T) {
		k, err := s.SetPoolLimits(ctx, alice2.ID, store.Pool{VCPUs: 8, MemoryMB: 4096, StorageMB: 100})
		if err != nil || k.Pool.VCPUs != 8 || k.Pool.MemoryMB != 4096 || k.Pool.StorageMB != 100 {
			t.Errorf("got %+v, %v", k.Pool, err)
		}
		if _, err := s.SetPoolLimits(ctx, alice2.ID, store.Pool{VCPUs: -1}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("negative: err = %v", err)
		}
		if _, err := s.SetPoolLimits(ctx, "key-nothere", store.Pool{}); !errdefs.IsNotFound(err) {
			t.Errorf("unknown: err = %v", err)
		}
	})
}
