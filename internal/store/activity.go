package store

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// TouchSandboxes records activity (exec, file I/O, a terminal) on the
// given sandboxes: last_active_at becomes now() for those that are
// running. It returns how many rows it changed.
func (s *Store) TouchSandboxes(ctx context.Context, ids []string) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE sandboxes SET last_active_at = now()
		 WHERE id = ANY($1) AND status = 'running'`, ids)
	if err != nil {
		return 0, dbErr("touch sandboxes", err)
	}
	return tag.RowsAffected(), nil
}

// MinIdleTimeout is the shortest idle period that counts: an open exec,
// transfer or terminal marks its sandbox every few seconds (the API's
// ActivityEvery plus the recorder's flush), so a shorter timeout_sec could
// pause a sandbox in the middle of a command. Shorter timeouts act as this.
const MinIdleTimeout = 10 * time.Second

// idleWhere selects running sandboxes with a timeout whose last activity
// (or start) is older than their timeout_sec (at least MinIdleTimeout), by
// the database's clock.
var idleWhere = fmt.Sprintf(`status = 'running' AND timeout_sec > 0
	AND coalesce(last_active_at, started_at, created_at) + make_interval(secs => greatest(timeout_sec, %d)) <= now()`,
	int(MinIdleTimeout.Seconds()))

// IdleSandboxes returns up to limit running sandboxes that have been idle
// longer than their timeout_sec (0 = never idle), longest idle first,
// leaving out the IDs in exclude.
func (s *Store) IdleSandboxes(ctx context.Context, limit int, exclude ...string) ([]Sandbox, error) {
	if limit <= 0 {
		limit = 100
	}
	return s.querySandboxes(ctx, "idle sandboxes", `
		SELECT `+sandboxCols+` FROM sandboxes
		 WHERE `+idleWhere+` AND NOT (id = ANY(coalesce($2, '{}'::text[])))
		 ORDER BY coalesce(last_active_at, started_at, created_at), id
		 LIMIT $1`, limit, exclude)
}

// PausedSandboxes returns up to limit sandboxes paused for at least
// pausedFor, longest paused first, leaving out the IDs in exclude.
func (s *Store) PausedSandboxes(ctx context.Context, pausedFor time.Duration, limit int, exclude ...string) ([]Sandbox, error) {
	if limit <= 0 {
		limit = 100
	}
	return s.querySandboxes(ctx, "paused sandboxes", `
		SELECT `+sandboxCols+` FROM sandboxes
		 WHERE status = 'paused' AND paused_at <= now() - make_interval(secs => $1) AND NOT (id = ANY(coalesce($3, '{}'::text[])))
		 ORDER BY paused_at, id
		 LIMIT $2`, pausedFor.Seconds(), limit, exclude)
}

// StillIdle reports whether sandbox id is still running and idle past its
// timeout (activity may have arrived since IdleSandboxes listed it).
func (s *Store) StillIdle(ctx context.Context, id string) (bool, error) {
	var idle bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sandboxes WHERE id = $1 AND `+idleWhere+`)`, id).Scan(&idle)
	if err != nil {
		return false, dbErr("idle check "+id, err)
	}
	return idle, nil
}

// ActivityRecorder batches activity touches so that recording one never
// waits on the database: Touch marks a sandbox, a background goroutine
// writes the marks every interval with one UPDATE. Safe for concurrent
// use; Close writes what is pending and stops.
type ActivityRecorder struct {
	st       *Store
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	pending map[string]struct{}
	closed  bool

	stop chan struct{}
	done chan struct{}
}

// NewActivityRecorder starts a recorder that writes every interval
// (default 1 s).
func (s *Store) NewActivityRecorder(interval time.Duration) *ActivityRecorder {
	if interval <= 0 {
		interval = time.Second
	}
	r := &ActivityRecorder{st: s, log: s.log, interval: interval,
		pending: make(map[string]struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

// Touch marks sandbox id active now (written within one interval).
func (r *ActivityRecorder) Touch(id string) {
	r.mu.Lock()
	if !r.closed {
		r.pending[id] = struct{}{}
	}
	r.mu.Unlock()
}

// Flush writes the pending marks now. Marks a failed write could not
// record stay pending for the next one.
func (r *ActivityRecorder) Flush(ctx context.Context) error {
	r.mu.Lock()
	ids := make([]string, 0, len(r.pending))
	for id := range r.pending {
		ids = append(ids, id)
	}
	clear(r.pending)
	r.mu.Unlock()
	_, err := r.st.TouchSandboxes(ctx, ids)
	if err != nil {
		r.mu.Lock()
		for _, id := range ids {
			r.pending[id] = struct{}{}
		}
		r.mu.Unlock()
	}
	return err
}

// Pending returns how many sandboxes have marks not written yet.
func (r *ActivityRecorder) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Close writes what is pending and stops the recorder. Safe to call more
// than once.
func (r *ActivityRecorder) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.done
		return nil
	}
	r.closed = true
	close(r.stop)
	r.mu.Unlock()
	<-r.done
	return r.Flush(ctx)
}

func (r *ActivityRecorder) run() {
	defer close(r.done)
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := r.Flush(ctx); err != nil {
				r.log.Warn("record sandbox activity", "err", err)
			}
			cancel()
		}
	}
}
