// Package pgtest starts throwaway PostgreSQL clusters for tests (and for
// anything else that needs a private server): initdb into a temp
// directory, postgres listening on a Unix socket in that directory (and
// optionally 127.0.0.1), run as an unprivileged user when the caller is
// root, stopped and removed afterwards. Test helpers hand each test a
// fresh database cloned from a template that holds the real migrations.
// No Docker. It imports db (the migrations) and nothing from the tiers.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Superuser is the cluster's superuser role.
const Superuser = "postgres"

// ErrNoPostgres means the PostgreSQL server binaries were not found.
var ErrNoPostgres = errors.New("postgresql binaries (initdb, postgres) not found")

// Options configure Start.
type Options struct {
	// TCP also listens on 127.0.0.1 on a free port; otherwise the cluster
	// is reachable only through its Unix socket.
	TCP bool
	// Settings are extra postgres -c name=value settings.
	Settings map[string]string
}

// Cluster is one running postgres server. Stop it when done.
type Cluster struct {
	dir     string // removed by Stop
	port    int
	tcp     bool
	proc    *os.Process
	exited  chan struct{} // closed when postgres exits
	waitErr error         // valid after exited is closed
	admin   *pgxpool.Pool // on the "postgres" database

	stopOnce sync.Once
	stopErr  error
}

// FindBinaries returns the directory holding initdb and postgres: the one
// of initdb on PATH, else the newest /usr/lib/postgresql/*/bin.
func FindBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", ErrNoPostgres
}

// Start creates and starts a new cluster in a fresh temp directory.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	bin, err := FindBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tempBase(cred != nil), "wrenn-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: temp dir: %w", err)
	}
	c := &Cluster{dir: dir, port: 5432, tcp: opts.TCP, exited: make(chan struct{})}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtest: chown %s: %w", dir, err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"-D", data, "-U", Superuser, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = dir
	initdb.Env = serverEnv()
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}

	if opts.TCP {
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
	}
	args := []string{"-D", data, "-k", dir, "-p", strconv.Itoa(c.port), "-F"}
	settings := map[string]string{
		"listen_addresses":   "",
		"max_connections":    "200",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"log_min_messages":   "warning",
	}
	if opts.TCP {
		settings["listen_addresses"] = "127.0.0.1"
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	for k, v := range settings {
		args = append(args, "-c", k+"="+v)
	}
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return nil, fmt.Errorf("pgtest: log file: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor
	if err := c.startServer(filepath.Join(bin, "postgres"), args, cred, logf); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// startServer runs postgres from a goroutine locked to its OS thread for
// the server's whole life: Pdeathsig fires when the forking thread exits,
// so this way postgres gets SIGINT (fast shutdown) exactly when the test
// binary dies, and not earlier.
func (c *Cluster) startServer(path string, args []string, cred *syscall.Credential, logf *os.File) error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		cmd := exec.Command(path, args...)
		cmd.Dir = c.dir
		cmd.Env = serverEnv()
		cmd.Stdout = logf
		cmd.Stderr = logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGINT, Setpgid: true}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("pgtest: start postgres: %w", err)
			close(c.exited)
			runtime.UnlockOSThread()
			return
		}
		c.proc = cmd.Process
		started <- nil
		c.waitErr = cmd.Wait()
		close(c.exited)
		runtime.UnlockOSThread()
	}()
	return <-started
}

func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	for {
		select {
		case <-c.exited:
			return fmt.Errorf("pgtest: postgres exited during start: %v\n%s", c.waitErr, c.logTail())
		case <-ctx.Done():
			return fmt.Errorf("pgtest: postgres not ready: %w (last: %v)\n%s", ctx.Err(), last, c.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		pool, err := pgxpool.New(ctx, c.DSN("postgres"))
		if err == nil {
			if err = pool.Ping(ctx); err == nil {
				c.admin = pool
				return nil
			}
			pool.Close()
		}
		last = err
	}
}

// DSN returns a connection string for database name (over the Unix socket).
func (c *Cluster) DSN(name string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.dir, c.port, Superuser, name)
}

// TCPDSN returns a postgres:// URL over 127.0.0.1, or "" without Options.TCP.
func (c *Cluster) TCPDSN(name string) string {
	if !c.tcp {
		return ""
	}
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, c.port, name)
}

// Dir is the cluster's directory (data/, the socket, postgres.log).
func (c *Cluster) Dir() string { return c.dir }

// CreateDatabase creates database name, copied from template when it is
// not empty.
func (c *Cluster) CreateDatabase(ctx context.Context, name, template string) error {
	q := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		q += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if _, err := c.admin.Exec(ctx, q); err != nil {
		return fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return nil
}

// DropDatabase drops database name, disconnecting its sessions.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	q := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"
	if _, err := c.admin.Exec(ctx, q); err != nil {
		return fmt.Errorf("pgtest: drop database %s: %w", name, err)
	}
	return nil
}

// Stop shuts postgres down (fast shutdown, then SIGKILL after 30 s) and
// removes the cluster's directory. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		if c.admin != nil {
			c.admin.Close()
		}
		if c.proc != nil {
			_ = c.proc.Signal(syscall.SIGINT)
			select {
			case <-c.exited:
			case <-time.After(30 * time.Second):
				_ = syscall.Kill(-c.proc.Pid, syscall.SIGKILL)
				<-c.exited
				c.stopErr = errors.New("pgtest: postgres ignored SIGINT; killed")
			}
		}
		if err := os.RemoveAll(c.dir); err != nil && c.stopErr == nil {
			c.stopErr = fmt.Errorf("pgtest: remove %s: %w", c.dir, err)
		}
	})
	return c.stopErr
}

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

// serverCredential returns the unprivileged user postgres must run as
// when we are root (postgres refuses to run as root): "postgres" if it
// exists, else "nobody". Nil when we are not root.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false, Groups: []uint32{}}, nil
	}
	return nil, errors.New("pgtest: running as root and no unprivileged user (postgres, nobody) to run postgres as")
}

// tempBase picks where cluster directories go: os.TempDir(), unless the
// server user could not reach it (a private TMPDIR under /root) or the
// socket path would pass the kernel's 107-byte limit; then /tmp.
func tempBase(otherUser bool) string {
	base := os.TempDir()
	if len(base)+len("/wrenn-pgtest-0123456789/.s.PGSQL.65535") > 100 {
		return "/tmp"
	}
	if otherUser {
		for d := base; ; d = filepath.Dir(d) {
			fi, err := os.Stat(d)
			if err != nil || fi.Mode().Perm()&0o001 == 0 {
				return "/tmp"
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return base
}

func serverEnv() []string {
	env := []string{"LC_ALL=C", "LANG=C", "TZ=UTC"}
	if p := os.Getenv("PATH"); p != "" {
		env = append(env, "PATH="+p)
	}
	return env
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// sanitizeName makes a database name from a test name: lowercase letters,
// digits and underscores, at most 63 bytes with the suffix kept.
func sanitizeName(prefix, testName string, seq int64) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	suffix := "_" + strconv.FormatInt(seq, 10)
	name := prefix + b.String()
	if len(name)+len(suffix) > 63 {
		name = name[:63-len(suffix)]
	}
	return name + suffix
}
