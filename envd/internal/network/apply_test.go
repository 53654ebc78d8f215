package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// inNewNetns runs fn on a locked OS thread moved into a fresh network
// namespace. The thread is never unlocked, so it exits with the goroutine
// and the namespace (with every interface the test made) goes with it.
// Commands started from fn inherit the namespace (they fork from this thread).
func inNewNetns(t *testing.T, fn func() error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip to create a veth pair and inspect the result")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func ipJSON(args ...string) ([]map[string]any, error) {
	out, err := exec.Command("ip", append([]string{"-j"}, args...)...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip %v: %w: %s", args, err, out)
	}
	var v []map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("ip %v: %w: %s", args, err, out)
	}
	return v, nil
}

func run(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %w: %s", args, err, out)
	}
	return nil
}

func hasFlag(link map[string]any, flag string) bool {
	fl, _ := link["flags"].([]any)
	return slices.Contains(fl, any(flag))
}

func TestConfigureInNetns(t *testing.T) {
	tests := []struct {
		name       string
		ip         string
		wantOnlink bool
	}{
		{name: "gateway in subnet", ip: "10.213.0.2::10.213.0.1:255.255.255.252::eth0:off"},
		{name: "gateway outside subnet", ip: "10.213.0.2::10.213.9.1:255.255.255.255::eth0:off", wantOnlink: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseKernelIP(tt.ip)
			if err != nil {
				t.Fatal(err)
			}
			log := slog.New(slog.NewTextHandler(t.Output(), nil))
			inNewNetns(t, func() error {
				if err := run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"); err != nil {
					return err
				}
				if err := run("ip", "link", "set", "peer0", "up"); err != nil {
					return err
				}
				// Twice: the second call must be a no-op, not an EEXIST.
				for i := range 2 {
					if err := Configure(context.Background(), log, cfg); err != nil {
						return fmt.Errorf("configure #%d: %w", i+1, err)
					}
				}
				links, err := ipJSON("addr", "show", "dev", "eth0")
				if err != nil {
					return err
				}
				if len(links) != 1 || !hasFlag(links[0], "UP") {
					return fmt.Errorf("eth0 not up: %v", links)
				}
				var addrs []string
				for _, ai := range links[0]["addr_info"].([]any) {
					m := ai.(map[string]any)
					if m["family"] == "inet" {
						addrs = append(addrs, fmt.Sprintf("%v/%v", m["local"], m["prefixlen"]))
					}
				}
				if !slices.Equal(addrs, []string{cfg.Addr.String()}) {
					return fmt.Errorf("eth0 inet addresses %v, want [%s]", addrs, cfg.Addr)
				}
				routes, err := ipJSON("route", "show", "default")
				if err != nil {
					return err
				}
				if len(routes) != 1 {
					return fmt.Errorf("want one default route, got %v", routes)
				}
				r := routes[0]
				if r["gateway"] != cfg.Gateway.String() || r["dev"] != "eth0" {
					return fmt.Errorf("default route %v, want via %s dev eth0", r, cfg.Gateway)
				}
				if got := hasFlag(r, "onlink"); got != tt.wantOnlink {
					return fmt.Errorf("default route onlink = %v, want %v (%v)", got, tt.wantOnlink, r)
				}
				return nil
			})
		})
	}
}

func TestLinkUpLoopbackInNetns(t *testing.T) {
	inNewNetns(t, func() error {
		if err := LinkUp("lo"); err != nil {
			return err
		}
		links, err := ipJSON("addr", "show", "dev", "lo")
		if err != nil {
			return err
		}
		if len(links) != 1 || !hasFlag(links[0], "UP") {
			return fmt.Errorf("lo not up: %v", links)
		}
		if err := LinkUp("nosuchdev0"); err == nil {
			return errors.New("LinkUp of a missing device succeeded")
		}
		return nil
	})
}

func TestConfigureMissingDeviceTimesOut(t *testing.T) {
	inNewNetns(t, func() error {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		cfg := Config{Device: "eth7", Addr: netip.MustParsePrefix("10.213.0.2/30")}
		if err := Configure(ctx, slog.New(slog.DiscardHandler), cfg); err == nil {
			return errors.New("Configure on a missing device succeeded")
		}
		return nil
	})
}

func TestWriteResolvConf(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	if err := os.WriteFile(target, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "resolv.conf")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	servers := []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("2001:db8::53")}
	if err := WriteResolvConf(path, servers); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "nameserver 1.1.1.1\nnameserver 2001:db8::53\n"; string(got) != want {
		t.Fatalf("resolv.conf = %q, want %q", got, want)
	}
	if fi, _ := os.Lstat(path); fi.Mode()&os.ModeSymlink != 0 {
		t.Fatal("symlink was followed, not replaced")
	}
	if old, _ := os.ReadFile(target); string(old) != "old\n" {
		t.Fatalf("symlink target modified: %q", old)
	}
	if err := WriteResolvConf(filepath.Join(dir, "missing", "resolv.conf"), servers); err == nil {
		t.Fatal("want an error for a missing directory")
	}
}
