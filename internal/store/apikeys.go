package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// Pool is an amount of the three pooled resources.
type Pool struct {
	VCPUs     int `json:"vcpus"`
	MemoryMB  int `json:"memory_mb"`
	StorageMB int `json:"storage_mb"`
}

// APIKey is one API key. The key itself is never stored: KeyHash is its
// SHA-256 hex and KeyPrefix its first characters, for display.
type APIKey struct {
	ID        string `json:"id"`
	KeyHash   string `json:"-"`
	KeyPrefix string `json:"key_prefix"`
	Name      string `json:"name"`
	OwnerID   string `json:"owner_id"`
	IsAdmin   bool   `json:"is_admin"`
	Plan      string `json:"plan"`
	// Pool is the quota; Used the sum of live reservations.
	Pool Pool `json:"pool"`
	Used Pool `json:"used"`
	// RateLimitPerSec and RateLimitBurst are 0 for the server default.
	RateLimitPerSec float64    `json:"rate_limit_per_sec,omitempty"`
	RateLimitBurst  int        `json:"rate_limit_burst,omitempty"`
	CreatedAt       time.Time  `json:"created_at"`
	LastUsedAt      *time.Time `json:"last_used_at,omitempty"`
	RevokedAt       *time.Time `json:"revoked_at,omitempty"`
}

// Revoked reports whether the key was revoked.
func (k APIKey) Revoked() bool { return k.RevokedAt != nil }

// Scope is what the key may see.
func (k APIKey) Scope() Scope { return Scope{OwnerID: k.OwnerID, Admin: k.IsAdmin} }

// NewAPIKey is what CreateAPIKey stores.
type NewAPIKey struct {
	ID        string // "" = generated ("key-" + 8 hex)
	KeyHash   string // SHA-256 hex of the key (auth.HashKey)
	KeyPrefix string
	Name      string
	OwnerID   string
	IsAdmin   bool
	Plan      string // "" = hobby
	Pool      *Pool  // nil = the schema's defaults
	// 0 = server default.
	RateLimitPerSec float64
	RateLimitBurst  int
}

var hashRe = regexp.MustCompile(`^[0-9a-f]{64}$`)

const apiKeyCols = `id, key_hash, key_prefix, name, owner_id, is_admin, plan,
	pool_vcpus, pool_memory_mb, pool_storage_mb, used_vcpus, used_memory_mb, used_storage_mb,
	coalesce(rate_limit_per_sec, 0), coalesce(rate_limit_burst, 0), created_at, last_used_at, revoked_at`

func scanAPIKey(row pgx.Row) (APIKey, error) {
	var k APIKey
	err := row.Scan(&k.ID, &k.KeyHash, &k.KeyPrefix, &k.Name, &k.OwnerID, &k.IsAdmin, &k.Plan,
		&k.Pool.VCPUs, &k.Pool.MemoryMB, &k.Pool.StorageMB, &k.Used.VCPUs, &k.Used.MemoryMB, &k.Used.StorageMB,
		&k.RateLimitPerSec, &k.RateLimitBurst, &k.CreatedAt, &k.LastUsedAt, &k.RevokedAt)
	return k, err
}

// NewKeyID returns a random API key ID, e.g. key-1a2b3c4d.
func NewKeyID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "key-" + hex.EncodeToString(b)
}

// CreateAPIKey stores a new key. A duplicate ID or hash is ErrAlreadyExists.
func (s *Store) CreateAPIKey(ctx context.Context, n NewAPIKey) (APIKey, error) {
	if !hashRe.MatchString(n.KeyHash) {
		return APIKey{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "create api key: key hash must be 64 lowercase hex")
	}
	if n.OwnerID == "" {
		return APIKey{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "create api key: owner_id is required")
	}
	if n.RateLimitPerSec < 0 || n.RateLimitBurst < 0 {
		return APIKey{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "create api key: negative rate limit")
	}
	if n.ID == "" {
		n.ID = NewKeyID()
	}
	if n.Plan == "" {
		n.Plan = "hobby"
	}
	var pv, pm, ps *int
	if n.Pool != nil {
		pv, pm, ps = &n.Pool.VCPUs, &n.Pool.MemoryMB, &n.Pool.StorageMB
	}
	row := s.pool.QueryRow(ctx, `
		INSERT INTO api_keys (id, key_hash, key_prefix, name, owner_id, is_admin, plan,
		                      pool_vcpus, pool_memory_mb, pool_storage_mb, rate_limit_per_sec, rate_limit_burst)
		VALUES ($1, $2, $3, $4, $5, $6, $7,
		        coalesce($8, 2), coalesce($9, 8192), coalesce($10, 20480),
		        nullif($11::float8, 0), nullif($12::int, 0))
		RETURNING `+apiKeyCols,
		n.ID, n.KeyHash, n.KeyPrefix, n.Name, n.OwnerID, n.IsAdmin, n.Plan, pv, pm, ps,
		n.RateLimitPerSec, n.RateLimitBurst)
	k, err := scanAPIKey(row)
	if err != nil {
		return APIKey{}, dbErr("create api key", err)
	}
	return k, nil
}

