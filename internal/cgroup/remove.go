package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// pollInterval is how often Delete and Kill look again while waiting for
// the kernel.
const pollInterval = 10 * time.Millisecond

// removeDirs removes group (and any child groups someone made under it) in
// every controller mount, retrying EBUSY until the Manager's timeout.
func (m *Manager) removeDirs(ctx context.Context, group string) error {
	deadline := time.Now().Add(m.timeout)
	for {
		err := removeTrees(m.b.dirs(group))
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return err
		}
		if time.Now().After(deadline) {
			pids, _ := m.b.procs(group)
			if len(pids) > 0 {
				return fmt.Errorf("%w: pids %v", ErrBusy, pids)
			}
			return fmt.Errorf("%w: %w", ErrBusy, err)
		}
		m.log.Debug("cgroup busy, retrying removal", "group", group)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ctx.Err(), err)
		case <-time.After(pollInterval):
		}
	}
}

// removeTrees removes every directory tree in dirs, children first. Only
// directories are removed: cgroup control files vanish with their group.
func removeTrees(dirs []string) error {
	var errs []error
	for _, d := range dirs {
		if err := removeTree(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("rmdir %s: %w", dir, err)
	}
	return nil
}

// listChildren returns the union of the child directory names of dirs,
// sorted. Missing dirs contribute nothing.
func listChildren(dirs []string) ([]string, error) {
	seen := map[string]bool{}
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.IsDir() {
				seen[e.Name()] = true
			}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Kill SIGKILLs every process in the group and waits until it is empty
// (bounded by DeleteTimeout). It is for reconciliation: a group that no
// persisted sandbox owns, or a VMM that would not stop. Processes are
// signalled through a pidfd opened before checking that they are still in
// the group, so a recycled PID is never hit. A missing group is not an
// error. The caller still reaps its own children.
func (m *Manager) Kill(ctx context.Context, h Handle) error {
	h, err := m.check(h)
	if err != nil {
		return err
	}
	if ok, err := m.b.exists(h.Group); err != nil {
		return fmt.Errorf("kill cgroup %s: %w", h.Group, err)
	} else if !ok {
		return nil
	}
	m.log.Info("killing cgroup processes", "sandbox_id", h.SandboxID, "group", h.Group)
	killed := m.b.killAll(h.Group)
	deadline := time.Now().Add(m.timeout)
	for {
		pids, err := m.b.procs(h.Group)
		if err != nil {
			return fmt.Errorf("kill cgroup %s: %w", h.Group, err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill cgroup %s: %w: pids %v", h.Group, ErrBusy, pids)
		}
		if !killed {
			for _, pid := range pids {
				m.signal(h.Group, pid)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kill cgroup %s: %w", h.Group, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// signal sends SIGKILL to pid if, once pinned by a pidfd, it is still a
// member of group. Errors mean the process is already gone.
func (m *Manager) signal(group string, pid int) {
	if pid == os.Getpid() {
		return
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil || !m.b.inGroup(b, group) {
		return
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		m.log.Warn("signal cgroup process", "group", group, "pid", pid, "err", err)
	}
}
