// Command fake-firecracker is a stand-in for the firecracker binary in tests
// on machines that cannot run Firecracker. It takes the firecracker flags
// that matter, serves the same REST API with the same validation (package
// internal/vm/firecracker/fakefc), and plays the guest with a real envd
// started as a host process (--envd or $FAKE_FC_ENVD) reached through the
// hybrid-vsock UDS. It does not run a kernel and cannot snapshot memory.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fakefc"
)

func main() {
	fs := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	apiSock := fs.String("api-sock", "/run/firecracker.socket", "path of the API socket")
	id := fs.String("id", "anonymous-instance", "microVM id")
	configFile := fs.String("config-file", "", "JSON configuration; the VM starts without API calls")
	noAPI := fs.Bool("no-api", false, "do not serve the API (needs --config-file)")
	logPath := fs.String("log-path", "", "log file or FIFO (must exist)")
	level := fs.String("level", "", "log level: Error, Warning, Info, Debug, Trace, Off")
	metricsPath := fs.String("metrics-path", "", "metrics file or FIFO (must exist)")
	maxPayload := fs.Int64("http-api-max-payload-size", 51200, "request body limit in bytes")
	mmdsLimit := fs.Int64("mmds-size-limit", 0, "MMDS data store limit in bytes (default: the payload limit)")
	envd := fs.String("envd", os.Getenv("FAKE_FC_ENVD"), "envd binary that plays the guest (default $FAKE_FC_ENVD)")
	envdArgs := fs.String("envd-args", os.Getenv("FAKE_FC_ENVD_ARGS"), "extra envd arguments, space separated (default $FAKE_FC_ENVD_ARGS)")
	verbose := fs.Bool("verbose", os.Getenv("FAKE_FC_VERBOSE") != "", "debug logs on stderr")
	version := fs.Bool("version", false, "print the version and exit")
	// Accepted and ignored, as the real binary has them.
	fs.Bool("boot-timer", false, "ignored")
	fs.Bool("no-seccomp", false, "ignored")
	fs.Bool("enable-pci", false, "ignored")
	fs.String("seccomp-filter", "", "ignored")
	fs.String("start-time-us", "", "ignored (set by the jailer)")
	fs.String("start-time-cpu-us", "", "ignored (set by the jailer)")
	fs.String("parent-cpu-time-us", "", "ignored (set by the jailer)")
	fs.Bool("show-level", false, "ignored")
	fs.Bool("show-log-origin", false, "ignored")
	fs.String("module", "", "ignored")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(1)
	}
	if *version {
		fmt.Printf("Firecracker v%s (fake)\n", fakefc.Version)
		return
	}
	lvl := slog.LevelInfo
	if *verbose {
		lvl = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	if *noAPI && *configFile == "" {
		log.Error("--no-api needs --config-file")
		os.Exit(1)
	}
	vmm := fakefc.New(fakefc.Config{
		APISock: *apiSock, ID: *id, LogPath: *logPath, Level: *level, MetricsPath: *metricsPath,
		EnvdPath: *envd, EnvdArgs: strings.Fields(*envdArgs),
		MaxPayload: *maxPayload, MMDSLimit: *mmdsLimit, Log: log,
	})
	os.Exit(run(log, vmm, *configFile, *noAPI))
}

func run(log *slog.Logger, vmm *fakefc.VMM, configFile string, noAPI bool) int {
	defer vmm.Close()
	if err := vmm.Start(); err != nil {
		log.Error("start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	if configFile != "" {
		if err := vmm.ApplyConfigFile(configFile); err != nil {
			log.Error("config file", "err", err)
			return 1
		}
	}
	if noAPI {
		select {
		case <-ctx.Done():
		case <-vmm.Done():
		}
		return vmm.ExitCode()
	}
	if err := vmm.Serve(ctx); err != nil {
		log.Error("vmm stopped", "err", err)
		return 1
	}
	return vmm.ExitCode()
}
