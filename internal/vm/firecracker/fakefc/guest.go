package fakefc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// guest is the fake VM's guest: a real envd running as a host process on a
// private loopback port. Pausing the VM stops envd and everything it
// started (SIGSTOP), so a paused fake VM really stops answering.
type guest struct {
	pid    int
	port   int
	exited chan struct{}
	killed atomic.Bool // we ended it; not a guest shutdown
}

// startGuest starts envd on a free 127.0.0.1 port. onExit runs when envd
// ends by itself (not through kill).
//
// envd is started from a goroutine locked to its OS thread with
// Pdeathsig=SIGKILL: the thread lives as long as envd, so if the fake VMM is
// killed (SIGKILL, the driver's normal way to destroy a VM) the kernel kills
// envd too, as a real guest dies with its VMM.
func startGuest(log *slog.Logger, envdPath string, extraArgs []string, onExit func(*guest)) (*guest, error) {
	if err := loopbackUp(); err != nil {
		log.Warn("cannot bring up lo: the bridge to envd needs loopback", "err", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("pick envd port: %w", err)
	}
	args := append([]string{"-listen-tcp", "127.0.0.1:" + strconv.Itoa(port)}, extraArgs...)
	cmd := exec.Command(envdPath, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = append(os.Environ(), "WRENN_FAKE_FC_GUEST=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	g := &guest{port: port, exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine returns (after envd ended)
		// the thread is discarded instead of being reused.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		g.pid = cmd.Process.Pid
		started <- nil
		_ = cmd.Wait()
		close(g.exited)
		if !g.killed.Load() && onExit != nil {
			onExit(g)
		}
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start envd %s: %w", envdPath, err)
	}
	log.Info("fake guest started", "envd_pid", g.pid, "envd_port", port)
	return g, nil
}

// loopbackUp sets lo up. The fake VMM may run in a sandbox's fresh network
// namespace (as Firecracker does, to reach its TAP), where lo starts down;
// its envd and bridge live on 127.0.0.1 in that namespace. A real guest
// needs nothing of the kind: this is the fake's plumbing.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	flags := ifr.Uint16()
	if flags&unix.IFF_UP != 0 {
		return nil
	}
	ifr.SetUint16(flags | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// signalTree sends sig to envd and every descendant. Children that moved to
// their own session (a PTY shell) are found through their parent links.
func (g *guest) signalTree(sig syscall.Signal) error {
	select {
	case <-g.exited:
		return errors.New("guest has exited")
	default:
	}
	var firstErr error
	for _, pid := range descendants(g.pid) {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

func (g *guest) stop() error { return g.signalTree(syscall.SIGSTOP) }
func (g *guest) cont() error { return g.signalTree(syscall.SIGCONT) }

// terminate asks envd to shut down (the fake's Ctrl-Alt-Del).
func (g *guest) terminate() {
	_ = syscall.Kill(g.pid, syscall.SIGTERM)
}

// kill ends envd and its descendants and waits for envd to be reaped.
func (g *guest) kill() {
	g.killed.Store(true)
	_ = g.signalTree(syscall.SIGKILL)
	select {
	case <-g.exited:
	case <-time.After(5 * time.Second):
	}
}

// descendants returns root and every process below it, parents first.
func descendants(root int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(pid); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// parentOf reads the ppid from /proc/<pid>/stat (the field after the
// parenthesised command name, which may itself contain spaces and ')').
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}
