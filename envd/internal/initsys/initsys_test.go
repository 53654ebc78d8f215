package initsys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const stdioChildEnv = "INITSYS_TEST_STDIO_CONSOLE"

func TestMain(m *testing.M) {
	// Re-exec'd child for TestEnsureStdio: fds 0-2 are /dev/null; point
	// them at the console given in the environment and write through them.
	if console := os.Getenv(stdioChildEnv); console != "" {
		if err := ensureStdio(console); err != nil {
			os.Exit(3)
		}
		unix.Write(1, []byte("via-stdout\n"))
		unix.Write(2, []byte("via-stderr\n"))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// inNewUTSNetns runs fn on a locked thread in fresh UTS and network
// namespaces, so hostname and interfaces it sets stay off the host. The
// thread is never unlocked and dies, with its namespaces, when fn returns.
func inNewUTSNetns(t *testing.T, fn func() error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create UTS and network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip to create a veth pair and inspect the result")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWUTS | unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestConfigureInNamespaces(t *testing.T) {
	tests := []struct {
		name       string
		cmdline    string
		wantHost   string
		wantResolv string
		wantAddr   string
		wantErr    bool
	}{
		{
			name:       "firecracker style with wrenn params",
			cmdline:    "console=ttyS0 ip=10.213.0.2::10.213.0.1:255.255.255.252::eth0:off wrenn.hostname=sbx-1 wrenn.dns=1.1.1.1,8.8.4.4",
			wantHost:   "sbx-1",
			wantResolv: "nameserver 1.1.1.1\nnameserver 8.8.4.4\n",
			wantAddr:   "10.213.0.2/30",
		},
		{
			name:       "dns from ip= fields, default hostname",
			cmdline:    "ip=10.213.0.6:10.213.0.5:10.213.0.5:30::eth0:off:10.213.0.5",
			wantHost:   DefaultHostname,
			wantResolv: "nameserver 10.213.0.5\n",
			wantAddr:   "10.213.0.6/30",
		},
		{
			name:     "no network on the command line",
			cmdline:  "ip=off quiet",
			wantHost: DefaultHostname,
		},
		{
			name:     "bad ip= is reported, the rest still applied",
			cmdline:  "ip=10.0.0.999::10.0.0.1:24 wrenn.hostname=still-set",
			wantHost: "still-set",
			wantErr:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c := configurer{
				log:        slog.New(slog.NewTextHandler(t.Output(), nil)),
				resolvConf: filepath.Join(dir, "resolv.conf"),
				hosts:      filepath.Join(dir, "hosts"),
			}
			inNewUTSNetns(t, func() error {
				if out, err := exec.Command("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0").CombinedOutput(); err != nil {
					return fmt.Errorf("veth: %w: %s", err, out)
				}
				err := c.configure(context.Background(), ParseCmdline(tt.cmdline))
				if (err != nil) != tt.wantErr {
					return fmt.Errorf("configure error = %v, want error %v", err, tt.wantErr)
				}
				var u unix.Utsname
				if err := unix.Uname(&u); err != nil {
					return err
				}
				if got := unix.ByteSliceToString(u.Nodename[:]); got != tt.wantHost {
					return fmt.Errorf("hostname %q, want %q", got, tt.wantHost)
				}
				hosts, err := os.ReadFile(c.hosts)
				if err != nil || !strings.Contains(string(hosts), "localhost") || !strings.Contains(string(hosts), tt.wantHost) {
					return fmt.Errorf("hosts file %q (%v)", hosts, err)
				}
				resolv, _ := os.ReadFile(c.resolvConf)
				if string(resolv) != tt.wantResolv {
					return fmt.Errorf("resolv.conf %q, want %q", resolv, tt.wantResolv)
				}
				out, err := exec.Command("ip", "-j", "-4", "addr", "show").Output()
				if err != nil {
					return err
				}
				var links []struct {
					Ifname   string   `json:"ifname"`
					Flags    []string `json:"flags"`
					AddrInfo []struct {
						Local     string `json:"local"`
						Prefixlen int    `json:"prefixlen"`
					} `json:"addr_info"`
				}
				if err := json.Unmarshal(out, &links); err != nil {
					return err
				}
				got := map[string][]string{}
				for _, l := range links {
					for _, a := range l.AddrInfo {
						got[l.Ifname] = append(got[l.Ifname], fmt.Sprintf("%s/%d", a.Local, a.Prefixlen))
					}
				}
				if fmt.Sprint(got["lo"]) != "[127.0.0.1/8]" {
					return fmt.Errorf("lo not up with 127.0.0.1: %v", got)
				}
				if want := tt.wantAddr; (want == "" && len(got["eth0"]) != 0) || (want != "" && fmt.Sprint(got["eth0"]) != "["+want+"]") {
					return fmt.Errorf("eth0 addresses %v, want %q", got["eth0"], want)
				}
				return nil
			})
		})
	}
}

func TestEnsureHostsKeepsExisting(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(p, []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ensureHosts(p, "x"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "mine\n" {
		t.Fatalf("existing hosts file overwritten: %q", b)
	}
	if err := ensureHosts(filepath.Join(t.TempDir(), "no", "hosts"), "x"); err == nil {
		t.Fatal("want an error for an unwritable location")
	}
}

// openPty returns a pty master and the path of its slave.
func openPty(t *testing.T) (*os.File, string) {
	t.Helper()
	// Raw fd work first, then os.NewFile: (*os.File).Fd would switch the
	// master to blocking mode and defeat read deadlines.
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Skipf("no pty support: %v", err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	m := os.NewFile(uintptr(mfd), "ptmx")
	t.Cleanup(func() { m.Close() })
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

func TestEnsureStdio(t *testing.T) {
	master, slave := openPty(t)
	// The child starts with fds 0-2 on /dev/null, as the Go runtime leaves
	// them when the kernel found no console.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), stdioChildEnv+"="+slave)
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v", err)
	}
	var got bytes.Buffer
	buf := make([]byte, 256)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(got.String(), "via-stderr") && time.Now().Before(deadline) {
		_ = master.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _ := master.Read(buf)
		got.Write(buf[:n])
	}
	if !strings.Contains(got.String(), "via-stdout") || !strings.Contains(got.String(), "via-stderr") {
		t.Fatalf("console received %q, want both stdout and stderr lines", got.String())
	}

	// With stdio already on a terminal nothing is reopened: a console
	// path that does not exist must not even be opened.
	sf, err := os.OpenFile(slave, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	cmd = exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), stdioChildEnv+"="+filepath.Join(t.TempDir(), "missing-console"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = sf, sf, sf
	if err := cmd.Run(); err != nil {
		t.Fatalf("child with healthy stdio: %v (ensureStdio tried to reopen)", err)
	}
}

func TestPowerRefusesOutsidePID1(t *testing.T) {
	if IsPID1() {
		t.Skip("the test binary is PID 1; calling these would power the machine off")
	}
	for name, fn := range map[string]func() error{
		"PowerOff": PowerOff,
		"Reboot":   Reboot,
		"Shutdown": func() error { return Shutdown(slog.New(slog.DiscardHandler), time.Millisecond, false) },
	} {
		if err := fn(); !errors.Is(err, ErrNotPID1) {
			t.Errorf("%s() = %v, want ErrNotPID1", name, err)
		}
	}
}

func TestReseedWritesSeed(t *testing.T) {
	p := filepath.Join(t.TempDir(), "urandom")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A regular file rejects the ioctl with ENOTTY, which reseed tolerates.
	if err := reseed(p, []byte("seed-bytes")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "seed-bytes" {
		t.Fatalf("seed not written: %q", b)
	}
	if err := reseed(filepath.Join(t.TempDir(), "missing"), []byte("x")); err == nil {
		t.Fatal("want an error for a missing device")
	}
}
