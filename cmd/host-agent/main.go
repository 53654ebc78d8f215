// Command host-agent runs the Wrenn host agent: one per machine, it owns
// the machine's sandboxes (VMs, networks, disks, cgroups) and serves the
// control plane over gRPC with mTLS. Configuration comes from AGENT_*
// environment variables (internal/config).
//
//	host-agent [serve]                 run the agent
//	host-agent certs -dir DIR [-hosts a,b]  write a dev CA, server and client certificates
//	host-agent version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/wrenn-dev/wrenn-sandbox/internal/config"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent"
)

// commit is set at build time (-ldflags -X main.commit=...).
var commit = "dev"

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "certs":
		err = certs(args)
	case "version":
		fmt.Println(commit)
	default:
		err = fmt.Errorf("unknown command %q (serve, certs, version)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "host-agent:", err)
		os.Exit(1)
	}
}

func newLogger(cfg config.Agent) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.LoadAgent(os.Getenv)
	if err != nil {
		return err
	}
	log := newLogger(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := hostagent.New(ctx, cfg, commit, log)
	if err != nil {
		return err
	}
	rep := a.RecoverReport()
	log.Info("recovery", "reattached", rep.Reattached, "released", rep.Released, "hibernated", rep.Hibernated, "failed", rep.Failed)
	err = a.Serve(ctx, nil)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func certs(args []string) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	dir := fs.String("dir", "certs", "output directory")
	hosts := fs.String("hosts", "", "extra server names or IPs, comma-separated (localhost and 127.0.0.1 are always in)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var hs []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hs = append(hs, h)
		}
	}
	dc, err := config.WriteDevCerts(*dir, hs)
	if err != nil {
		return err
	}
	fmt.Printf("AGENT_TLS_CA=%s\nAGENT_TLS_CERT=%s\nAGENT_TLS_KEY=%s\n", dc.Server.CA, dc.Server.Cert, dc.Server.Key)
	fmt.Printf("# control plane client: ca %s, cert %s, key %s\n", dc.Client.CA, dc.Client.Cert, dc.Client.Key)
	return nil
}
