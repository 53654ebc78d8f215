// Command control-plane (wrenn-cp) is Wrenn's control plane: the REST API
// on PostgreSQL, scheduling onto host agents over mTLS, and the admin
// commands (migrations, key seeding). It must not import host-agent
// packages.
//
//	wrenn-cp serve
//	wrenn-cp migrate up|down|status
//	wrenn-cp keys create --owner X [--admin] [--name N]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/wrenn-dev/wrenn-sandbox/db"
	"github.com/wrenn-dev/wrenn-sandbox/internal/api"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

const usage = `usage:
  wrenn-cp serve                                  run the API (configuration from the environment)
  wrenn-cp migrate up|down|status                 apply, roll back one, or list migrations (DATABASE_URL)
  wrenn-cp keys create --owner X [--admin] [--name N]   create an API key and print it once
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wrenn-cp:", err)
		os.Exit(1)
	}
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	switch args[0] {
	case "serve":
		cfg, err := loadConfig(getenv)
		if err != nil {
			return err
		}
		log, err := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, log, nil)
	case "migrate":
		if len(args) != 2 {
			return errors.New("usage: wrenn-cp migrate up|down|status")
		}
		cmd, err := db.ParseCommand(args[1])
		if err != nil {
			return err
		}
		st, err := openStore(ctx, getenv, stderr)
		if err != nil {
			return err
		}
		defer st.Close()
		return db.MigratePool(ctx, st.Pool(), cmd, db.WithOutput(stdout))
	case "keys":
		return keys(ctx, args[1:], getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func openStore(ctx context.Context, getenv func(string) string, stderr io.Writer) (*store.Store, error) {
	dsn := getenv("DATABASE_URL")
	if dsn == "" {
		return nil, errors.New("DATABASE_URL is required")
	}
	return store.Open(ctx, dsn, slog.New(slog.NewTextHandler(stderr, nil)))
}

func keys(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		return errors.New("usage: wrenn-cp keys create --owner X [--admin] [--name N]")
	}
	fs := flag.NewFlagSet("keys create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	owner := fs.String("owner", "", "owner ID (required)")
	admin := fs.Bool("admin", false, "admin key")
	name := fs.String("name", "", "display name")
	asJSON := fs.Bool("json", false, "print the key record as JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	st, err := openStore(ctx, getenv, stderr)
	if err != nil {
		return err
	}
	defer st.Close()
	k, err := api.NewKey(ctx, st, api.CreateKeyRequest{OwnerID: *owner, Name: *name, Admin: *admin})
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(k)
	}
	fmt.Fprintln(stdout, k.Key)
	return nil
}
