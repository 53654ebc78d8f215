package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"
)

// v2 drives the unified hierarchy mounted at root.
type v2 struct {
	root string
}

func newV2(root string) (*v2, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return nil, fmt.Errorf("%w: statfs %s: %w", ErrUnsupported, root, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return nil, fmt.Errorf("%w: %s is not a cgroup2 mount", ErrUnsupported, root)
	}
	return &v2{root: root}, nil
}

func (b *v2) dir(group string) string { return filepath.Join(b.root, group) }

func (b *v2) dirs(group string) []string { return []string{b.dir(group)} }

func (b *v2) exists(group string) (bool, error) {
	_, err := os.Stat(b.dir(group))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// available lists the controllers the hierarchy offers at its root.
func (b *v2) available() (map[string]bool, error) {
	raw, err := os.ReadFile(filepath.Join(b.root, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, c := range strings.Fields(string(raw)) {
		out[c] = true
	}
	return out, nil
}

func (b *v2) create(group string, l Limits, period uint64) (bool, error) {
	avail, err := b.available()
	if err != nil {
		return false, err
	}
	var missing []string
	for c, needed := range map[string]bool{"cpu": l.VCPUs > 0, "memory": l.MemoryBytes() > 0, "pids": l.PIDs > 0} {
		if needed && !avail[c] {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return false, fmt.Errorf("%w: cgroup v2 at %s lacks %s", ErrUnsupported, b.root, strings.Join(missing, ", "))
	}
	existed, err := b.exists(group)
	if err != nil {
		return false, err
	}
	// Every controller the hierarchy offers is enabled and written, the
	// unlimited ones as "max", so a re-Create replaces earlier limits.
	res := &cgroup2.Resources{}
	if avail["cpu"] {
		var quota *int64
		if l.VCPUs > 0 {
			q := int64(l.VCPUs) * int64(period)
			quota = &q
		}
		res.CPU = &cgroup2.CPU{Max: cgroup2.NewCPUMax(quota, &period)}
	}
	if avail["memory"] {
		res.Memory = &cgroup2.Memory{} // enabled here, written below
	}
	if avail["pids"] {
		res.Pids = &cgroup2.Pids{Max: -1}
		if l.PIDs > 0 {
			res.Pids.Max = int64(l.PIDs)
		}
	}
	if _, err := cgroup2.NewManager(b.root, group, res); err != nil {
		return !existed, err
	}
	if avail["memory"] {
		if err := b.setMemory(group, l.MemoryBytes()); err != nil {
			return !existed, err
		}
	}
	return !existed, nil
}

// setMemory writes memory.max and, where swap is accounted, forbids swap
// for a limited group so the limit is a hard cap.
func (b *v2) setMemory(group string, limit int64) error {
	dir := b.dir(group)
	v, swap := "max", "max"
	if limit > 0 {
		v, swap = strconv.FormatInt(limit, 10), "0"
	}
	if err := writeFile(dir, "memory.max", v); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
		return writeFile(dir, "memory.swap.max", swap)
	}
	return nil
}

func (b *v2) load(group string) (*cgroup2.Manager, error) {
	return cgroup2.Load(group, cgroup2.WithMountpoint(b.root))
}

func (b *v2) addProc(group string, pid int) error {
	m, err := b.load(group)
	if err != nil {
		return err
	}
	return m.AddProc(uint64(pid))
}

func (b *v2) procs(group string) ([]int, error) {
	m, err := b.load(group)
	if err != nil {
		return nil, err
	}
	pids, err := m.Procs(true)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]int, len(pids))
	for i, p := range pids {
		out[i] = int(p)
	}
	return out, nil
}

func (b *v2) stats(group string) (Stats, error) {
	m, err := b.load(group)
	if err != nil {
		return Stats{}, err
	}
	st, err := m.StatFiltered(cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatMemoryEvents | cgroup2.StatPids)
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	if c := st.GetCPU(); c != nil {
		s.CPUUsage = time.Duration(c.GetUsageUsec()) * time.Microsecond
		s.CPUThrottled = c.GetNrThrottled()
	}
	if mem := st.GetMemory(); mem != nil {
		s.MemoryCurrent = mem.GetUsage()
		s.MemoryPeak = mem.GetMaxUsage()
		s.MemoryLimit = mem.GetUsageLimit()
	}
	s.OOMKills = st.GetMemoryEvents().GetOomKill()
	s.PIDs = st.GetPids().GetCurrent()
	return s, nil
}

// killAll uses cgroup.kill (Linux 5.14+), which kills the whole subtree
// atomically, forks included.
func (b *v2) killAll(group string) bool {
	return writeFile(b.dir(group), "cgroup.kill", "1") == nil
}

// inGroup matches the unified line (0::path).
func (b *v2) inGroup(procCgroup []byte, group string) bool {
	for _, line := range bytes.Split(procCgroup, []byte("\n")) {
		if p, ok := bytes.CutPrefix(line, []byte("0::")); ok {
			return string(p) == group
		}
	}
	return false
}
