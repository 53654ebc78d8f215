package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := FindBinaries(); err != nil {
		t.Skip("pgtest: PostgreSQL server binaries (initdb, postgres) are not installed")
	}
}

// procUID reads the real uid of pid from /proc.
func procUID(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			return strings.Fields(rest)[0]
		}
	}
	t.Fatal("no Uid line")
	return ""
}

func TestStartStop(t *testing.T) {
	requireBinaries(t)
	ctx := context.Background()
	c, err := Start(ctx, Options{TCP: true})
	if err != nil {
		t.Fatal(err)
	}
	pid := c.proc.Pid
	if os.Geteuid() == 0 {
		if uid := procUID(t, pid); uid == "0" {
			t.Errorf("postgres runs as root")
		}
	}
	// Reachable over the socket and over 127.0.0.1.
	for _, dsn := range []string{c.DSN("postgres"), c.TCPDSN("postgres")} {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("connect %s: %v", dsn, err)
		}
		var one int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Errorf("query over %s: %v", dsn, err)
		}
		conn.Close(ctx)
	}
	if !strings.Contains(c.TCPDSN("x"), "127.0.0.1:") {
		t.Errorf("tcp dsn %q", c.TCPDSN("x"))
	}
	dir := c.Dir()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster dir still there: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postgres pid %d still alive: %v", pid, err)
	}
}

func TestUnixSocketOnlyByDefault(t *testing.T) {
	requireBinaries(t)
	c := ClusterFor(t)
	if c.TCPDSN("postgres") != "" {
		t.Error("shared cluster listens on TCP")
	}
	conn, err := pgx.Connect(context.Background(), c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var addrs string
	if err := conn.QueryRow(context.Background(), "SHOW listen_addresses").Scan(&addrs); err != nil || addrs != "" {
		t.Errorf("listen_addresses = %q, %v", addrs, err)
	}
}

func TestNewIsMigratedAndIsolated(t *testing.T) {
	ctx := context.Background()
	a := New(t)
	b := New(t)
	if a.Name == b.Name {
		t.Fatal("same database twice")
	}
	var n int
	if err := a.Pool.QueryRow(ctx, `SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&n); err != nil || n < 3 {
		t.Fatalf("migrations in new db: %d, %v", n, err)
	}
	if _, err := a.Pool.Exec(ctx, `INSERT INTO hosts (id, grpc_endpoint) VALUES ('h', 'x')`); err != nil {
		t.Fatal(err)
	}
	if err := b.Pool.QueryRow(ctx, `SELECT count(*) FROM hosts`).Scan(&n); err != nil || n != 0 {
		t.Errorf("row leaked across databases: %d, %v", n, err)
	}
	e := NewEmpty(t)
	if err := e.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("empty db has %d tables, %v", n, err)
	}
}

func TestDatabaseDroppedAfterTest(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) { name = New(t).Name })
	c := ClusterFor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil || n != 0 {
		t.Errorf("database %s still exists after its test: %d, %v", name, n, err)
	}
}

func TestSanitizeName(t *testing.T) {
	tests := []struct {
		name string
		seq  int64
		want string
	}{
		{"TestFoo/bar baz", 3, "t_testfoo_bar_baz_3"},
		{strings.Repeat("x", 100), 12, "t_" + strings.Repeat("x", 58) + "_12"},
	}
	for _, tt := range tests {
		got := sanitizeName("t_", tt.name, tt.seq)
		if got != tt.want || len(got) > 63 {
			t.Errorf("sanitizeName(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}
