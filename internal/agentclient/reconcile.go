package agentclient

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// ReasonLost is the error reason of a sandbox the control plane had as
// running or paused on a host whose agent no longer knows it.
const ReasonLost = "lost on host"

// FixKind says what a reconciliation fix does.
type FixKind string

// The fixes.
const (
	FixMarkError FixKind = "mark_error" // row → error with Reason (releases its pool reservation)
	FixSetStatus FixKind = "set_status" // row → To, the agent's state (a legal transition)
	FixDestroy   FixKind = "destroy"    // DestroySandbox on the agent (no live row)
)

// Fix is one difference between the control plane's rows and an agent's
// inventory, and what to do about it. From is the row's status when the
// diff was made; applying the fix is a compare-and-set on it.
type Fix struct {
	Kind      FixKind
	SandboxID string
	From      models.SandboxStatus // "" for FixDestroy
	To        models.SandboxStatus // FixSetStatus and FixMarkError
	Reason    string
}

// DiffOptions are the diff's clock and grace periods.
type DiffOptions struct {
	Now time.Time
	// Grace leaves alone rows and agent sandboxes created or changed less
	// than this long ago: a create, pause or resume may be between its
	// agent call and its row update.
	Grace time.Duration
	// StartingGrace leaves alone pending and starting rows created less
	// than this long ago (the create path owns them).
	StartingGrace time.Duration
}

// agentStatus maps an agent state to a row status; ok is false for
// UNSPECIFIED and unknown values.
func agentStatus(s pb.SandboxState) (models.SandboxStatus, bool) {
	switch s {
	case pb.SandboxState_SANDBOX_STATE_STARTING:
		return models.StatusStarting, true
	case pb.SandboxState_SANDBOX_STATE_RUNNING:
		return models.StatusRunning, true
	case pb.SandboxState_SANDBOX_STATE_PAUSED:
		return models.StatusPaused, true
	case pb.SandboxState_SANDBOX_STATE_HIBERNATED:
		return models.StatusHibernated, true
	case pb.SandboxState_SANDBOX_STATE_STOPPED:
		return models.StatusStopped, true
	case pb.SandboxState_SANDBOX_STATE_ERROR:
		return models.StatusError, true
	}
	return "", false
}

func recent(now, t time.Time, d time.Duration) bool {
	return !t.IsZero() && now.Sub(t) < d
}

func recentTS(now time.Time, ts *timestamppb.Timestamp, d time.Duration) bool {
	return ts != nil && recent(now, ts.AsTime(), d)
}

// Diff compares the live rows the control plane has for one host (not
// stopped or error; store.SandboxesOnHost) with that host's agent
// inventory and returns the fixes, rows first in their order, then agent
// sandboxes in theirs. It is pure: the caller applies the fixes.
//
// Read the inventory before the rows: a sandbox created in between then
// shows up as a fresh row (left alone by the grace period) rather than
// as an agent sandbox without a row (which would be destroyed).
//
//   - A running or paused (or, past StartingGrace, pending or starting)
//     row the agent does not have goes to error, ReasonLost. A
//     hibernated row may live in a snapshot outside the agent: left alone.
//   - An agent sandbox without a live row is destroyed on the agent,
//     unless the agent says it is already stopping.
//   - A row whose status differs from the agent's moves to the agent's
//     state when the state machine allows it, and to error (with a reason
//     naming both states) otherwise. An agent in error puts the row in
//     error with the agent's reason; the next pass destroys the VM.
func Diff(rows []store.Sandbox, inv []*pb.Sandbox, o DiffOptions) []Fix {
	onAgent := make(map[string]*pb.Sandbox, len(inv))
	for _, a := range inv {
		onAgent[a.GetSandboxId()] = a
	}
	live := make(map[string]bool, len(rows))
	var fixes []Fix
	for _, row := range rows {
		live[row.ID] = true
		switch row.Status {
		case models.StatusStopped, models.StatusError:
			live[row.ID] = false
			continue
		case models.StatusPending, models.StatusStarting:
			if recent(o.Now, row.CreatedAt, max(o.StartingGrace, o.Grace)) {
				continue
			}
		}
		if recent(o.Now, row.CreatedAt, o.Grace) || recent(o.Now, row.UpdatedAt, o.Grace) {
			continue
		}
		a, ok := onAgent[row.ID]
		if !ok {
			if row.Status != models.StatusHibernated {
				fixes = append(fixes, Fix{Kind: FixMarkError, SandboxID: row.ID, From: row.Status, To: models.StatusError, Reason: ReasonLost})
			}
			continue
		}
		st, known := agentStatus(a.GetState())
		if !known || st == row.Status || st == models.StatusStopped {
			continue // nothing to say, or being destroyed: the next pass sees it gone
		}
		if recentTS(o.Now, a.GetStartedAt(), o.Grace) || recentTS(o.Now, a.GetPausedAt(), o.Grace) {
			continue // the agent just changed it; the row may be about to follow
		}
		switch {
		case st == models.StatusError:
			reason := "error on host"
			if a.GetError() != "" {
				reason += ": " + a.GetError()
			}
			fixes = append(fixes, Fix{Kind: FixMarkError, SandboxID: row.ID, From: row.Status, To: models.StatusError, Reason: reason})
		case models.CanTransition(row.Status, st):
			fixes = append(fixes, Fix{Kind: FixSetStatus, SandboxID: row.ID, From: row.Status, To: st})
		default:
			fixes = append(fixes, Fix{Kind: FixMarkError, SandboxID: row.ID, From: row.Status, To: models.StatusError,
				Reason: fmt.Sprintf("state drift: control plane had %s, host has %s", row.Status, st)})
		}
	}
	for _, a := range inv {
		id := a.GetSandboxId()
		if id == "" || live[id] || a.GetState() == pb.SandboxState_SANDBOX_STATE_STOPPED {
			continue
		}
		if recentTS(o.Now, a.GetCreatedAt(), o.Grace) {
			continue
		}
		fixes = append(fixes, Fix{Kind: FixDestroy, SandboxID: id, Reason: "no live sandbox in the control plane"})
	}
	return fixes
}
