package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// process is one QEMU process: either a child this agent started (reaped
// through exec.Cmd.Wait) or one adopted after an agent restart (watched
// through a pidfd, reaped by whoever is its parent now). QEMU runs in its
// own session, so the agent's death or a signal to the agent's process
// group does not reach it.
type process struct {
	pid    int
	exited chan struct{}

	mu      sync.Mutex
	waitErr error
}

// startProcess starts bin with args in a new session, stdin from
// /dev/null and stdout+stderr appended to logPath. When netns is set the
// process starts inside that network namespace.
func startProcess(bin string, args []string, logPath, netns string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open qemu log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Setsid: own session and process group, no controlling terminal. No
	// Pdeathsig: the VMM must outlive the agent so it can be reattached.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if netns == "" {
		err = cmd.Start()
	} else {
		err = startInNetns(cmd, netns)
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.exited)
	}()
	return p, nil
}

// startInNetns starts cmd from an OS thread switched into the namespace at
// path; the child inherits the thread's namespace. The thread is switched
// back afterwards, or, if that fails, left locked so the runtime discards it.
func startInNetns(cmd *exec.Cmd, path string) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		startErr := cmd.Start()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the goroutine exits and the thread dies with it.
			errc <- errors.Join(startErr, fmt.Errorf("leave netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- startErr
	}()
	return <-errc
}

// adoptProcess watches a process this agent did not start.
func adoptProcess(pid int) (*process, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	p := &process{pid: pid, exited: make(chan struct{})}
	go func() {
		defer unix.Close(fd)
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if err == nil || !errors.Is(err, unix.EINTR) {
				break
			}
		}
		close(p.exited)
	}()
	return p, nil
}

// alive reports whether the process has not exited yet.
func (p *process) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// exitErr is the child's exit status once it has exited (nil for adopted
// processes and clean exits).
func (p *process) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// kill sends SIGKILL to the process's whole group (QEMU and any helper it
// forked, such as the `cat` of an exec: migration) and waits for the exit.
func (p *process) kill(ctx context.Context) error {
	if !p.alive() {
		return nil
	}
	_ = unix.Kill(-p.pid, unix.SIGKILL)
	_ = unix.Kill(p.pid, unix.SIGKILL)
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for qemu %d to die: %w", p.pid, ctx.Err())
	}
}

// isOurQEMU reports whether pid is a live QEMU process started for the VM
// with this id, guarding Reattach against a recycled pid.
func isOurQEMU(pid int, id string) bool {
	if pid <= 0 {
		return false
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(raw) == 0 {
		return false
	}
	argv := strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00")
	if !strings.HasPrefix(filepath.Base(argv[0]), "qemu-system") {
		return false
	}
	want := "guest=" + id + ","
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == "-name" && strings.HasPrefix(argv[i+1], want) {
			return true
		}
	}
	return false
}
