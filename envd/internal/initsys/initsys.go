// Package initsys owns what envd does as PID 1 inside a microVM: mounting
// the kernel filesystems, /dev links and console stdio, hostname, loopback
// and static guest network from the kernel command line, resolv.conf, the
// clock and CRNG after a snapshot restore, and a clean power-off on
// SIGTERM. Zombie reaping is internal/reaper's job, not this package's.
//
// Nothing here may run outside a VM: main calls Setup only when IsPID1()
// (or an explicit --init flag), and the power functions refuse to act
// unless the process is PID 1. It imports internal/network and nothing else
// from envd.
package initsys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/envd/internal/network"
)

// Kernel command-line parameters envd reads, besides the kernel's own ip=.
const (
	ParamHostname = "wrenn.hostname" // hostname; default DefaultHostname
	ParamDNS      = "wrenn.dns"      // comma-separated name servers
)

// DefaultHostname is used when the command line names none.
const DefaultHostname = "sandbox"

// DefaultPath is PATH when envd starts with none (the kernel sets none).
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// IsPID1 reports whether this process is init.
func IsPID1() bool { return os.Getpid() == 1 }

// Setup prepares a freshly booted guest: Mount, then Configure with
// cmdline. When cmdline is empty it is read from /proc/cmdline once proc is
// mounted. It does every step it can and returns all failures joined; envd
// should log them and keep serving.
func Setup(ctx context.Context, log *slog.Logger, cmdline string) error {
	var errs []error
	if err := Mount(log); err != nil {
		errs = append(errs, err)
	}
	if cmdline == "" {
		b, err := os.ReadFile("/proc/cmdline")
		if err != nil {
			errs = append(errs, fmt.Errorf("read kernel command line: %w", err))
		}
		cmdline = string(b)
	}
	if err := Configure(ctx, log, cmdline); err != nil {
		errs = append(errs, err)
	}
	if os.Getenv("PATH") == "" {
		_ = os.Setenv("PATH", DefaultPath)
	}
	// Ctrl-Alt-Del now sends SIGINT to init (handled by WatchSignals)
	// instead of an immediate hard reboot.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		log.Warn("disable ctrl-alt-del reboot", "err", err)
	}
	return errors.Join(errs...)
}

// Mount mounts proc, sysfs, devtmpfs, devpts, /dev/shm, /tmp, /run and
// (optionally) cgroup2, skipping any already mounted (an initramfs may
// have moved some in), creates the /dev symlinks and points stdio at the
// console when it is missing.
func Mount(log *slog.Logger) error {
	m := mounter{log: log, root: "/", mountinfo: "/proc/thread-self/mountinfo"}
	var errs []error
	if err := m.mountAll(bootMounts()); err != nil {
		errs = append(errs, err)
	}
	if err := makeDevLinks("/dev"); err != nil {
		errs = append(errs, err)
	}
	if err := ensureStdio("/dev/console"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Configure applies the kernel command line: hostname, loopback up, the
// static `ip=` configuration, and resolv.conf from wrenn.dns (or the ip=
// DNS fields). A read-only /etc is logged, not returned.
func Configure(ctx context.Context, log *slog.Logger, cmdline string) error {
	c := configurer{log: log, resolvConf: "/etc/resolv.conf", hosts: "/etc/hosts"}
	return c.configure(ctx, ParseCmdline(cmdline))
}

type configurer struct {
	log        *slog.Logger
	resolvConf string
	hosts      string
}

func (c configurer) configure(ctx context.Context, cl Cmdline) error {
	var errs []error
	host, err := hostnameFrom(cl)
	if err != nil {
		errs = append(errs, err)
	}
	if err := unix.Sethostname([]byte(host)); err != nil {
		errs = append(errs, fmt.Errorf("set hostname: %w", err))
	}
	if err := ensureHosts(c.hosts, host); err != nil {
		c.log.Warn("hosts file not written", "err", err)
	}
	if err := network.LinkUp("lo"); err != nil {
		errs = append(errs, fmt.Errorf("loopback: %w", err))
	}
	var dns []netip.Addr
	if v, ok := cl.Lookup("ip"); ok {
		cfg, err := network.ParseKernelIP(v)
		switch {
		case errors.Is(err, network.ErrNotStatic):
			c.log.Info("no static network on the command line", "ip", v)
		case err != nil:
			errs = append(errs, err)
		default:
			dns = cfg.DNS
			if err := network.Configure(ctx, c.log, cfg); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if v, ok := cl.Lookup(ParamDNS); ok {
		servers, err := network.ParseDNSList(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ParamDNS, err))
		} else {
			dns = servers
		}
	}
	if err := network.WriteResolvConf(c.resolvConf, dns); err != nil {
		c.log.Warn("resolv.conf not written", "err", err)
	}
	return errors.Join(errs...)
}

// hostnameFrom returns wrenn.hostname, or DefaultHostname when it is
// absent. An invalid value is reported and DefaultHostname is used.
func hostnameFrom(cl Cmdline) (string, error) {
	v, ok := cl.Lookup(ParamHostname)
	if !ok || v == "" {
		return DefaultHostname, nil
	}
	if len(v) > 64 || strings.ContainsAny(v, "/ \t\n\x00") {
		return DefaultHostname, fmt.Errorf("%s=%q is not a valid hostname", ParamHostname, v)
	}
	return v, nil
}

// ensureHosts writes a minimal hosts file if there is none, so that
// "localhost" and the hostname resolve without DNS. An existing file is
// left alone.
func ensureHosts(path, hostname string) error {
	content := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t%s\n", hostname)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
