package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// Audit event types.
const (
	AuditExec      = "exec"
	AuditFileRead  = "file_read"
	AuditFileWrite = "file_write"
	AuditTerminal  = "terminal"
)

// AuditEvent is one exec or file operation. Zero numbers are stored as
// NULL only where they mean "unknown" (ExitCode uses a pointer).
type AuditEvent struct {
	ID          int64     `json:"id"`
	SandboxID   string    `json:"sandbox_id"`
	OwnerID     string    `json:"owner_id"`
	APIKeyID    string    `json:"api_key_id,omitempty"`
	Type        string    `json:"event_type"`
	Command     string    `json:"command,omitempty"`
	Path        string    `json:"path,omitempty"`
	ExitCode    *int      `json:"exit_code,omitempty"`
	DurationMS  int64     `json:"duration_ms"`
	StdoutBytes int64     `json:"stdout_bytes"`
	StderrBytes int64     `json:"stderr_bytes"`
	BytesIn     int64     `json:"bytes_in"`
	BytesOut    int64     `json:"bytes_out"`
	Error       string    `json:"error,omitempty"`
	CreatedAt   time.Time `json:"created_at"` // zero = when recorded
}

var auditColumns = []string{"sandbox_id", "owner_id", "api_key_id", "event_type", "command", "path",
	"exit_code", "duration_ms", "stdout_bytes", "stderr_bytes", "bytes_in", "bytes_out", "error", "created_at"}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (e AuditEvent) row() []any {
	var exit any
	if e.ExitCode != nil {
		exit = int32(*e.ExitCode)
	}
	return []any{e.SandboxID, e.OwnerID, nullStr(e.APIKeyID), e.Type, nullStr(e.Command), nullStr(e.Path),
		exit, e.DurationMS, e.StdoutBytes, e.StderrBytes, e.BytesIn, e.BytesOut, nullStr(e.Error), e.CreatedAt}
}

// AuditOptions tune an AuditWriter; zero values take the defaults.
type AuditOptions struct {
	Buffer        int           // events queued before Record drops (default 10000)
	BatchSize     int           // events per COPY (default 500)
	FlushInterval time.Duration // longest an event waits (default 200ms)
	Retries       int           // extra attempts for a failed batch (default 2)
}

// AuditStats count what an AuditWriter did.
type AuditStats struct {
	Written uint64 // rows committed
	Dropped uint64 // refused by Record: buffer full or writer closed
	Failed  uint64 // lost because the database kept refusing a batch
}

// AuditWriter writes audit events in batches (COPY) from one background
// goroutine, so recording never waits on the database. Record is safe
// for concurrent use; Close flushes what is queued and stops.
type AuditWriter struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	opts AuditOptions

	mu     sync.RWMutex // write-held only by Close, to fence Record
	closed bool
	ch     chan AuditEvent
	stop   chan struct{} // closed by Close: drain and exit
	done   chan struct{} // closed when the goroutine exits
	abort  context.CancelFunc

	written, dropped, failed atomic.Uint64
}

// NewAuditWriter starts a writer on pool.
func (s *Store) NewAuditWriter(opts AuditOptions) *AuditWriter {
	if opts.Buffer <= 0 {
		opts.Buffer = 10000
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 200 * time.Millisecond
	}
	if opts.Retries < 0 {
		opts.Retries = 0
	} else if opts.Retries == 0 {
		opts.Retries = 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &AuditWriter{
		pool: s.pool, log: s.log, opts: opts,
		ch: make(chan AuditEvent, opts.Buffer), stop: make(chan struct{}), done: make(chan struct{}),
		abort: cancel,
	}
	go w.run(ctx)
	return w
}

// Record queues ev without blocking. It returns false, and counts a drop,
// when the buffer is full or the writer is closed.
func (w *AuditWriter) Record(ev AuditEvent) bool {
	if ev.CreatedAt.IsZero() {
		ev.CreatedAt = time.Now()
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.dropped.Add(1)
		return false
	}
	select {
	case w.ch <- ev:
		return true
	default:
		w.dropped.Add(1)
		return false
	}
}

// Stats returns the counters so far.
func (w *AuditWriter) Stats() AuditStats {
	return AuditStats{Written: w.written.Load(), Dropped: w.dropped.Load(), Failed: w.failed.Load()}
}

// Close stops accepting events, writes every queued one and waits for
// the writer to finish. If ctx ends first, the write in progress is
// abandoned and ctx's error returned. Safe to call more than once.
func (w *AuditWriter) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.stop)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		w.abort()
		<-w.done
		return fmt.Errorf("close audit writer: %w", ctx.Err())
	}
}

