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

// Sandbox is a sandbox row: the shared model plus what only the control
// plane keeps.
type Sandbox struct {
	models.Sandbox
	APIKeyID          string    `json:"-"`
	VsockCID          int       `json:"-"` // 0 = none
	HibernateLocation string    `json:"-"` // cold snapshot in object storage
	EnvdTokenHash     string    `json:"-"` // SHA-256 hex of the envd access token
	UpdatedAt         time.Time `json:"updated_at"`
	StoppedAt         time.Time `json:"stopped_at,omitzero"`
}

// NewSandbox is what CreateSandbox inserts.
type NewSandbox struct {
	ID            string // id.NewSandboxID()
	OwnerID       string
	APIKeyID      string // whose pool pays
	HostID        string // "" = not scheduled yet
	Template      string
	Resources     models.Resources // DiskMB is charged to the storage pool
	TimeoutSec    int
	Metadata      map[string]string
	Network       *models.NetworkPolicy // nil = allow all
	EnvdTokenHash string
	// Outbox events are written in the same transaction.
	Outbox []OutboxEvent
}

const sandboxCols = `id, owner_id, api_key_id, coalesce(host_id, ''), template, status,
	vcpus, memory_mb, disk_mb, timeout_sec, coalesce(guest_ip, ''), coalesce(vsock_cid, 0),
	coalesce(snapshot_path, ''), coalesce(hibernate_location, ''), coalesce(envd_token_hash, ''),
	coalesce(error_reason, ''), metadata, network, created_at, updated_at,
	started_at, paused_at, stopped_at, last_active_at`

