// Package auth owns API key credentials and per-key rate limits for the
// control plane: generating keys ("wrn_" + 32 random [a-zA-Z0-9]),
// hashing them (only the SHA-256 hex is ever stored), checking a
// presented key in constant time against the stored hash, and a
// concurrency-safe in-memory token-bucket limiter that says how long to
// wait (Retry-After). It depends on internal/store for the key record and
// must not import host-agent packages.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// Key format.
const (
	Prefix     = "wrn_"
	RandomLen  = 32
	KeyLen     = len(Prefix) + RandomLen
	alphabet   = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	displayLen = len(Prefix) + 4
)

// NewKey is a freshly generated key. Plaintext is shown to the user once
// and never stored; Hash and DisplayPrefix go to the database.
type NewKey struct {
	Plaintext     string
	Hash          string
	DisplayPrefix string
}

// GenerateKey returns a new random key. Each of the 32 characters is
// uniform over [A-Za-z0-9] (rejection sampling, no modulo bias): ~190
// bits of entropy.
func GenerateKey() (NewKey, error) {
	out := make([]byte, 0, KeyLen)
	out = append(out, Prefix...)
	buf := make([]byte, 64)
	for len(out) < KeyLen {
		if _, err := rand.Read(buf); err != nil {
			return NewKey{}, fmt.Errorf("generate api key: %w", err)
		}
		for _, b := range buf {
			// 248 = 4*62: bytes at or above it would bias the low letters.
			if b >= 248 {
				continue
			}
			out = append(out, alphabet[int(b)%len(alphabet)])
			if len(out) == KeyLen {
				break
			}
		}
	}
	k := string(out)
	return NewKey{Plaintext: k, Hash: HashKey(k), DisplayPrefix: k[:displayLen]}, nil
}

// HashKey returns the SHA-256 of key as lowercase hex, the only form in
// which keys are stored. Keys have ~190 bits of entropy, so a fast hash
// is enough (no password stretching needed).
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// ValidFormat reports whether s looks like a key: the prefix and 32
// characters from the alphabet.
func ValidFormat(s string) bool {
	if len(s) != KeyLen || s[:len(Prefix)] != Prefix {
		return false
	}
	for i := len(Prefix); i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// Equal compares two hashes (or keys) in time independent of where they
// differ.
func Equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// Matches reports whether presented is the key whose hash is storedHash,
// in constant time.
func Matches(presented, storedHash string) bool {
	return Equal(HashKey(presented), storedHash)
}

// KeyLookup finds a key record by hash (*store.Store implements it).
type KeyLookup interface {
	APIKeyByHash(ctx context.Context, hash string) (store.APIKey, error)
}

// ErrInvalidKey is what every rejected key gets: unknown, malformed and
// revoked keys are not told apart to the caller. It matches
// errdefs.ErrUnauthenticated.
var ErrInvalidKey = fmt.Errorf("invalid or revoked API key: %w", errdefs.ErrUnauthenticated)

// Authenticator checks presented keys.
type Authenticator struct {
	lookup KeyLookup
}

// NewAuthenticator returns an Authenticator over lookup.
func NewAuthenticator(lookup KeyLookup) *Authenticator {
	return &Authenticator{lookup: lookup}
}

// Authenticate returns the record of the presented key, or ErrInvalidKey
// when it is malformed, unknown or revoked. Database failures come back
// as they are (errdefs.ErrUnavailable and the like), not as
// ErrInvalidKey, so a database outage is not reported as a bad key.
// Callers record use with store.TouchAPIKey.
func (a *Authenticator) Authenticate(ctx context.Context, presented string) (store.APIKey, error) {
	if !ValidFormat(presented) {
		return store.APIKey{}, ErrInvalidKey
	}
	hash := HashKey(presented)
	k, err := a.lookup.APIKeyByHash(ctx, hash)
	if errors.Is(err, errdefs.ErrNotFound) {
		return store.APIKey{}, ErrInvalidKey
	}
	if err != nil {
		return store.APIKey{}, fmt.Errorf("authenticate: %w", err)
	}
	// The lookup matched on the hash already; compare again in constant
	// time so a lookup that matches loosely (a cache, a prefix index)
	// can never let a wrong key in.
	if !Equal(k.KeyHash, hash) || k.Revoked() {
		return store.APIKey{}, ErrInvalidKey
	}
	return k, nil
}
