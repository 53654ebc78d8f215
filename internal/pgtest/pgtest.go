package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn-dev/wrenn-sandbox/db"
)

// templateDB is the database that holds the migrated schema; New clones it.
const templateDB = "wrenn_template"

// DB is one test's database.
type DB struct {
	Name string
	DSN  string
	Pool *pgxpool.Pool
}

// shared is the cluster Main starts for the whole test binary. It is the
// package's only mutable global and exists because a test binary's tests
// have no other common owner; Main sets it before any test runs.
var shared struct {
	cluster  *Cluster
	startErr error
	tmplOnce sync.Once
	tmplErr  error
	seq      atomic.Int64
}

// Main starts one cluster for the test binary, runs the tests and stops
// the cluster. Use it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// Without it, New starts a private cluster per test (slower).
// When the PostgreSQL binaries are missing the tests still run and New
// skips them.
func Main(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := Start(ctx, Options{})
	cancel()
	if err != nil {
		shared.startErr = err
		if !errors.Is(err, ErrNoPostgres) {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	shared.cluster = c
	code := m.Run()
	if c != nil {
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// New returns a fresh database with every migration applied, dropped at
// the end of the test. It skips the test only when the PostgreSQL server
// binaries are missing.
func New(t testing.TB) *DB {
	t.Helper()
	c := cluster(t)
	if err := ensureTemplate(c); err != nil {
		t.Fatal(err)
	}
	return newDB(t, c, templateDB)
}

// NewEmpty returns a fresh database without any migration applied (for
// migration tests), dropped at the end of the test.
func NewEmpty(t testing.TB) *DB {
	t.Helper()
	return newDB(t, cluster(t), "template0")
}

// ClusterFor returns the cluster New uses for t (the shared one under Main).
func ClusterFor(t testing.TB) *Cluster {
	t.Helper()
	return cluster(t)
}

func cluster(t testing.TB) *Cluster {
	t.Helper()
	if shared.cluster != nil {
		return shared.cluster
	}
	if errors.Is(shared.startErr, ErrNoPostgres) {
		t.Skip("pgtest: PostgreSQL server binaries (initdb, postgres) are not installed")
	}
	// No Main: a private cluster for this test.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{})
	if errors.Is(err, ErrNoPostgres) {
		t.Skip("pgtest: PostgreSQL server binaries (initdb, postgres) are not installed")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// ensureTemplate creates and migrates the template database once per
// cluster. Private clusters (no Main) get their own template.
func ensureTemplate(c *Cluster) error {
	if c == shared.cluster {
		shared.tmplOnce.Do(func() { shared.tmplErr = migrateTemplate(c) })
		return shared.tmplErr
	}
	return migrateTemplate(c)
}

func migrateTemplate(c *Cluster) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.CreateDatabase(ctx, templateDB, "template0"); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, c.DSN(templateDB))
	if err != nil {
		return fmt.Errorf("pgtest: connect template: %w", err)
	}
	defer pool.Close()
	if err := db.MigratePool(ctx, pool, db.Up); err != nil {
		return fmt.Errorf("pgtest: migrate template: %w", err)
	}
	return nil
}

func newDB(t testing.TB, c *Cluster, template string) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := sanitizeName("t_", t.Name(), shared.seq.Add(1))
	if err := c.CreateDatabase(ctx, name, template); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(c.DSN(name))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 32
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.DropDatabase(ctx, name); err != nil {
			t.Error(err)
		}
	})
	return &DB{Name: name, DSN: c.DSN(name), Pool: pool}
}
