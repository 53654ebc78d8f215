package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// UsageEventCode is the Lago billable metric code of runtime events.
const UsageEventCode = "sandbox_runtime"

// SetUsageEvents turns usage events on: from then on, every transition
// that ends a sandbox's run (running to paused, hibernated, stopped or
// error) enqueues a runtime event in the same transaction (see
// runtimeEvent). Off by default: without a Lago to send them to they would
// only pile up. Call it before the store is used.
func (s *Store) SetUsageEvents(on bool) { s.usage = on }

// UsageEvent is the body of one Lago event (POST /api/v1/events, or one
// element of /api/v1/events/batch).
type UsageEvent struct {
	TransactionID          string          `json:"transaction_id"`
	ExternalSubscriptionID string          `json:"external_subscription_id"`
	Code                   string          `json:"code"`
	Timestamp              int64           `json:"timestamp"` // Unix seconds of the end of the run
	Properties             UsageProperties `json:"properties"`
}

// UsageProperties describe one run of a sandbox.
type UsageProperties struct {
	SandboxID   string  `json:"sandbox_id"`
	Template    string  `json:"template"`
	HostID      string  `json:"host_id,omitempty"`
	Seconds     float64 `json:"seconds"`
	VCPUs       int     `json:"vcpus"`
	MemoryMB    int     `json:"memory_mb"`
	VCPUSeconds float64 `json:"vcpu_seconds"`
	GBSeconds   float64 `json:"gb_seconds"` // memory in GiB times seconds
}

// runtimeEvent bills sb's run from since to end. The transaction ID is
// the sandbox and the run's start, so a retried transition or delivery
// can never bill one run twice. The subscription is the owner.
func runtimeEvent(sb Sandbox, since, end time.Time) (OutboxEvent, error) {
	secs := max(end.Sub(since).Seconds(), 0)
	ev := UsageEvent{
		TransactionID:          fmt.Sprintf("%s-run-%d", sb.ID, since.UnixMicro()),
		ExternalSubscriptionID: sb.OwnerID,
		Code:                   UsageEventCode,
		Timestamp:              end.Unix(),
		Properties: UsageProperties{
			SandboxID: sb.ID, Template: sb.Template, HostID: sb.HostID, Seconds: secs,
			VCPUs: sb.VCPUs, MemoryMB: sb.MemoryMB,
			VCPUSeconds: secs * float64(sb.VCPUs), GBSeconds: secs * float64(sb.MemoryMB) / 1024,
		},
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return OutboxEvent{}, err
	}
	return OutboxEvent{TransactionID: ev.TransactionID, Payload: b}, nil
}

// CheckpointRuns bills the part of every run longer than olderThan that
// has not been billed yet: it writes the runtime event up to now and
// restarts running_since at now, in one transaction, for up to limit
// sandboxes. Without it a sandbox that runs for days would be billed only
// when it stops. It returns how many runs it split; with usage events off
// it does nothing.
func (s *Store) CheckpointRuns(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	if !s.usage {
		return 0, nil
	}
	if limit <= 0 {
		limit = 100
	}
	n := 0
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			UPDATE sandboxes SET running_since = now()
			  FROM (SELECT id AS old_id, running_since AS old_since FROM sandboxes
			         WHERE status = 'running' AND running_since <= now() - make_interval(secs => $1)
			         ORDER BY running_since LIMIT $2 FOR UPDATE SKIP LOCKED) old
			 WHERE id = old.old_id
			RETURNING `+sandboxCols+`, old.old_since, now()`, olderThan.Seconds(), limit)
		if err != nil {
			return dbErr("checkpoint runs", err)
		}
		_, events, err := collectRunEnds(rows, "checkpoint runs", true)
		if err != nil {
			return err
		}
		n = len(events)
		return EnqueueOutbox(ctx, tx, events...)
	})
	return n, err
}

// collectRunEnds reads rows of sandboxCols followed by the run's start
// (NULL when the sandbox was not running) and its billing end, and returns
// the sandbox IDs and, when bill is set, the runtime event of every run
// that had started. op names the statement in errors.
func collectRunEnds(rows pgx.Rows, op string, bill bool) ([]string, []OutboxEvent, error) {
	defer rows.Close()
	var ids []string
	var events []OutboxEvent
	for rows.Next() {
		var since *time.Time
		var end time.Time
		sb, err := scanSandbox(rows, &since, &end)
		if err != nil {
			return nil, nil, dbErr(op, err)
		}
		ids = append(ids, sb.ID)
		if bill && since != nil {
			ev, err := runtimeEvent(sb, *since, end) // an end before since bills 0 s
			if err != nil {
				return nil, nil, err
			}
			events = append(events, ev)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, dbErr(op, err)
	}
	return ids, events, nil
}
