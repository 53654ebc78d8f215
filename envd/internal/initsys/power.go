package initsys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotPID1 is returned by the power functions when envd is not PID 1:
// outside a VM they would shut down the host.
var ErrNotPID1 = errors.New("not running as PID 1")

// DefaultGrace is how long Shutdown waits after SIGTERM before SIGKILL.
const DefaultGrace = 3 * time.Second

// PowerOff syncs and powers the VM off. It returns only on failure.
func PowerOff() error { return halt(unix.LINUX_REBOOT_CMD_POWER_OFF) }

// Reboot syncs and reboots the VM (with -no-reboot, QEMU exits instead).
// It returns only on failure.
func Reboot() error { return halt(unix.LINUX_REBOOT_CMD_RESTART) }

func halt(cmd int) error {
	if !IsPID1() {
		return ErrNotPID1
	}
	unix.Sync()
	if err := unix.Reboot(cmd); err != nil {
		return fmt.Errorf("reboot(%#x): %w", cmd, err)
	}
	return nil
}

// Shutdown stops the VM cleanly: SIGTERM to every process, SIGKILL to
// those left after grace, then unmounts what it can, remounts the root
// read-only, syncs and powers off (or reboots when reboot is true). It
// returns only on failure.
func Shutdown(log *slog.Logger, grace time.Duration, reboot bool) error {
	if !IsPID1() {
		return ErrNotPID1
	}
	unix.Sync()
	killAll(log, grace, unix.Kill, func() ([]int, error) { return userProcesses("/proc", os.Getpid()) })
	unmountAll(log, "/proc/self/mountinfo")
	if reboot {
		return Reboot()
	}
	return PowerOff()
}

// WatchSignals makes SIGTERM, SIGINT (Ctrl-Alt-Del once Setup has disabled
// the hard reboot) and SIGPWR shut the VM down through Shutdown. As PID 1
// envd must never exit: a returning main panics the kernel. The watch ends
// when ctx does.
func WatchSignals(ctx context.Context, log *slog.Logger, grace time.Duration) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGTERM, unix.SIGINT, unix.SIGPWR)
	go func() {
		defer signal.Stop(ch)
		select {
		case <-ctx.Done():
			return
		case sig := <-ch:
			log.Info("shutting down", "signal", sig.String())
			if err := Shutdown(log, grace, false); err != nil {
				log.Error("shutdown failed", "err", err)
			}
		}
	}()
}

// killAll sends SIGTERM to every process but init, waits until alive
// reports none or grace passes, then SIGKILLs the rest and waits briefly.
// Zombies do not count: the reaper collects them.
func killAll(log *slog.Logger, grace time.Duration, kill func(int, unix.Signal) error, alive func() ([]int, error)) {
	for _, step := range []struct {
		sig  unix.Signal
		wait time.Duration
	}{{unix.SIGTERM, grace}, {unix.SIGKILL, time.Second}} {
		if err := kill(-1, step.sig); err != nil && !errors.Is(err, unix.ESRCH) {
			log.Warn("kill all", "signal", step.sig.String(), "err", err)
		}
		deadline := time.Now().Add(step.wait)
		for {
			pids, err := alive()
			if err != nil {
				log.Warn("list processes", "err", err)
				break
			}
			if len(pids) == 0 {
				return
			}
			if !time.Now().Before(deadline) {
				log.Info("processes still running", "signal", step.sig.String(), "pids", pids)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// pfKthread is PF_KTHREAD in /proc/<pid>/stat's flags field.
const pfKthread = 0x00200000

// userProcesses lists the pids under procRoot that are neither self, nor
// PID 1, nor kernel threads, nor zombies.
func userProcesses(procRoot string, self int) ([]int, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == 1 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		state, flags, ok := parseStat(b)
		if !ok || state == 'Z' || state == 'X' || flags&pfKthread != 0 {
			continue
		}
		out = append(out, pid)
	}
	slices.Sort(out)
	return out, nil
}

// parseStat returns the state and flags fields of /proc/<pid>/stat. The
// command name may contain spaces and parentheses, so fields are counted
// from the last ')'.
func parseStat(b []byte) (state byte, flags uint64, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(b[i+1:])
	// After ')': state ppid pgrp session tty_nr tpgid flags ...
	if len(f) < 7 || len(f[0]) != 1 {
		return 0, 0, false
	}
	flags, err := strconv.ParseUint(string(f[6]), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], flags, true
}

// virtualFS are filesystems with nothing to flush; unmountAll leaves them.
var virtualFS = map[string]bool{
	"proc": true, "sysfs": true, "devtmpfs": true, "devpts": true, "tmpfs": true,
	"cgroup2": true, "cgroup": true, "mqueue": true, "debugfs": true, "tracefs": true,
	"securityfs": true, "pstore": true, "bpf": true, "configfs": true, "fusectl": true,
	"hugetlbfs": true, "binfmt_misc": true, "autofs": true, "efivarfs": true,
}

// unmountAll unmounts disk-backed filesystems, deepest first, and remounts
// the root read-only, so the ext4 journal is clean on the next boot.
func unmountAll(log *slog.Logger, mountinfo string) {
	table, err := readMountTable(mountinfo)
	if err != nil {
		log.Warn("unmount", "err", err)
	}
	for i := len(table) - 1; i >= 0; i-- {
		e := table[i]
		if virtualFS[e.FSType] || e.MountPoint == "/" {
			continue
		}
		if err := unix.Unmount(e.MountPoint, 0); err != nil {
			if err := unix.Mount("", e.MountPoint, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				log.Warn("unmount", "target", e.MountPoint, "err", err)
			}
		}
	}
	unix.Sync()
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		log.Warn("remount / read-only", "err", err)
	}
	unix.Sync()
}
