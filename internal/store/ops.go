package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
)

// DefaultOpTTL bounds an operation lease whose holder never ended it.
const DefaultOpTTL = 10 * time.Minute

// Op starts an operation on a sandbox that changes its status through the
// agent (pause, resume, hibernate...).
type Op struct {
	ID string
	// OwnerID, when set, limits the operation to that owner's sandbox.
	OwnerID string
	// From lists the statuses the sandbox must be in; To is where the
	// operation takes it (for messages).
	From []models.SandboxStatus
	To   models.SandboxStatus
	Name string        // what is being done, shown to whoever is refused
	TTL  time.Duration // 0 = DefaultOpTTL
	// IdleOnly also requires the sandbox to be idle past its timeout
	// (IdleSandboxes), PausedFor to have been paused at least that long:
	// the lifecycle manager's conditions, checked in the same statement.
	IdleOnly  bool
	PausedFor time.Duration
}

// where is op's extra condition in SQL (constant text; PausedFor is
// parameter $6, passed only when set).
func (op Op) where() string {
	w := ""
	if op.IdleOnly {
		w += " AND " + idleWhere
	}
	if op.PausedFor > 0 {
		w += " AND paused_at <= now() - make_interval(secs => $6)"
	}
	return w
}

// BeginOp takes the sandbox's operation lease (and touches updated_at, so
// the reconciler's grace period covers the operation) if its status is one of
// op.From and no other operation holds a live lease; the caller then asks
// the agent and ends the lease with Transition (success) or EndOp
// (failure). A sandbox in another status, or busy, is errdefs.ErrConflict
// with a message that says which (also when only IdleOnly or PausedFor
// failed); one that scope may not see is errdefs.ErrNotFound. It returns
// the sandbox as it was.
func (s *Store) BeginOp(ctx context.Context, op Op) (Sandbox, error) {
	ttl := op.TTL
	if ttl <= 0 {
		ttl = DefaultOpTTL
	}
	args := []any{op.ID, op.OwnerID, statusStrings(op.From), op.Name, ttl.Seconds()}
	if op.PausedFor > 0 {
		args = append(args, op.PausedFor.Seconds())
	}
	sb, err := scanSandbox(s.pool.QueryRow(ctx, `
		UPDATE sandboxes SET op = $4, op_until = now() + make_interval(secs => $5), updated_at = now()
		 WHERE id = $1 AND ($2 = '' OR owner_id = $2) AND status = ANY($3)
		   AND (op IS NULL OR op_until < now())`+op.where()+`
		RETURNING `+sandboxCols, args...))
	if err == nil {
		return sb, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Sandbox{}, dbErr("begin "+op.Name+" on "+op.ID, err)
	}
	var cur models.SandboxStatus
	var busy *string
	err = s.pool.QueryRow(ctx, `SELECT status, CASE WHEN op_until >= now() THEN op END FROM sandboxes
		WHERE id = $1 AND ($2 = '' OR owner_id = $2)`, op.ID, op.OwnerID).Scan(&cur, &busy)
	if errors.Is(err, pgx.ErrNoRows) {
		return Sandbox{}, errdefs.Errorf(errdefs.ErrNotFound, "sandbox %s", op.ID)
	}
	if err != nil {
		return Sandbox{}, dbErr("begin "+op.Name+" on "+op.ID, err)
	}
	if busy != nil {
		return Sandbox{}, errdefs.Errorf(errdefs.ErrConflict, "sandbox %s is busy: %s in progress", op.ID, *busy)
	}
	return Sandbox{}, fmt.Errorf("%s: %w", op.Name, &StatusConflictError{ID: op.ID, Current: cur, To: op.To})
}

// EndOp releases sandbox id's lease for operation name without a status
// change (the operation failed). A lease not held, or held by another
// operation, is left alone.
func (s *Store) EndOp(ctx context.Context, id, name string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE sandboxes SET op = NULL, op_until = NULL WHERE id = $1 AND op = $2`, id, name); err != nil {
		return dbErr("end operation on "+id, err)
	}
	return nil
}
