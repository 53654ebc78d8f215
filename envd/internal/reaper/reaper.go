// Package reaper owns every child process envd starts and reaps every child
// it inherits. envd runs as PID 1 (or as a child subreaper outside a VM), so
// orphans are re-parented to it; one loop calls wait4(-1) and hands each exit
// status to whoever started that pid, and discards the rest.
//
// Nothing else in envd may call wait on a child: start processes through
// Reaper.Start, never with os/exec (whose Wait would race with this loop).
package reaper

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Exit is how a child ended.
type Exit struct {
	Status unix.WaitStatus
}

// Code is the exit code, or -1 when the process was killed by a signal.
func (e Exit) Code() int {
	if e.Status.Exited() {
		return e.Status.ExitStatus()
	}
	return -1
}

// Reaper is safe for concurrent use. Create it with New before starting any
// child.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]chan Exit
	sigs    chan os.Signal
	done    chan struct{}
}

// New starts the reaping loop. It also makes this process a child subreaper,
// so grandchildren whose parents exit are reaped here too.
func New() *Reaper {
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	r := &Reaper{
		waiters: map[int]chan Exit{},
		sigs:    make(chan os.Signal, 16),
		done:    make(chan struct{}),
	}
	signal.Notify(r.sigs, unix.SIGCHLD)
	go r.loop()
	return r
}

// Close stops the loop. Children still running are not touched.
func (r *Reaper) Close() {
	signal.Stop(r.sigs)
	close(r.done)
}

// Start forks and execs argv[0] (an absolute path) with attr and returns the
// pid and a channel that receives the exit exactly once.
func (r *Reaper) Start(argv0 string, argv []string, attr *syscall.ProcAttr) (int, <-chan Exit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(argv0, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan Exit, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}

func (r *Reaper) loop() {
	for {
		select {
		case <-r.done:
			return
		case <-r.sigs:
			r.reapAll()
		}
	}
}

// reapAll collects every child that has exited. The lock is taken after
// wait4 returns, so a pid reaped during Start is already registered.
func (r *Reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		if !ws.Exited() && !ws.Signaled() {
			continue
		}
		r.mu.Lock()
		ch, ok := r.waiters[pid]
		delete(r.waiters, pid)
		r.mu.Unlock()
		if ok {
			ch <- Exit{Status: ws}
		}
	}
}
