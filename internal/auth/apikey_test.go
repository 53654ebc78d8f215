package auth_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/auth"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/pgtest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestGenerateKeyFormat(t *testing.T) {
	seen := map[string]bool{}
	counts := map[byte]int{}
	const n = 2000
	for i := 0; i < n; i++ {
		k, err := auth.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if len(k.Plaintext) != 36 || !strings.HasPrefix(k.Plaintext, "wrn_") || !auth.ValidFormat(k.Plaintext) {
			t.Fatalf("bad key %q", k.Plaintext)
		}
		if seen[k.Plaintext] {
			t.Fatalf("duplicate key %q", k.Plaintext)
		}
		seen[k.Plaintext] = true
		if k.Hash != auth.HashKey(k.Plaintext) || len(k.Hash) != 64 || strings.Contains(k.Hash, k.Plaintext[4:]) {
			t.Fatalf("hash %q", k.Hash)
		}
		if k.DisplayPrefix != k.Plaintext[:8] {
			t.Fatalf("display prefix %q", k.DisplayPrefix)
		}
		for j := 4; j < len(k.Plaintext); j++ {
			counts[k.Plaintext[j]]++
		}
	}
	// Every one of the 62 characters shows up, none wildly over- or
	// under-represented (expected 2000*32/62 ≈ 1032 each).
	if len(counts) != 62 {
		t.Errorf("%d distinct characters, want 62", len(counts))
	}
	for c, k := range counts {
		if k < 800 || k > 1300 {
			t.Errorf("character %q appears %d times", c, k)
		}
	}
}

func TestHashKey(t *testing.T) {
	tests := []struct{ in, want string }{
		// FIPS 180-2 test vectors.
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	}
	for _, tt := range tests {
		if got := auth.HashKey(tt.in); got != tt.want {
			t.Errorf("HashKey(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestValidFormat(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"wrn_" + strings.Repeat("a", 32), true},
		{"wrn_" + strings.Repeat("Z", 16) + strings.Repeat("9", 16), true},
		{"wrn_" + strings.Repeat("a", 31), false},
		{"wrn_" + strings.Repeat("a", 33), false},
		{"WRN_" + strings.Repeat("a", 32), false},
		{"xyz_" + strings.Repeat("a", 32), false},
		{"wrn_" + strings.Repeat("a", 31) + "-", false},
		{"wrn_" + strings.Repeat("a", 31) + "é", false},
		{"wrn_" + strings.Repeat("a", 30) + " \n", false},
		{"", false},
		{"wrn_", false},
	}
	for _, tt := range tests {
		if got := auth.ValidFormat(tt.in); got != tt.want {
			t.Errorf("ValidFormat(%q) = %v", tt.in, got)
		}
	}
}

func TestEqualAndMatches(t *testing.T) {
	k, _ := auth.GenerateKey()
	tests := []struct {
		a, b string
		want bool
	}{
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"abc", "ab", false},
		{"", "", true},
		{k.Hash, auth.HashKey(k.Plaintext), true},
		{k.Hash, strings.ToUpper(k.Hash), false},
	}
	for _, tt := range tests {
		if got := auth.Equal(tt.a, tt.b); got != tt.want {
			t.Errorf("Equal(%q, %q) = %v", tt.a, tt.b, got)
		}
	}
	if !auth.Matches(k.Plaintext, k.Hash) || auth.Matches(k.Plaintext+"x", k.Hash) || auth.Matches(k.Hash, k.Hash) {
		t.Error("Matches")
	}
}

// fakeLookup answers from a map and counts calls.
type fakeLookup struct {
	keys  map[string]store.APIKey
	err   error
	calls int
}

func (f *fakeLookup) APIKeyByHash(_ context.Context, hash string) (store.APIKey, error) {
	f.calls++
	if f.err != nil {
		return store.APIKey{}, f.err
	}
	k, ok := f.keys[hash]
	if !ok {
		return store.APIKey{}, errdefs.Errorf(errdefs.ErrNotFound, "api key")
	}
	return k, nil
}

func TestAuthenticatorWithFake(t *testing.T) {
	ctx := context.Background()
	good, _ := auth.GenerateKey()
	liar, _ := auth.GenerateKey()
	other, _ := auth.GenerateKey()
	f := &fakeLookup{keys: map[string]store.APIKey{
		good.Hash: {ID: "key-1", KeyHash: good.Hash, OwnerID: "alice"},
		// A broken lookup that returns a record for the wrong hash must
		// not authenticate.
		liar.Hash: {ID: "key-2", KeyHash: other.Hash, OwnerID: "mallory"},
	}}
	a := auth.NewAuthenticator(f)

	tests := []struct {
		name      string
		key       string
		wantID    string
		wantErr   error
		wantCalls int
	}{
		{"valid", good.Plaintext, "key-1", nil, 1},
		{"unknown", other.Plaintext, "", auth.ErrInvalidKey, 1},
		{"record with another hash", liar.Plaintext, "", auth.ErrInvalidKey, 1},
		{"malformed: no lookup", "wrn_short", "", auth.ErrInvalidKey, 0},
		{"hash instead of key", good.Hash, "", auth.ErrInvalidKey, 0},
		{"empty", "", "", auth.ErrInvalidKey, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.calls = 0
			k, err := a.Authenticate(ctx, tt.key)
			if !errors.Is(err, tt.wantErr) || k.ID != tt.wantID {
				t.Errorf("got %q, %v; want %q, %v", k.ID, err, tt.wantID, tt.wantErr)
			}
			if tt.wantErr != nil && !errors.Is(err, errdefs.ErrUnauthenticated) {
				t.Errorf("err %v does not match ErrUnauthenticated", err)
			}
			if f.calls != tt.wantCalls {
				t.Errorf("%d lookups, want %d", f.calls, tt.wantCalls)
			}
		})
	}

	t.Run("database down is not a bad key", func(t *testing.T) {
		f.err = errdefs.Errorf(errdefs.ErrUnavailable, "db")
		defer func() { f.err = nil }()
		_, err := a.Authenticate(ctx, good.Plaintext)
		if errors.Is(err, auth.ErrInvalidKey) || !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("err = %v", err)
		}
	})
}

