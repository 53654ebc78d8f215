package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// OutboxEvent is one usage event for Lago. TransactionID is Lago's
// idempotency key: enqueueing the same ID twice stores it once.
type OutboxEvent struct {
	TransactionID string
	Payload       json.RawMessage // a JSON object
}

// OutboxMessage is an event claimed for delivery.
type OutboxMessage struct {
	ID            int64
	TransactionID string
	Payload       json.RawMessage
	Attempts      int // including this one
	CreatedAt     time.Time
}

// EnqueueOutbox writes events inside the caller's transaction, so they
// commit or vanish with the state change they bill.
func EnqueueOutbox(ctx context.Context, tx pgx.Tx, events ...OutboxEvent) error {
	for _, ev := range events {
		if ev.TransactionID == "" || !json.Valid(ev.Payload) {
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "enqueue outbox: transaction id and JSON payload required")
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO usage_outbox (transaction_id, payload) VALUES ($1, $2)
			ON CONFLICT (transaction_id) DO NOTHING`, ev.TransactionID, string(ev.Payload)); err != nil {
			return dbErr("enqueue outbox "+ev.TransactionID, err)
		}
	}
	return nil
}

// ClaimOutbox leases up to limit due events for delivery: each is hidden
// from other claimers for lease (so several control-plane replicas can
// send without double work) and its attempt count goes up. Deliver, then
// MarkOutboxSent or MarkOutboxFailed.
func (s *Store) ClaimOutbox(ctx context.Context, limit int, lease time.Duration) ([]OutboxMessage, error) {
	rows, err := s.pool.Query(ctx, `
		UPDATE usage_outbox o
		   SET attempts = attempts + 1,
		       next_attempt_at = now() + $2::bigint * interval '1 microsecond'
		  FROM (SELECT id FROM usage_outbox
		         WHERE sent_at IS NULL AND next_attempt_at <= now()
		         ORDER BY next_attempt_at, id
		         LIMIT $1 FOR UPDATE SKIP LOCKED) due
		 WHERE o.id = due.id
		RETURNING o.id, o.transaction_id, o.payload::text, o.attempts, o.created_at`,
		limit, lease.Microseconds())
	if err != nil {
		return nil, dbErr("claim outbox", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (OutboxMessage, error) {
		var m OutboxMessage
		var payload string
		err := r.Scan(&m.ID, &m.TransactionID, &payload, &m.Attempts, &m.CreatedAt)
		m.Payload = json.RawMessage(payload)
		return m, err
	})
	if err != nil {
		return nil, dbErr("claim outbox", err)
	}
	return out, nil
}

// MarkOutboxSent records a delivered event.
func (s *Store) MarkOutboxSent(ctx context.Context, id int64) error {
	_, err := s.pool.Exec(ctx, `UPDATE usage_outbox SET sent_at = now(), last_error = NULL WHERE id = $1`, id)
	return dbErr(fmt.Sprintf("mark outbox %d sent", id), err)
}

// MarkOutboxFailed records a failed delivery; the event is due again
// after retryAfter.
func (s *Store) MarkOutboxFailed(ctx context.Context, id int64, cause string, retryAfter time.Duration) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE usage_outbox SET last_error = $2, next_attempt_at = now() + $3::bigint * interval '1 microsecond'
		 WHERE id = $1 AND sent_at IS NULL`, id, cause, retryAfter.Microseconds())
	return dbErr(fmt.Sprintf("mark outbox %d failed", id), err)
}

// OutboxPending counts the events not delivered yet.
func (s *Store) OutboxPending(ctx context.Context) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM usage_outbox WHERE sent_at IS NULL`).Scan(&n)
	return n, dbErr("count outbox", err)
}

// PurgeSentOutbox deletes events delivered more than olderThan ago and
// returns how many.
func (s *Store) PurgeSentOutbox(ctx context.Context, olderThan time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM usage_outbox WHERE sent_at < now() - $1::bigint * interval '1 microsecond'`,
		olderThan.Microseconds())
	if err != nil {
		return 0, dbErr("purge outbox", err)
	}
	return tag.RowsAffected(), nil
}
