package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Command is a migration command.
type Command string

// Commands understood by Migrate.
const (
	Up     Command = "up"     // apply every pending migration
	Down   Command = "down"   // roll back the most recent migration
	Reset  Command = "reset"  // roll back every migration
	Status Command = "status" // print each migration's state
)

// ParseCommand turns a CLI word into a Command.
func ParseCommand(s string) (Command, error) {
	switch c := Command(s); c {
	case Up, Down, Reset, Status:
		return c, nil
	}
	return "", fmt.Errorf("unknown migrate command %q (want up, down, reset or status)", s)
}

// ErrNothingToRollBack is returned by Down when no migration is applied.
var ErrNothingToRollBack = errors.New("no applied migration to roll back")

// Option configures Migrate.
type Option func(*options)

type options struct {
	out io.Writer
	log *slog.Logger
}

// WithOutput makes Migrate print one line per migration applied or rolled
// back, and the status table, to w (the CLI passes os.Stdout).
func WithOutput(w io.Writer) Option { return func(o *options) { o.out = w } }

// WithLogger routes goose's own log lines to l (default: discarded).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// MigrationStatus is one migration's state in a database.
type MigrationStatus struct {
	Version   int64
	Name      string
	Applied   bool
	AppliedAt time.Time // zero when pending
}

// OpenDB wraps a pgx pool as a *sql.DB (pgx's stdlib driver) for Migrate.
// Closing the returned DB does not close the pool.
func OpenDB(pool *pgxpool.Pool) *sql.DB { return stdlib.OpenDBFromPool(pool) }

// MigratePool runs cmd over a pgx pool.
func MigratePool(ctx context.Context, pool *pgxpool.Pool, cmd Command, opts ...Option) error {
	sqlDB := OpenDB(pool)
	defer sqlDB.Close()
	return Migrate(ctx, sqlDB, cmd, opts...)
}

// Migrate runs cmd with the embedded migrations against sqlDB, which must
// be a PostgreSQL connection. Concurrent callers (several control-plane
// replicas starting at once) are serialised by a PostgreSQL advisory lock.
// Up with nothing pending is not an error; Down with nothing applied
// returns ErrNothingToRollBack.
func Migrate(ctx context.Context, sqlDB *sql.DB, cmd Command, opts ...Option) error {
	o := options{out: io.Discard, log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	p, err := newProvider(sqlDB, o.log)
	if err != nil {
		return err
	}
	switch cmd {
	case Up:
		res, err := p.Up(ctx)
		printResults(o.out, res)
		if err != nil {
			return fmt.Errorf("migrate up: %w", err)
		}
		if len(res) == 0 {
			fmt.Fprintln(o.out, "no pending migrations")
		}
		return nil
	case Down:
		res, err := p.Down(ctx)
		if errors.Is(err, goose.ErrNoNextVersion) {
			return ErrNothingToRollBack
		}
		if res != nil {
			printResults(o.out, []*goose.MigrationResult{res})
		}
		if err != nil {
			return fmt.Errorf("migrate down: %w", err)
		}
		return nil
	case Reset:
		res, err := p.DownTo(ctx, 0)
		printResults(o.out, res)
		if err != nil {
			return fmt.Errorf("migrate reset: %w", err)
		}
		return nil
	case Status:
		st, err := statusOf(ctx, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(o.out, "%-8s %-26s %s\n", "VERSION", "APPLIED AT", "MIGRATION")
		for _, s := range st {
			at := "pending"
			if s.Applied {
				at = s.AppliedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(o.out, "%-8d %-26s %s\n", s.Version, at, s.Name)
		}
		return nil
	}
	return fmt.Errorf("unknown migrate command %q", cmd)
}

// StatusOf reports every embedded migration's state in sqlDB.
func StatusOf(ctx context.Context, sqlDB *sql.DB) ([]MigrationStatus, error) {
	p, err := newProvider(sqlDB, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	return statusOf(ctx, p)
}

func statusOf(ctx context.Context, p *goose.Provider) ([]MigrationStatus, error) {
	st, err := p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("migration status: %w", err)
	}
	out := make([]MigrationStatus, 0, len(st))
	for _, s := range st {
		out = append(out, MigrationStatus{
			Version:   s.Source.Version,
			Name:      path.Base(s.Source.Path),
			Applied:   s.State == goose.StateApplied,
			AppliedAt: s.AppliedAt,
		})
	}
	return out, nil
}

func newProvider(sqlDB *sql.DB, log *slog.Logger) (*goose.Provider, error) {
	// Retry the advisory lock every second for up to five minutes.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, Migrations(),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(log),
	)
	if err != nil {
		return nil, fmt.Errorf("migration provider: %w", err)
	}
	return p, nil
}

func printResults(w io.Writer, res []*goose.MigrationResult) {
	for _, r := range res {
		if r == nil {
			continue
		}
		if r.Error != nil {
			fmt.Fprintf(w, "FAILED %s %s: %v\n", r.Direction, path.Base(r.Source.Path), r.Error)
			continue
		}
		fmt.Fprintln(w, r.String())
	}
}
