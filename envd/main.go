// Command envd is Wrenn's guest agent. It runs as PID 1 inside every sandbox
// microVM (or as a plain process for development and tests) and serves E2B's
// envd protocol: the process and filesystem Connect services plus the plain
// HTTP routes, on TCP, vsock and a virtio-serial channel at once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/envd/internal/initsys"
	"github.com/wrenn-dev/envd/internal/reaper"
	"github.com/wrenn-dev/envd/internal/server"
	"github.com/wrenn-dev/envd/internal/state"
	"github.com/wrenn-dev/envd/internal/transport"
)

// shutdownGrace is how long processes get between SIGTERM and SIGKILL when
// the VM powers off.
const shutdownGrace = 3 * time.Second

// commit is set at build time with -ldflags "-X main.commit=...".
var commit = "dev"

type options struct {
	listenTCP   string
	listenVsock uint
	serialName  string
	forceInit   bool
	verbose     bool
	maxUpload   int64
	version     bool
}

func main() {
	pid1 := initsys.IsPID1()
	var o options
	defTCP, defVsock, defSerial := "127.0.0.1:49983", uint(0), ""
	if pid1 {
		defTCP, defVsock, defSerial = "0.0.0.0:49983", 49983, transport.DefaultSerialName
	}
	flag.StringVar(&o.listenTCP, "listen-tcp", defTCP, "TCP address to serve on (empty: none)")
	flag.UintVar(&o.listenVsock, "listen-vsock", defVsock, "vsock port to serve on (0: none)")
	flag.StringVar(&o.serialName, "listen-serial", defSerial, "virtio-serial port name or device path for the multiplexed host channel (empty: none)")
	flag.BoolVar(&o.forceInit, "init", false, "do PID 1 set-up (mounts, network, hostname) even when not PID 1")
	flag.BoolVar(&o.verbose, "verbose", false, "debug logging")
	flag.Int64Var(&o.maxUpload, "max-upload-bytes", 0, "cap on one POST /files body (0: no cap)")
	flag.BoolVar(&o.version, "version", false, "print the version and exit")
	// E2B's envd flags, accepted so its tooling can start ours.
	flag.Bool("isnotfc", false, "ignored (E2B compatibility)")
	port := flag.Int("port", 0, "E2B compatibility: same as -listen-tcp 0.0.0.0:<port>")
	flag.Parse()
	if o.version {
		fmt.Printf("envd %s (%s)\n", server.Version, commit)
		return
	}
	if *port != 0 {
		o.listenTCP = fmt.Sprintf("0.0.0.0:%d", *port)
	}

	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	err := run(log, o, pid1 || o.forceInit)
	if err == nil {
		return
	}
	log.Error("envd stopped", "err", err)
	if pid1 {
		// PID 1 must never exit: the kernel would panic. Power off instead.
		_ = initsys.Shutdown(log, shutdownGrace, false)
	}
	os.Exit(1)
}

func run(log *slog.Logger, o options, asInit bool) error {
	if asInit {
		if err := initsys.Setup(context.Background(), log, ""); err != nil {
			log.Error("init set-up incomplete", "err", err)
		}
	}
	rp := reaper.New()
	cfg := server.Config{Log: log, State: state.New(), Reaper: rp, MaxUploadBytes: o.maxUpload}
	if asInit {
		cfg.SetClock = initsys.SetClock
		cfg.SetHostname = func(h string) error { return unix.Sethostname([]byte(h)) }
		cfg.Reseed = initsys.Reseed
	}
	srv := server.New(cfg)
	defer srv.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGPWR)
	defer stop()

	var listeners []net.Listener
	if o.listenTCP != "" {
		l, err := transport.ListenTCP(o.listenTCP)
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
	}
	if o.listenVsock != 0 {
		l, err := transport.ListenVsock(uint32(o.listenVsock))
		if err != nil {
			log.Warn("vsock unavailable", "port", o.listenVsock, "err", err)
		} else {
			listeners = append(listeners, l)
		}
	}
	if o.serialName != "" {
		l, err := transport.ListenSerial(ctx, log, o.serialName)
		if err != nil {
			log.Warn("virtio-serial channel unavailable", "port", o.serialName, "err", err)
		} else {
			listeners = append(listeners, l)
		}
	}
	if len(listeners) == 0 {
		return errors.New("no listener could be opened")
	}

	hs := server.NewHTTPServer(srv.Handler(), log)
	errc := make(chan error, len(listeners))
	for _, l := range listeners {
		log.Info("envd serving", "addr", l.Addr().String(), "version", server.Version)
		go func() { errc <- hs.Serve(l) }()
	}
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	if asInit {
		log.Info("termination signal: powering off")
		srv.Close()
		return initsys.Shutdown(log, shutdownGrace, false)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return ignoreClosed(hs.Shutdown(sctx))
}

func ignoreClosed(err error) error {
	if err == nil || errors.Is(err, http.ErrServerClosed) || strings.Contains(err.Error(), "use of closed") {
		return nil
	}
	return err
}
