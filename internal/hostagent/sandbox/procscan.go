package sandbox

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// KillOrphans is killOrphans for the agent's other private directories
// (template builds a crash interrupted).
func KillOrphans(dir string) int { return killOrphans(dir) }

// killOrphans kills every process whose command line names a file inside
// dir (a sandbox's private run directory): a VMM started for the sandbox
// whose handle was never recorded because the agent died right after
// starting it. Only processes that reference this sandbox's own directory
// are touched. It returns how many it killed.
func killOrphans(dir string) int {
	if dir == "" || !filepath.IsAbs(dir) {
		return 0
	}
	needle := []byte(filepath.Clean(dir) + "/")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, needle) {
			continue
		}
		pids = append(pids, pid)
	}
	for _, pid := range pids {
		// The VMM runs in its own session: its group holds its helpers.
		if pgid, err := unix.Getpgid(pid); err == nil && pgid == pid {
			_ = unix.Kill(-pid, unix.SIGKILL)
		}
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) && alive(pid) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return len(pids)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) || err != nil {
		return false
	}
	// The state follows the ")" that closes the command name.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}
