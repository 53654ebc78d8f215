package state

import (
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

func TestTokenLifecycle(t *testing.T) {
	s := New()
	if !s.CheckToken("") || !s.CheckToken("anything") {
		t.Fatal("no token set: every request must pass")
	}
	if _, err := s.Apply(Init{AccessToken: ptr("secret")}, ""); err != nil {
		t.Fatalf("first init: %v", err)
	}
	if s.CheckToken("") || s.CheckToken("secre") || s.CheckToken("secret2") {
		t.Fatal("wrong token accepted")
	}
	if !s.CheckToken("secret") {
		t.Fatal("right token refused")
	}
	// Changing the token needs the old one.
	if _, err := s.Apply(Init{AccessToken: ptr("other")}, "wrong"); err != ErrTokenMismatch {
		t.Fatalf("rotation without old token: err=%v", err)
	}
	if _, err := s.Apply(Init{AccessToken: ptr("other")}, "secret"); err != nil {
		t.Fatalf("rotation with old token: %v", err)
	}
	if !s.CheckToken("other") || s.CheckToken("secret") {
		t.Fatal("token not rotated")
	}
	// Re-sending the current token in the body is allowed (E2B SDK behaviour).
	if _, err := s.Apply(Init{AccessToken: ptr("other"), EnvVars: map[string]string{"A": "1"}}, ""); err != nil {
		t.Fatalf("re-init with same token: %v", err)
	}
}

func TestTimestampOrdering(t *testing.T) {
	s := New()
	now := time.Now()
	if ok, _ := s.Apply(Init{EnvVars: map[string]string{"V": "new"}, Timestamp: now}, ""); !ok {
		t.Fatal("first init not applied")
	}
	if ok, _ := s.Apply(Init{EnvVars: map[string]string{"V": "old"}, Timestamp: now.Add(-time.Second)}, ""); ok {
		t.Fatal("older init applied")
	}
	if got := s.EnvVars()["V"]; got != "new" {
		t.Fatalf("V=%q, want new", got)
	}
	if ok, _ := s.Apply(Init{DefaultUser: ptr("user"), DefaultWorkdir: ptr("/w"), Timestamp: now.Add(time.Second)}, ""); !ok {
		t.Fatal("newer init not applied")
	}
	if s.DefaultUser() != "user" || s.DefaultWorkdir() != "/w" {
		t.Fatalf("defaults = %q %q", s.DefaultUser(), s.DefaultWorkdir())
	}
	env := s.EnvVars()
	env["V"] = "mutated"
	if s.EnvVars()["V"] != "new" {
		t.Fatal("EnvVars returned shared map")
	}
}
