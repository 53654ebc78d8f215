package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// undoTimeout bounds running a whole undo stack.
const undoTimeout = 2 * time.Minute

// undoStack collects the release of each resource a multi-step operation
// acquired. On failure it runs them once, newest first, under a context
// that the caller's cancellation cannot cut short.
type undoStack struct {
	steps []undoStep
	done  bool
}

type undoStep struct {
	name string
	fn   func(context.Context) error
}

// push adds the release of a resource just acquired.
func (u *undoStack) push(name string, fn func(context.Context) error) {
	u.steps = append(u.steps, undoStep{name: name, fn: fn})
}

// run releases everything in reverse order, once, and returns every
// failure joined (nil when all succeeded).
func (u *undoStack) run(ctx context.Context, log *slog.Logger) error {
	if u.done {
		return nil
	}
	u.done = true
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	var errs []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		s := u.steps[i]
		if err := s.fn(ctx); err != nil {
			log.Error("undo failed", "step", s.name, "err", err)
			errs = append(errs, fmt.Errorf("undo %s: %w", s.name, err))
		}
	}
	return errors.Join(errs...)
}
