// Package id makes and checks Wrenn's identifiers: sandbox IDs ("sb-" + 8
// hex), host IDs ("host-" + 8 hex, or a host name), snapshot IDs ("snap-" +
// 12 hex) and secret tokens. It is shared by every tier and imports
// nothing from them.
package id

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// Prefixes.
const (
	SandboxPrefix  = "sb-"
	HostPrefix     = "host-"
	SnapshotPrefix = "snap-"
)

var (
	sandboxRe  = regexp.MustCompile(`^sb-[0-9a-f]{8}$`)
	snapshotRe = regexp.MustCompile(`^snap-[0-9a-f]{12}$`)
	// Host IDs may be a host name: RFC 1123 labels, at most 63 chars total.
	hostRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)
)

// randHex returns n random bytes as hex.
func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// NewSandboxID returns a new random sandbox ID, e.g. sb-a1b2c3d4.
func NewSandboxID() string { return SandboxPrefix + randHex(4) }

// NewHostID returns a new random host ID, e.g. host-a1b2c3d4.
func NewHostID() string { return HostPrefix + randHex(4) }

// NewSnapshotID returns a new random snapshot ID, e.g. snap-a1b2c3d4e5f6.
func NewSnapshotID() string { return SnapshotPrefix + randHex(6) }

// NewToken returns a random secret of n bytes, hex-encoded (2n chars).
func NewToken(n int) string { return randHex(n) }

// ValidateSandboxID fails with errdefs.ErrInvalidArgument unless s is a
// well-formed sandbox ID.
func ValidateSandboxID(s string) error {
	if !sandboxRe.MatchString(s) {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "sandbox id %q: want sb- and 8 lowercase hex digits", s)
	}
	return nil
}

// ValidateSnapshotID fails with errdefs.ErrInvalidArgument unless s is a
// well-formed snapshot ID.
func ValidateSnapshotID(s string) error {
	if !snapshotRe.MatchString(s) {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "snapshot id %q: want snap- and 12 lowercase hex digits", s)
	}
	return nil
}

// ValidateHostID fails with errdefs.ErrInvalidArgument unless s is a
// host-xxxxxxxx ID or a lowercase host name.
func ValidateHostID(s string) error {
	if !hostRe.MatchString(s) || strings.Contains(s, "..") {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "host id %q", s)
	}
	return nil
}

// HostIDFromHostname derives a host ID from a machine's host name
// (lowercased, first label kept whole); a random one when the name does
// not fit.
func HostIDFromHostname(name string) string {
	h := strings.ToLower(strings.TrimSpace(name))
	if ValidateHostID(h) == nil {
		return h
	}
	return NewHostID()
}

// Short returns the part of a sandbox ID after its prefix (8 hex), used
// for kernel-object names such as TAP devices; other strings pass through.
func Short(sandboxID string) string {
	s := strings.TrimPrefix(sandboxID, SandboxPrefix)
	if len(s) > 8 {
		s = s[:8]
	}
	return s
}

// MustSandboxID panics on a malformed ID; for constants in tests.
func MustSandboxID(s string) string {
	if err := ValidateSandboxID(s); err != nil {
		panic(fmt.Sprint(err))
	}
	return s
}
