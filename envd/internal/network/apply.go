package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// linkWait bounds how long Configure waits for the device to appear (the
// virtio-net driver may still be probing when envd starts).
const linkWait = 10 * time.Second

// LinkUp sets the named interface up. It is idempotent.
func LinkUp(name string) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	c, err := dialRoute()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.setLinkUp(ifi.Index); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// Configure brings cfg.Device up, gives it cfg.Addr and, when cfg.Gateway is
// set, installs the default route through it. Every step replaces what is
// there, so calling it twice is safe. It waits for the device to exist until
// ctx ends or linkWait passes.
func Configure(ctx context.Context, log *slog.Logger, cfg Config) error {
	if !cfg.Addr.IsValid() {
		return errors.New("configure network: no address")
	}
	ifi, err := waitLink(ctx, cfg.Device)
	if err != nil {
		return err
	}
	c, err := dialRoute()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.setLinkUp(ifi.Index); err != nil {
		return fmt.Errorf("set %s up: %w", cfg.Device, err)
	}
	if err := c.replaceAddr(ifi.Index, cfg.Addr); err != nil {
		return fmt.Errorf("add %s to %s: %w", cfg.Addr, cfg.Device, err)
	}
	if cfg.Gateway.IsValid() {
		onlink := !cfg.Addr.Masked().Contains(cfg.Gateway)
		if err := c.replaceDefaultRoute(ifi.Index, cfg.Gateway, onlink); err != nil {
			return fmt.Errorf("default route via %s: %w", cfg.Gateway, err)
		}
	}
	log.Info("network configured", "device", cfg.Device, "addr", cfg.Addr.String(), "gateway", cfg.Gateway.String())
	return nil
}

func waitLink(ctx context.Context, name string) (*net.Interface, error) {
	ctx, cancel := context.WithTimeout(ctx, linkWait)
	defer cancel()
	for {
		ifi, err := net.InterfaceByName(name)
		if err == nil {
			return ifi, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s: %w", name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WriteResolvConf replaces path with one `nameserver` line per server. It
// writes a temporary file and renames it over path, so a symlink at path is
// replaced rather than followed.
func WriteResolvConf(path string, servers []netip.Addr) error {
	if len(servers) == 0 {
		return nil
	}
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".resolv.conf.*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(b.String()); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
