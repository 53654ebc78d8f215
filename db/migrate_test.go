package db_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn-dev/wrenn-sandbox/db"
	"github.com/wrenn-dev/wrenn-sandbox/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// schema returns a fingerprint of the public schema: every column with
// its type, nullability and default, every index and every constraint.
func schema(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT 'col ' || table_name || '.' || column_name || ' ' || data_type || ' ' ||
		       is_nullable || ' ' || coalesce(column_default, '')
		  FROM information_schema.columns WHERE table_schema = 'public'
		UNION ALL
		SELECT 'idx ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
		UNION ALL
		SELECT 'con ' || conrelid::regclass || ' ' || pg_get_constraintdef(oid)
		  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		b.WriteString(s)
		b.WriteByte('\n')
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func tables(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		`SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'goose_db_version' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestMigrateUpDownUp(t *testing.T) {
	ctx := context.Background()
	d := pgtest.NewEmpty(t)
	want := []string{"api_keys", "audit_events", "hosts", "pool_reservations", "sandboxes", "usage_outbox"}

	var out bytes.Buffer
	if err := db.MigratePool(ctx, d.Pool, db.Up, db.WithOutput(&out)); err != nil {
		t.Fatalf("up: %v\n%s", err, out.String())
	}
	if got := tables(t, d.Pool); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("tables after up = %v, want %v", got, want)
	}
	first := schema(t, d.Pool)

	// Up again is a no-op.
	out.Reset()
	if err := db.MigratePool(ctx, d.Pool, db.Up, db.WithOutput(&out)); err != nil {
		t.Fatalf("second up: %v", err)
	}
	if !strings.Contains(out.String(), "no pending migrations") {
		t.Errorf("second up printed %q", out.String())
	}

	// Down one at a time: each step undoes only its own migration.
	hasColumn := func(col string) bool {
		t.Helper()
		var ok bool
		if err := d.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.columns
			WHERE table_name = 'sandboxes' AND column_name = $1)`, col).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	steps := []struct {
		name string
		gone func() bool
	}{
		{"00006 sandboxes.running_since", func() bool { return !hasColumn("running_since") && hasColumn("op") }},
		{"00005 sandboxes.op", func() bool { return !hasColumn("op") && !hasColumn("op_until") && hasColumn("network") }},
		{"00004 sandboxes.network", func() bool { return !hasColumn("network") && len(tables(t, d.Pool)) == len(want) }},
		{"00003 usage_outbox", func() bool {
			got := tables(t, d.Pool)
			return !slices.Contains(got, "usage_outbox") && len(got) == len(want)-1
		}},
	}
	for _, st := range steps {
		if err := db.MigratePool(ctx, d.Pool, db.Down); err != nil {
			t.Fatalf("down (%s): %v", st.name, err)
		}
		if !st.gone() {
			t.Fatalf("after rolling back %s: tables %v", st.name, tables(t, d.Pool))
		}
	}

	// Down to nothing, step by step, then once more.
	for {
		err := db.MigratePool(ctx, d.Pool, db.Down)
		if errors.Is(err, db.ErrNothingToRollBack) {
			break
		}
		if err != nil {
			t.Fatalf("down: %v", err)
		}
	}
	if got := tables(t, d.Pool); len(got) != 0 {
		t.Fatalf("tables after all down = %v", got)
	}
	st, err := db.StatusOf(ctx, db.OpenDB(d.Pool))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Applied {
			t.Errorf("migration %d still applied after full rollback", s.Version)
		}
	}

	// Up again gives exactly the same schema.
	if err := db.MigratePool(ctx, d.Pool, db.Up); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if second := schema(t, d.Pool); second != first {
		t.Errorf("schema after up/down/up differs:\nfirst:\n%s\nsecond:\n%s", first, second)
	}

	// Reset and up once more.
	if err := db.MigratePool(ctx, d.Pool, db.Reset); err != nil {
		t.Fatalf("reset: %v", err)
	}
	if got := tables(t, d.Pool); len(got) != 0 {
		t.Fatalf("tables after reset = %v", got)
	}
	if err := db.MigratePool(ctx, d.Pool, db.Up); err != nil {
		t.Fatalf("up after reset: %v", err)
	}
	if third := schema(t, d.Pool); third != first {
		t.Error("schema after reset/up differs")
	}
}

func TestStatus(t *testing.T) {
	ctx := context.Background()
	d := pgtest.NewEmpty(t)
	sqlDB := db.OpenDB(d.Pool)
	defer sqlDB.Close()

	st, err := db.StatusOf(ctx, sqlDB)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) < 3 {
		t.Fatalf("got %d migrations, want at least 3", len(st))
	}
	for i, s := range st {
		if s.Applied {
			t.Errorf("%s applied on an empty database", s.Name)
		}
		if i > 0 && s.Version <= st[i-1].Version {
			t.Errorf("versions not ascending: %d after %d", s.Version, st[i-1].Version)
		}
	}
	if err := db.Migrate(ctx, sqlDB, db.Up); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := db.Migrate(ctx, sqlDB, db.Status, db.WithOutput(&out)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "pending") || !strings.Contains(out.String(), "00001_initial.sql") {
		t.Errorf("status after up:\n%s", out.String())
	}
}

func TestParseCommand(t *testing.T) {
	tests := []struct {
		in      string
		want    db.Command
		wantErr bool
	}{
		{"up", db.Up, false},
		{"down", db.Down, false},
		{"reset", db.Reset, false},
		{"status", db.Status, false},
		{"UP", "", true},
		{"", "", true},
		{"redo", "", true},
	}
	for _, tt := range tests {
		got, err := db.ParseCommand(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseCommand(%q) = %q, %v", tt.in, got, err)
		}
	}
}

func TestEmbeddedMigrationsHaveUpAndDown(t *testing.T) {
	entries, err := fsReadDir()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("no embedded migrations")
	}
	for name, body := range entries {
		if !strings.Contains(body, "-- +goose Up") || !strings.Contains(body, "-- +goose Down") {
			t.Errorf("%s lacks an Up or a Down section", name)
		}
	}
}
func fsReadDir() (map[string]string, error) {
	out := map[string]string{}
	err := fs.WalkDir(db.Migrations(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(db.Migrations(), p)
		out[p] = string(b)
		return err
	})
	return out, err
}

// TestConcurrentUp: several control-plane replicas starting at once all
// migrate the same database; the advisory lock serialises them.
func TestConcurrentUp(t *testing.T) {
	ctx := context.Background()
	d := pgtest.NewEmpty(t)
	const replicas = 4
	errs := make(chan error, replicas)
	for i := 0; i < replicas; i++ {
		go func() { errs <- db.MigratePool(ctx, d.Pool, db.Up) }()
	}
	for i := 0; i < replicas; i++ {
		if err := <-errs; err != nil {
			t.Errorf("replica: %v", err)
		}
	}
	st, err := db.StatusOf(ctx, db.OpenDB(d.Pool))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if !s.Applied {
			t.Errorf("%s not applied", s.Name)
		}
	}
	var rows int
	if err := d.Pool.QueryRow(ctx, `SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&rows); err != nil || rows != len(st) {
		t.Errorf("%d version rows, want %d (each migration applied once)", rows, len(st))
	}
}
