package agentclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// ReconcileStore is the part of the store reconciliation reads and fixes
// rows with (*store.Store implements it).
type ReconcileStore interface {
	SandboxesOnHost(ctx context.Context, hostID string) ([]store.Sandbox, error)
	Transition(ctx context.Context, tr store.Transition) (store.Sandbox, error)
}

// Inventory is the part of an agent reconciliation talks to (*Client
// implements it).
type Inventory interface {
	ListSandboxes(ctx context.Context) ([]*pb.Sandbox, error)
	DestroySandbox(ctx context.Context, id string) error
}

// ReconcileOptions tune a Reconciler; zero values take the defaults.
type ReconcileOptions struct {
	Every         time.Duration // periodic pass per host (default 1 min); (re)connects always get one
	Grace         time.Duration // DiffOptions.Grace (default 30s)
	StartingGrace time.Duration // DiffOptions.StartingGrace (default 10 min)
	Timeout       time.Duration // one host's pass (default 1 min)
}

// Reconciler makes a host's rows and its agent's inventory agree
// (see Diff). It is safe for concurrent use on different hosts.
type Reconciler struct {
	st   ReconcileStore
	log  *slog.Logger
	opts ReconcileOptions
	now  func() time.Time
}

// NewReconciler returns a reconciler fixing rows in st.
func NewReconciler(st ReconcileStore, log *slog.Logger, o ReconcileOptions) *Reconciler {
	if o.Every <= 0 {
		o.Every = time.Minute
	}
	if o.Grace <= 0 {
		o.Grace = 30 * time.Second
	}
	if o.StartingGrace <= 0 {
		o.StartingGrace = 10 * time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{st: st, log: log, opts: o, now: time.Now}
}

// ReconcileResult counts what one pass did.
type ReconcileResult struct {
	Fixes   []Fix // every fix the diff asked for
	Applied int   // fixes applied
	Skipped int   // fixes overtaken by a concurrent change (the row moved on)
	Failed  int   // fixes that failed; logged, retried by the next pass
}

// ReconcileHost runs one pass for hostID: inventory first, then rows,
// then the fixes. A fix that fails is logged and counted; the error is
// only for a pass that could not read either side.
func (r *Reconciler) ReconcileHost(ctx context.Context, hostID string, agent Inventory) (ReconcileResult, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	inv, err := agent.ListSandboxes(ctx)
	if err != nil {
		return ReconcileResult{}, fmt.Errorf("reconcile %s: %w", hostID, err)
	}
	rows, err := r.st.SandboxesOnHost(ctx, hostID)
	if err != nil {
		return ReconcileResult{}, fmt.Errorf("reconcile %s: %w", hostID, err)
	}
	res := ReconcileResult{Fixes: Diff(rows, inv, DiffOptions{
		Now: r.now(), Grace: r.opts.Grace, StartingGrace: r.opts.StartingGrace,
	})}
	for _, f := range res.Fixes {
		log := r.log.With("host_id", hostID, "sandbox_id", f.SandboxID, "fix", string(f.Kind))
		err := r.apply(ctx, agent, hostID, f)
		var conflict *store.StatusConflictError
		switch {
		case err == nil:
			res.Applied++
			log.Warn("reconciled sandbox", "from", string(f.From), "to", string(f.To), "reason", f.Reason)
		case errors.As(err, &conflict) || errdefs.IsNotFound(err):
			res.Skipped++
			log.Info("reconcile fix overtaken", "err", err)
		default:
			res.Failed++
			if ctx.Err() == nil {
				log.Error("reconcile fix failed", "err", err)
			}
		}
	}
	return res, nil
}

func (r *Reconciler) apply(ctx context.Context, agent Inventory, hostID string, f Fix) error {
	switch f.Kind {
	case FixDestroy:
		return agent.DestroySandbox(ctx, f.SandboxID)
	case FixSetStatus:
		_, err := r.st.Transition(ctx, store.Transition{ID: f.SandboxID, From: []models.SandboxStatus{f.From}, To: f.To})
		return err
	case FixMarkError:
		reason := f.Reason
		_, err := r.st.Transition(ctx, store.Transition{ID: f.SandboxID, From: []models.SandboxStatus{f.From},
			To: models.StatusError, Set: store.SandboxPatch{ErrorReason: &reason}})
		return err
	}
	return fmt.Errorf("reconcile %s: unknown fix %q", hostID, f.Kind)
}