// scanSandbox scans sandboxCols, then any extra columns into extra.
func scanSandbox(row pgx.Row, extra ...any) (Sandbox, error) {
	var sb Sandbox
	var started, paused, stopped, active *time.Time
	dest := []any{&sb.ID, &sb.OwnerID, &sb.APIKeyID, &sb.HostID, &sb.Template, &sb.Status,
		&sb.VCPUs, &sb.MemoryMB, &sb.DiskMB, &sb.TimeoutSec, &sb.GuestIP, &sb.VsockCID,
		&sb.SnapshotPath, &sb.HibernateLocation, &sb.EnvdTokenHash,
		&sb.Error, &sb.Metadata, &sb.Network, &sb.CreatedAt, &sb.UpdatedAt,
		&started, &paused, &stopped, &active}
	err := row.Scan(append(dest, extra...)...)
	if err != nil {
		return Sandbox{}, err
	}
	sb.StartedAt, sb.PausedAt, sb.StoppedAt, sb.LastActiveAt = deref(started), deref(paused), deref(stopped), deref(active)
	if sb.Metadata == nil {
		sb.Metadata = map[string]string{}
	}
	return sb, nil
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// CreateSandbox reserves the sandbox's resources from its key's pool and
// inserts it as pending, in one transaction: either both happen or
// neither. A reservation that does not fit is a *PoolExhaustedError; a
// duplicate ID is errdefs.ErrAlreadyExists.
func (s *Store) CreateSandbox(ctx context.Context, n NewSandbox) (Sandbox, error) {
	if err := n.Resources.Validate(); err != nil {
		return Sandbox{}, fmt.Errorf("create sandbox: %w", err)
	}
	if n.ID == "" || n.OwnerID == "" || n.APIKeyID == "" || n.Template == "" {
		return Sandbox{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "create sandbox: id, owner, api key and template are required")
	}
	if n.TimeoutSec < 0 {
		return Sandbox{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "create sandbox: negative timeout")
	}
	if n.Metadata == nil {
		n.Metadata = map[string]string{}
	}
	if n.Network != nil {
		if err := n.Network.Validate(); err != nil {
			return Sandbox{}, fmt.Errorf("create sandbox: %w", err)
		}
	}
	amount := Pool{VCPUs: n.Resources.VCPUs, MemoryMB: n.Resources.MemoryMB, StorageMB: n.Resources.DiskMB}
	var sb Sandbox
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		if err := reserve(ctx, tx, n.APIKeyID, amount); err != nil {
			return err
		}
		var err error
		sb, err = scanSandbox(tx.QueryRow(ctx, `
			INSERT INTO sandboxes (id, owner_id, api_key_id, host_id, template, status,
			                       vcpus, memory_mb, disk_mb, timeout_sec, metadata, network, envd_token_hash)
			VALUES ($1, $2, $3, nullif($4, ''), $5, 'pending', $6, $7, $8, $9, $10, $11, nullif($12, ''))
			RETURNING `+sandboxCols,
			n.ID, n.OwnerID, n.APIKeyID, n.HostID, n.Template,
			n.Resources.VCPUs, n.Resources.MemoryMB, n.Resources.DiskMB, n.TimeoutSec, n.Metadata, n.Network, n.EnvdTokenHash))
		if err != nil {
			return dbErr("insert sandbox", err)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO pool_reservations (sandbox_id, api_key_id, vcpus, memory_mb, storage_mb)
			VALUES ($1, $2, $3, $4, $5)`, n.ID, n.APIKeyID, amount.VCPUs, amount.MemoryMB, amount.StorageMB); err != nil {
			return dbErr("insert reservation", err)
		}
		return EnqueueOutbox(ctx, tx, n.Outbox...)
	})
	if err != nil {
		return Sandbox{}, fmt.Errorf("create sandbox %s: %w", n.ID, err)
	}
	return sb, nil
}

// GetSandbox returns the sandbox if scope may see it; another owner's
// sandbox is errdefs.ErrNotFound, exactly like a missing one.
func (s *Store) GetSandbox(ctx context.Context, sc Scope, id string) (Sandbox, error) {
	sb, err := scanSandbox(s.pool.QueryRow(ctx,
		`SELECT `+sandboxCols+` FROM sandboxes WHERE id = $1 AND ($2 OR owner_id = $3)`, id, sc.Admin, sc.OwnerID))
	if err != nil {
		return Sandbox{}, dbErr("get sandbox "+id, err)
	}
	return sb, nil
}

// SandboxPatch sets columns along with a transition; nil fields are kept.
type SandboxPatch struct {
	HostID            *string
	GuestIP           *string
	VsockCID          *int
	SnapshotPath      *string
	HibernateLocation *string
	ErrorReason       *string
	EnvdTokenHash     *string
}

// Transition is a compare-and-set of a sandbox's status.
type Transition struct {
	ID string
	// OwnerID, when set, limits the change to that owner's sandbox.
	OwnerID string
	// From lists the statuses the row may be in; empty means every status
	// from which To is a legal transition.
	From []models.SandboxStatus
	To   models.SandboxStatus
	Set  SandboxPatch
	// Outbox events are written in the same transaction.
	Outbox []OutboxEvent
}

// StatusConflictError is a transition refused because the sandbox's
// current status is not one of the expected ones (or the move is not in
// the state machine). It matches errdefs.ErrConflict.
type StatusConflictError struct {
	ID      string
	Current models.SandboxStatus // "" when the move itself is illegal
	To      models.SandboxStatus
}

func (e *StatusConflictError) Error() string {
	if e.Current == "" {
		return fmt.Sprintf("sandbox %s cannot become %s", e.ID, e.To)
	}
	return fmt.Sprintf("sandbox %s is %s, cannot become %s", e.ID, e.Current, e.To)
}

// Unwrap makes errors.Is(err, errdefs.ErrConflict) true.
func (e *StatusConflictError) Unwrap() error { return errdefs.ErrConflict }

// legalFrom returns the statuses from which to is a legal transition.
func legalFrom(to models.SandboxStatus) []models.SandboxStatus {
	var out []models.SandboxStatus
	for _, st := range models.AllStatuses {
		if models.CanTransition(st, to) {
			out = append(out, st)
		}
	}
	return out
}

// Transition moves a sandbox to tr.To if its status is one of tr.From,
// atomically (UPDATE ... WHERE status = ANY(from)), and ends the operation
// lease (BeginOp) if one was held. Moves that are not
// in the state machine, and rows in another status, fail with a
// *StatusConflictError; a missing sandbox (or another owner's) is
// errdefs.ErrNotFound. Entering stopped or error releases the pool
// reservation in the same transaction (exactly once). Timestamps follow
// the status: started_at (first run), last_active_at, paused_at,
// stopped_at.
func (s *Store) Transition(ctx context.Context, tr Transition) (Sandbox, error) {
	if !tr.To.Valid() {
		return Sandbox{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "transition %s: unknown status %q", tr.ID, tr.To)
	}
	from := tr.From
	if len(from) == 0 {
		from = legalFrom(tr.To)
	}
	for _, f := range from {
		if err := models.Transition(f, tr.To); err != nil {
			if errdefs.IsConflict(err) {
				return Sandbox{}, fmt.Errorf("transition: %w", &StatusConflictError{ID: tr.ID, To: tr.To})
			}
			return Sandbox{}, fmt.Errorf("transition %s: %w", tr.ID, err)
		}
	}
	p := tr.Set
	var sb Sandbox
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		// old is the row before the change (locked by the subquery), for
		// the usage event of a run that ends here.
		var oldStatus models.SandboxStatus
		var runSince *time.Time
		var at time.Time
		sb, err = scanSandbox(tx.QueryRow(ctx, `
			UPDATE sandboxes SET
			       status = $2,
			       updated_at = now(),
			       host_id = coalesce($5, host_id),
			       guest_ip = coalesce($6, guest_ip),
			       vsock_cid = coalesce($7, vsock_cid),
			       snapshot_path = coalesce($8, snapshot_path),
			       hibernate_location = coalesce($9, hibernate_location),
			       error_reason = coalesce($10, error_reason),
			       envd_token_hash = coalesce($11, envd_token_hash),
			       started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
			       last_active_at = CASE WHEN $2 = 'running' THEN now() ELSE last_active_at END,
			       paused_at = CASE $2 WHEN 'paused' THEN now()
			                           WHEN 'hibernated' THEN coalesce(paused_at, now())
			                           WHEN 'running' THEN NULL
			                           ELSE paused_at END,
			       stopped_at = CASE WHEN $2 = 'stopped' THEN now() ELSE stopped_at END,
			       running_since = CASE WHEN $2 = 'running' THEN coalesce(old.old_since, now()) ELSE NULL END,
			       op = NULL, op_until = NULL
			  FROM (SELECT id AS old_id, status AS old_status, running_since AS old_since
			          FROM sandboxes WHERE id = $1 FOR UPDATE) old
			 WHERE id = old.old_id AND status = ANY($3) AND ($4 = '' OR owner_id = $4)
			RETURNING `+sandboxCols+`, old.old_status, old.old_since, now()`,
			tr.ID, tr.To, statusStrings(from), tr.OwnerID,
			p.HostID, p.GuestIP, p.VsockCID, p.SnapshotPath, p.HibernateLocation, p.ErrorReason, p.EnvdTokenHash),
			&oldStatus, &runSince, &at)
		if errors.Is(err, pgx.ErrNoRows) {
			return s.whyNoTransition(ctx, tx, tr)
		}
		if err != nil {
			return dbErr("update status", err)
		}
		if tr.To == models.StatusStopped || tr.To == models.StatusError {
			if _, err := release(ctx, tx, tr.ID); err != nil {
				return err
			}
		}
		events := tr.Outbox
		if s.usage && oldStatus == models.StatusRunning && tr.To != models.StatusRunning && runSince != nil {
			ev, err := runtimeEvent(sb, *runSince, at)
			if err != nil {
				return err
			}
			events = append(events, ev)
		}
		return EnqueueOutbox(ctx, tx, events...)
	})
	if err != nil {
		return Sandbox{}, fmt.Errorf("transition %s to %s: %w", tr.ID, tr.To, err)
	}
	return sb, nil
}

func (s *Store) whyNoTransition(ctx context.Context, tx pgx.Tx, tr Transition) error {
	var cur models.SandboxStatus
	err := tx.QueryRow(ctx, `SELECT status FROM sandboxes WHERE id = $1 AND ($2 = '' OR owner_id = $2)`,
		tr.ID, tr.OwnerID).Scan(&cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return errdefs.Errorf(errdefs.ErrNotFound, "sandbox %s", tr.ID)
	}
	if err != nil {
		return dbErr("read status", err)
	}
	return &StatusConflictError{ID: tr.ID, Current: cur, To: tr.To}
}

func statusStrings(in []models.SandboxStatus) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = string(s)
	}
	return out
}

// MarkStopped moves a sandbox from any state to stopped (destroy) and
// releases its reservation. A sandbox that is already stopped returns a
// *StatusConflictError with Current == stopped, which a destroy handler
// may treat as success.
func (s *Store) MarkStopped(ctx context.Context, sc Scope, id string, outbox ...OutboxEvent) (Sandbox, error) {
	tr := Transition{ID: id, To: models.StatusStopped, Outbox: outbox}
	if !sc.Admin {
		tr.OwnerID = sc.OwnerID
		if tr.OwnerID == "" {
			return Sandbox{}, errdefs.Errorf(errdefs.ErrNotFound, "sandbox %s", id)
		}
	}
	return s.Transition(ctx, tr)
}

// MarkError moves a sandbox from any non-terminal state to error with
// reason, releasing its reservation.
func (s *Store) MarkError(ctx context.Context, id, reason string, outbox ...OutboxEvent) (Sandbox, error) {
	return s.Transition(ctx, Transition{ID: id, To: models.StatusError, Set: SandboxPatch{ErrorReason: &reason}, Outbox: outbox})
}

// SandboxesOnHost returns every sandbox on host that is not stopped or in
// error (for reconciliation with the agent's inventory), oldest first.
func (s *Store) SandboxesOnHost(ctx context.Context, hostID string) ([]Sandbox, error) {
	return s.querySandboxes(ctx, "sandboxes on host "+hostID, `
		SELECT `+sandboxCols+` FROM sandboxes
		 WHERE host_id = $1 AND status NOT IN ('stopped', 'error')
		 ORDER BY created_at, id`, hostID)
}

// querySandboxes runs a query selecting sandboxCols and collects the rows;
// op names it in errors.
func (s *Store) querySandboxes(ctx context.Context, op, sql string, args ...any) ([]Sandbox, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, dbErr(op, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Sandbox, error) { return scanSandbox(r) })
	if err != nil {
		return nil, dbErr(op, err)
	}
	return out, nil
}

// CountSandboxes returns how many sandboxes are in each status (every
// status is present, zero included).
func (s *Store) CountSandboxes(ctx context.Context) (map[models.SandboxStatus]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT status, count(*) FROM sandboxes GROUP BY status`)
	if err != nil {
		return nil, dbErr("count sandboxes", err)
	}
	out := make(map[models.SandboxStatus]int, len(models.AllStatuses))
	for _, st := range models.AllStatuses {
		out[st] = 0
	}
	var st models.SandboxStatus
	var n int
	_, err = pgx.ForEachRow(rows, []any{&st, &n}, func() error { out[st] = n; return nil })
	if err != nil {
		return nil, dbErr("count sandboxes", err)
	}
	return out, nil
}

// PurgeStopped deletes stopped sandboxes that stopped more than olderThan
// ago and returns how many. Their audit events stay.
func (s *Store) PurgeStopped(ctx context.Context, olderThan time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, `
		DELETE FROM sandboxes
		 WHERE status = 'stopped' AND stopped_at < now() - $1::bigint * interval '1 microsecond'
		   AND NOT EXISTS (SELECT 1 FROM pool_reservations r WHERE r.sandbox_id = sandboxes.id)`,
		olderThan.Microseconds())
	if err != nil {
		return 0, dbErr("purge stopped sandboxes", err)
	}
	return tag.RowsAffected(), nil
}

