package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// KeyPoolUsage is one key's pool quota and what its live reservations use.
type KeyPoolUsage struct {
	APIKeyID string
	Revoked  bool
	Limit    Pool // api_keys.pool_*
	Used     Pool // api_keys.used_*
}

// PoolUsage returns every key's quota and use, by key ID (for metrics).
// Revoked keys are included: their sandboxes may still hold reservations.
func (s *Store) PoolUsage(ctx context.Context) ([]KeyPoolUsage, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, revoked_at IS NOT NULL, pool_vcpus, pool_memory_mb, pool_storage_mb,
		       used_vcpus, used_memory_mb, used_storage_mb
		  FROM api_keys ORDER BY id`)
	if err != nil {
		return nil, dbErr("pool usage", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (KeyPoolUsage, error) {
		var u KeyPoolUsage
		err := r.Scan(&u.APIKeyID, &u.Revoked, &u.Limit.VCPUs, &u.Limit.MemoryMB, &u.Limit.StorageMB,
			&u.Used.VCPUs, &u.Used.MemoryMB, &u.Used.StorageMB)
		return u, err
	})
	if err != nil {
		return nil, dbErr("pool usage", err)
	}
	return out, nil
}