func (w *AuditWriter) run(ctx context.Context) {
	defer close(w.done)
	tick := time.NewTicker(w.opts.FlushInterval)
	defer tick.Stop()
	batch := make([]AuditEvent, 0, w.opts.BatchSize)
	for {
		select {
		case ev := <-w.ch:
			batch = append(batch, ev)
			if len(batch) >= w.opts.BatchSize {
				batch = w.flush(ctx, batch)
			}
		case <-tick.C:
			batch = w.flush(ctx, batch)
		case <-w.stop:
			// Record can no longer send: drain what is queued.
			for {
				select {
				case ev := <-w.ch:
					batch = append(batch, ev)
					if len(batch) >= w.opts.BatchSize {
						batch = w.flush(ctx, batch)
					}
					continue
				default:
				}
				break
			}
			w.flush(ctx, batch)
			return
		}
	}
}

// flush writes batch and returns it emptied for reuse.
func (w *AuditWriter) flush(ctx context.Context, batch []AuditEvent) []AuditEvent {
	if len(batch) == 0 {
		return batch
	}
	rows := make([][]any, len(batch))
	for i, ev := range batch {
		rows[i] = ev.row()
	}
	var err error
	for attempt := 0; attempt <= w.opts.Retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			err = ctx.Err()
			break
		}
		var n int64
		n, err = w.pool.CopyFrom(ctx, pgx.Identifier{"audit_events"}, auditColumns, pgx.CopyFromRows(rows))
		if err == nil {
			w.written.Add(uint64(n))
			return batch[:0]
		}
	}
	w.failed.Add(uint64(len(batch)))
	w.log.Error("audit batch lost", "events", len(batch), "err", err)
	return batch[:0]
}

// AuditFilter selects audit events; newest first.
type AuditFilter struct {
	SandboxID string
	// BeforeID pages: only events with a smaller ID (0 = from the newest).
	BeforeID int64
	Limit    int // 0 = 100, at most 1000
}

// ListAuditEvents returns the events scope may see (an owner only its
// own), newest first.
func (s *Store) ListAuditEvents(ctx context.Context, sc Scope, f AuditFilter) ([]AuditEvent, error) {
	if !sc.Admin && sc.OwnerID == "" {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "list audit events: scope without owner")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	rows, err := s.pool.Query(ctx, `
		SELECT id, sandbox_id, owner_id, coalesce(api_key_id, ''), event_type, coalesce(command, ''),
		       coalesce(path, ''), exit_code, coalesce(duration_ms, 0), coalesce(stdout_bytes, 0),
		       coalesce(stderr_bytes, 0), coalesce(bytes_in, 0), coalesce(bytes_out, 0),
		       coalesce(error, ''), created_at
		  FROM audit_events
		 WHERE ($1 OR owner_id = $2) AND ($3 = '' OR sandbox_id = $3) AND ($4 = 0 OR id < $4)
		 ORDER BY id DESC LIMIT $5`, sc.Admin, sc.OwnerID, f.SandboxID, f.BeforeID, limit)
	if err != nil {
		return nil, dbErr("list audit events", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEvent, error) {
		var e AuditEvent
		var exit *int32
		err := r.Scan(&e.ID, &e.SandboxID, &e.OwnerID, &e.APIKeyID, &e.Type, &e.Command, &e.Path, &exit,
			&e.DurationMS, &e.StdoutBytes, &e.StderrBytes, &e.BytesIn, &e.BytesOut, &e.Error, &e.CreatedAt)
		if exit != nil {
			c := int(*exit)
			e.ExitCode = &c
		}
		return e, err
	})
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, dbErr("list audit events", err)
	}
	return out, nil
}
