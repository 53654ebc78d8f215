package firecracker

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proc is a VMM process we watch: our own child (waited for) or one found
// by pid after an agent restart (watched through a pidfd).
type proc struct {
	pid    int
	exited chan struct{}
}

// nsSetup runs on the locked OS thread the VMM is forked from, after the
// thread left the agent's namespaces; the child inherits what it sets up.
type nsSetup struct {
	netNS      string            // path of a network namespace to join
	privateMnt bool              // new mount namespace, mounts private
	driveDir   string            // with privateMnt: tmpfs mounted here ...
	links      map[string]string // ... holding these symlinks (name -> target)
}

func (s nsSetup) needed() bool { return s.netNS != "" || s.privateMnt }

// apply moves the calling (locked) thread into the namespaces.
func (s nsSetup) apply() error {
	if s.netNS != "" {
		fd, err := unix.Open(s.netNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open netns %s: %w", s.netNS, err)
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		_ = unix.Close(fd)
		if err != nil {
			return fmt.Errorf("enter netns %s: %w", s.netNS, err)
		}
	}
	if s.privateMnt {
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("unshare mount namespace: %w", err)
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make mounts private: %w", err)
		}
		if err := unix.Mount("wrenn-fc", s.driveDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=64k,mode=0755"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", s.driveDir, err)
		}
		for name, target := range s.links {
			if err := unix.Symlink(target, s.driveDir+"/"+name); err != nil {
				return fmt.Errorf("link %s: %w", name, err)
			}
		}
	}
	return nil
}

// startProc starts argv in its own process group (so Destroy can kill what
// it spawned), with stdout and stderr appended to outPath. When ns is
// needed the fork happens on a dedicated OS thread that first enters the
// namespaces; that thread is then discarded, never returned to the Go
// scheduler. The process is deliberately not tied to ctx: a VM outlives
// the request that created it.
func startProc(argv []string, env []string, outPath string, ns nsSetup) (*proc, error) {
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open console log: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	start := func() error {
		if err := ns.apply(); err != nil {
			return err
		}
		return cmd.Start()
	}
	if ns.needed() {
		err = onThrowawayThread(start)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &proc{pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// onThrowawayThread runs fn on an OS thread that is discarded afterwards,
// so namespace changes fn makes never leak into the agent. The process's
// main thread is avoided: Go cannot discard it (it would be wedged, and
// /proc/self/ns/* and /proc/self/mountinfo, which describe the main
// thread, would then show the VM's namespaces).
func onThrowawayThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// On the main thread: keep it busy (locked, blocked) so the
			// retry must run elsewhere, then give it back unchanged.
			errc <- onThrowawayThread(fn)
			runtime.UnlockOSThread()
			return
		}
		errc <- fn() // never unlocked: the thread ends with this goroutine
	}()
	return <-errc
}

// watchPID follows a process that is not our child, through a pidfd.
func watchPID(pid int) (*proc, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, err
		}
		return watchPIDPolling(pid), nil
	}
	f := os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid))
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return watchPIDPolling(pid), nil
	}
	p := &proc{pid: pid, exited: make(chan struct{})}
	go func() {
		defer f.Close()
		defer close(p.exited)
		_ = rc.Read(func(fd uintptr) bool {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 0)
			return err != nil || n > 0 // readable: the process ended
		})
	}()
	return p, nil
}

func watchPIDPolling(pid int) *proc {
	p := &proc{pid: pid, exited: make(chan struct{})}
	go func() {
		for alive(pid) {
			time.Sleep(200 * time.Millisecond)
		}
		close(p.exited)
	}()
	return p
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// cmdlineHas reports whether pid's command line contains arg (guards
// Reattach against a reused pid).
func cmdlineHas(pid int, arg string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	for _, a := range strings.Split(string(b), "\x00") {
		if a == arg || strings.HasSuffix(a, "="+arg) {
			return true
		}
	}
	return false
}

// killGroup sends SIGKILL to pid's process group when pid leads it (we
// start VMMs with Setpgid), else to pid alone.
func killGroup(pid int) {
	if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// waitGroupGone waits until no process is left in process group pgid.
func waitGroupGone(pgid int, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *proc) done() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}
