// Package store is the control plane's PostgreSQL data layer (pgx v5):
// API keys and their pool quotas, sandboxes and their status
// compare-and-set, hosts and heartbeats, the batched audit writer and the
// usage outbox. Every error it returns wraps a sentinel from
// internal/errdefs. It is a control-plane package and must not import
// host-agent packages.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// Store is the typed gateway to the database. It is safe for concurrent
// use. The caller owns the pool (Close does not close it unless the
// Store was made by Open).
type Store struct {
	pool    *pgxpool.Pool
	log     *slog.Logger
	ownPool bool
	usage   bool // enqueue usage events (SetUsageEvents)
}

// New wraps an existing pool.
func New(pool *pgxpool.Pool, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{pool: pool, log: log}
}

// Open connects a new pool to dsn and checks it answers.
func Open(ctx context.Context, dsn string, log *slog.Logger) (*Store, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping database: %w: %w", errdefs.ErrUnavailable, err)
	}
	s := New(pool, log)
	s.ownPool = true
	return s, nil
}

// Pool returns the underlying pool (for migrations and health checks).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool if Open made it.
func (s *Store) Close() {
	if s.ownPool {
		s.pool.Close()
	}
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return dbErr("ping database", err)
	}
	return nil
}

// InTx runs fn in one transaction, committed when fn returns nil and
// rolled back otherwise. Use it with EnqueueOutbox to write usage events
// atomically with a state change of the caller's own.
func (s *Store) InTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// Scope is who is asking: an owner sees only its own rows; an admin sees
// every owner's.
type Scope struct {
	OwnerID string
	Admin   bool
}

// AdminScope sees everything (internal callers: lifecycle, reconciler).
var AdminScope = Scope{Admin: true}

// dbErr wraps a database error with op and the errdefs sentinel it means.
func dbErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if kind := classify(err); kind != nil {
		return fmt.Errorf("%s: %w: %w", op, kind, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// classify maps pgx/PostgreSQL errors to errdefs sentinels; nil when err
// already carries one (or is a context error the caller can see).
func classify(err error) error {
	if errdefs.Kind(err) != errdefs.ErrInternal {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return errdefs.ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505": // unique_violation
			return errdefs.ErrAlreadyExists
		case "23503", "23514", "23502", "22P02", "22003", "22023": // fk, check, not null, bad text, out of range, bad value
			return errdefs.ErrInvalidArgument
		case "40001", "40P01", "55P03": // serialization, deadlock, lock not available
			return errdefs.ErrConflict
		case "57014": // query_canceled (statement timeout)
			return errdefs.ErrDeadlineExceeded
		case "53300", "57P01", "57P02", "57P03": // too many connections, shutdown
			return errdefs.ErrUnavailable
		}
		return errdefs.ErrInternal
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) || pgconn.Timeout(err) {
		return errdefs.ErrUnavailable
	}
	return errdefs.ErrInternal
}