// TestAuthenticatorWithStore runs the whole path on PostgreSQL: create,
// authenticate, revoke, reject; and checks that the plaintext is nowhere
// in the table.
func TestAuthenticatorWithStore(t *testing.T) {
	ctx := context.Background()
	d := pgtest.New(t)
	s := store.New(d.Pool, nil)
	a := auth.NewAuthenticator(s)

	k, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.CreateAPIKey(ctx, store.NewAPIKey{KeyHash: k.Hash, KeyPrefix: k.DisplayPrefix, OwnerID: "alice", Name: "ci"})
	if err != nil {
		t.Fatal(err)
	}
	var leaks int
	if err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM api_keys k WHERE strpos(k::text, $1) > 0`,
		k.Plaintext[len(k.DisplayPrefix):]).Scan(&leaks); err != nil {
		t.Fatal(err)
	}
	if leaks != 0 {
		t.Fatal("the key's secret part is stored in api_keys")
	}

	got, err := a.Authenticate(ctx, k.Plaintext)
	if err != nil || got.ID != rec.ID || got.OwnerID != "alice" || got.Scope().Admin {
		t.Fatalf("authenticate: %+v, %v", got, err)
	}
	other, _ := auth.GenerateKey()
	if _, err := a.Authenticate(ctx, other.Plaintext); !errors.Is(err, auth.ErrInvalidKey) {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := s.RevokeAPIKey(ctx, store.AdminScope, rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, k.Plaintext); !errors.Is(err, auth.ErrInvalidKey) {
		t.Errorf("revoked key: %v", err)
	}
}