// SandboxUpdate changes what a user may change on a live sandbox; nil
// fields are kept. Metadata replaces the whole map.
type SandboxUpdate struct {
	TimeoutSec *int
	Metadata   map[string]string
}

// UpdateSandbox applies u to sandbox id if scope may see it. A new
// timeout also restarts a running sandbox's idle period (last_active_at
// becomes now), so extending the timeout of a sandbox close to it works as
// users expect. A stopped sandbox is errdefs.ErrConflict; one scope may
// not see is errdefs.ErrNotFound.
func (s *Store) UpdateSandbox(ctx context.Context, sc Scope, id string, u SandboxUpdate) (Sandbox, error) {
	if u.TimeoutSec != nil && *u.TimeoutSec < 0 {
		return Sandbox{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "update sandbox %s: negative timeout", id)
	}
	sb, err := scanSandbox(s.pool.QueryRow(ctx, `
		UPDATE sandboxes SET
		       timeout_sec = coalesce($4, timeout_sec),
		       metadata = coalesce($5, metadata),
		       last_active_at = CASE WHEN $4::int IS NOT NULL AND status = 'running' THEN now() ELSE last_active_at END,
		       updated_at = now()
		 WHERE id = $1 AND ($2 OR owner_id = $3) AND status <> 'stopped'
		RETURNING `+sandboxCols, id, sc.Admin, sc.OwnerID, u.TimeoutSec, u.Metadata))
	if errors.Is(err, pgx.ErrNoRows) {
		cur, gerr := s.GetSandbox(ctx, sc, id)
		if gerr != nil {
			return Sandbox{}, gerr
		}
		return Sandbox{}, errdefs.Errorf(errdefs.ErrConflict, "sandbox %s is %s: it cannot be changed", id, cur.Status)
	}
	if err != nil {
		return Sandbox{}, dbErr("update sandbox "+id, err)
	}
	return sb, nil
}
