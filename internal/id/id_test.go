package id

import (
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

func TestNewIDsAreValidAndDistinct(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		s := NewSandboxID()
		if err := ValidateSandboxID(s); err != nil {
			t.Fatal(err)
		}
		if seen[s] {
			t.Fatalf("duplicate %s", s)
		}
		seen[s] = true
		if err := ValidateSnapshotID(NewSnapshotID()); err != nil {
			t.Fatal(err)
		}
		if err := ValidateHostID(NewHostID()); err != nil {
			t.Fatal(err)
		}
	}
	if len(NewToken(16)) != 32 {
		t.Fatal("token length")
	}
}

func TestValidateSandboxID(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"sb-a1b2c3d4", true},
		{"sb-00000000", true},
		{"sb-A1B2C3D4", false},
		{"sb-a1b2c3d", false},
		{"sb-a1b2c3d45", false},
		{"xb-a1b2c3d4", false},
		{"", false},
		{"sb-a1b2c3d4/../x", false},
		{"sb-a1b2c3g4", false},
	}
	for _, tt := range tests {
		err := ValidateSandboxID(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateSandboxID(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && !errdefs.IsInvalidArgument(err) {
			t.Errorf("error %v is not ErrInvalidArgument", err)
		}
	}
}

func TestHostIDs(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"host-a1b2c3d4", true},
		{"worker-1.example.com", true},
		{"-bad", false},
		{"a..b", false},
		{"UPPER", false},
		{"", false},
	}
	for _, tt := range tests {
		if err := ValidateHostID(tt.in); (err == nil) != tt.ok {
			t.Errorf("ValidateHostID(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
	if got := HostIDFromHostname("Worker-1"); got != "worker-1" {
		t.Errorf("HostIDFromHostname = %q", got)
	}
	if got := HostIDFromHostname("bad name!"); ValidateHostID(got) != nil || got[:5] != "host-" {
		t.Errorf("HostIDFromHostname fallback = %q", got)
	}
}

func TestShort(t *testing.T) {
	if Short("sb-a1b2c3d4") != "a1b2c3d4" || Short("abc") != "abc" {
		t.Fatal("Short")
	}
}