// APIKeyByHash returns the key with that hash, revoked or not (the caller
// decides; auth.Authenticator rejects revoked keys).
func (s *Store) APIKeyByHash(ctx context.Context, hash string) (APIKey, error) {
	k, err := scanAPIKey(s.pool.QueryRow(ctx, `SELECT `+apiKeyCols+` FROM api_keys WHERE key_hash = $1`, hash))
	if err != nil {
		return APIKey{}, dbErr("api key by hash", err)
	}
	return k, nil
}

// GetAPIKey returns one key by ID within scope (another owner's key is
// ErrNotFound).
func (s *Store) GetAPIKey(ctx context.Context, sc Scope, id string) (APIKey, error) {
	k, err := scanAPIKey(s.pool.QueryRow(ctx,
		`SELECT `+apiKeyCols+` FROM api_keys WHERE id = $1 AND ($2 OR owner_id = $3)`, id, sc.Admin, sc.OwnerID))
	if err != nil {
		return APIKey{}, dbErr("get api key "+id, err)
	}
	return k, nil
}

// ListAPIKeys returns the keys scope may see, oldest first.
func (s *Store) ListAPIKeys(ctx context.Context, sc Scope) ([]APIKey, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+apiKeyCols+` FROM api_keys WHERE $1 OR owner_id = $2 ORDER BY created_at, id`, sc.Admin, sc.OwnerID)
	if err != nil {
		return nil, dbErr("list api keys", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (APIKey, error) { return scanAPIKey(r) })
	if err != nil {
		return nil, dbErr("list api keys", err)
	}
	return keys, nil
}

// RevokeAPIKey revokes a key. Revoking a revoked key keeps the first
// revocation time and is not an error.
func (s *Store) RevokeAPIKey(ctx context.Context, sc Scope, id string) (APIKey, error) {
	k, err := scanAPIKey(s.pool.QueryRow(ctx, `
		UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
		 WHERE id = $1 AND ($2 OR owner_id = $3)
		RETURNING `+apiKeyCols, id, sc.Admin, sc.OwnerID))
	if err != nil {
		return APIKey{}, dbErr("revoke api key "+id, err)
	}
	return k, nil
}

// TouchAPIKey records that the key was just used. It writes at most once
// a minute per key so that it can run on every request.
func (s *Store) TouchAPIKey(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE api_keys SET last_used_at = now()
		 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`, id)
	return dbErr("touch api key "+id, err)
}

// SetPoolLimits changes a key's quota. Lowering it below what is in use
// is allowed: running sandboxes keep running and new creates fail until
// usage drops.
func (s *Store) SetPoolLimits(ctx context.Context, id string, p Pool) (APIKey, error) {
	if p.VCPUs < 0 || p.MemoryMB < 0 || p.StorageMB < 0 {
		return APIKey{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "set pool limits: negative amount")
	}
	k, err := scanAPIKey(s.pool.QueryRow(ctx, `
		UPDATE api_keys SET pool_vcpus = $2, pool_memory_mb = $3, pool_storage_mb = $4
		 WHERE id = $1 RETURNING `+apiKeyCols, id, p.VCPUs, p.MemoryMB, p.StorageMB))
	if err != nil {
		return APIKey{}, dbErr(fmt.Sprintf("set pool limits of %s", id), err)
	}
	return k, nil
}
