package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// Pooled resource names, as PoolExhaustedError.Resource reports them.
const (
	ResourceVCPUs     = "vcpus"
	ResourceMemoryMB  = "memory_mb"
	ResourceStorageMB = "storage_mb"
)

// PoolExhaustedError says which resource of a key's pool a reservation
// did not fit in. It matches errdefs.ErrPoolExhausted (and so
// errdefs.ErrResourceExhausted) with errors.Is.
type PoolExhaustedError struct {
	APIKeyID  string
	Resource  string // ResourceVCPUs, ResourceMemoryMB or ResourceStorageMB
	Requested int
	Used      int
	Limit     int
}

func (e *PoolExhaustedError) Error() string {
	return fmt.Sprintf("pool exhausted: %s: requested %d, %d of %d in use", e.Resource, e.Requested, e.Used, e.Limit)
}

// Unwrap makes errors.Is(err, errdefs.ErrPoolExhausted) true.
func (e *PoolExhaustedError) Unwrap() error { return errdefs.ErrPoolExhausted }

// reserve takes amount from the key's pool inside tx with one conditional
// UPDATE. The row lock it takes serialises concurrent reservations on the
// key, and the WHERE clause is re-checked after the lock is granted, so
// the pool can never be overcommitted.
func reserve(ctx context.Context, tx pgx.Tx, keyID string, amount Pool) error {
	tag, err := tx.Exec(ctx, `
		UPDATE api_keys
		   SET used_vcpus = used_vcpus + $2,
		       used_memory_mb = used_memory_mb + $3,
		       used_storage_mb = used_storage_mb + $4
		 WHERE id = $1 AND revoked_at IS NULL
		   AND used_vcpus + $2 <= pool_vcpus
		   AND used_memory_mb + $3 <= pool_memory_mb
		   AND used_storage_mb + $4 <= pool_storage_mb`,
		keyID, amount.VCPUs, amount.MemoryMB, amount.StorageMB)
	if err != nil {
		return dbErr("reserve pool", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	// Say why. The row is not locked by us, so the numbers are a snapshot;
	// they only name the resource, the decision above was atomic.
	var k APIKey
	err = tx.QueryRow(ctx, `
		SELECT pool_vcpus, pool_memory_mb, pool_storage_mb, used_vcpus, used_memory_mb, used_storage_mb, revoked_at
		  FROM api_keys WHERE id = $1`, keyID).
		Scan(&k.Pool.VCPUs, &k.Pool.MemoryMB, &k.Pool.StorageMB, &k.Used.VCPUs, &k.Used.MemoryMB, &k.Used.StorageMB, &k.RevokedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return errdefs.Errorf(errdefs.ErrNotFound, "reserve pool: api key %s", keyID)
	}
	if err != nil {
		return dbErr("reserve pool", err)
	}
	if k.Revoked() {
		return errdefs.Errorf(errdefs.ErrUnauthenticated, "reserve pool: api key %s is revoked", keyID)
	}
	e := &PoolExhaustedError{APIKeyID: keyID}
	switch {
	case k.Used.VCPUs+amount.VCPUs > k.Pool.VCPUs:
		e.Resource, e.Requested, e.Used, e.Limit = ResourceVCPUs, amount.VCPUs, k.Used.VCPUs, k.Pool.VCPUs
	case k.Used.MemoryMB+amount.MemoryMB > k.Pool.MemoryMB:
		e.Resource, e.Requested, e.Used, e.Limit = ResourceMemoryMB, amount.MemoryMB, k.Used.MemoryMB, k.Pool.MemoryMB
	default:
		e.Resource, e.Requested, e.Used, e.Limit = ResourceStorageMB, amount.StorageMB, k.Used.StorageMB, k.Pool.StorageMB
	}
	return e
}

// release gives a sandbox's reservation back inside tx. Deleting the
// reservation row is what makes it exactly-once: a second release (or a
// concurrent one, which waits for the row lock) finds no row and gives
// nothing back. It reports whether anything was released.
func release(ctx context.Context, tx pgx.Tx, sandboxID string) (bool, error) {
	var keyID string
	var p Pool
	err := tx.QueryRow(ctx, `
		DELETE FROM pool_reservations WHERE sandbox_id = $1
		RETURNING api_key_id, vcpus, memory_mb, storage_mb`, sandboxID).
		Scan(&keyID, &p.VCPUs, &p.MemoryMB, &p.StorageMB)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, dbErr("release pool", err)
	}
	if _, err := tx.Exec(ctx, `
		UPDATE api_keys
		   SET used_vcpus = used_vcpus - $2,
		       used_memory_mb = used_memory_mb - $3,
		       used_storage_mb = used_storage_mb - $4
		 WHERE id = $1`, keyID, p.VCPUs, p.MemoryMB, p.StorageMB); err != nil {
		return false, dbErr("release pool", err)
	}
	return true, nil
}

// Release gives the sandbox's pool reservation back to its key. It is
// idempotent: it reports true only for the call that released.
func (s *Store) Release(ctx context.Context, sandboxID string) (bool, error) {
	var released bool
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		released, err = release(ctx, tx, sandboxID)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("release %s: %w", sandboxID, err)
	}
	return released, nil
}

// PoolDrift is a key whose used_* counters disagree with its live
// reservations.
type PoolDrift struct {
	APIKeyID string
	Counted  Pool // api_keys.used_*
	Reserved Pool // SUM(pool_reservations)
}

// CheckPools returns every key whose counters disagree with the sum of its
// reservations; empty when the invariant holds.
func (s *Store) CheckPools(ctx context.Context) ([]PoolDrift, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT k.id, k.used_vcpus, k.used_memory_mb, k.used_storage_mb,
		       coalesce(r.vcpus, 0), coalesce(r.memory_mb, 0), coalesce(r.storage_mb, 0)
		  FROM api_keys k
		  LEFT JOIN (SELECT api_key_id, sum(vcpus)::int AS vcpus, sum(memory_mb)::int AS memory_mb,
		                    sum(storage_mb)::int AS storage_mb
		               FROM pool_reservations GROUP BY api_key_id) r ON r.api_key_id = k.id
		 WHERE (k.used_vcpus, k.used_memory_mb, k.used_storage_mb)
		       IS DISTINCT FROM (coalesce(r.vcpus, 0), coalesce(r.memory_mb, 0), coalesce(r.storage_mb, 0))
		 ORDER BY k.id`)
	if err != nil {
		return nil, dbErr("check pools", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PoolDrift, error) {
		var d PoolDrift
		err := r.Scan(&d.APIKeyID, &d.Counted.VCPUs, &d.Counted.MemoryMB, &d.Counted.StorageMB,
			&d.Reserved.VCPUs, &d.Reserved.MemoryMB, &d.Reserved.StorageMB)
		return d, err
	})
	if err != nil {
		return nil, dbErr("check pools", err)
	}
	return out, nil
}
