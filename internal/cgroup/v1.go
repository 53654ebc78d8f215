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

	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// v1Names are the controllers a sandbox group is made in on v1. cpuacct
// and memory are required (they carry the stats); cpu and pids only when
// a limit needs them.
var v1Names = []cgroup1.Name{cgroup1.Cpu, cgroup1.Cpuacct, cgroup1.Memory, cgroup1.Pids}

// v1 drives one mount per controller under root.
type v1 struct {
	root    string
	present map[cgroup1.Name]bool
	memsw   bool // swap accounting: memory.memsw.* exist
}

func newV1(root string) (*v1, error) {
	b := &v1{root: root, present: map[cgroup1.Name]bool{}}
	for _, n := range v1Names {
		if _, err := os.Stat(filepath.Join(root, string(n), "cgroup.procs")); err == nil {
			b.present[n] = true
		}
	}
	for _, n := range []cgroup1.Name{cgroup1.Cpuacct, cgroup1.Memory} {
		if !b.present[n] {
			return nil, fmt.Errorf("%w: cgroup v1 controller %s not mounted under %s", ErrUnsupported, n, root)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "memory", "memory.memsw.limit_in_bytes")); err == nil {
		b.memsw = true
	}
	return b, nil
}

// hierarchy hands the library only our controllers, each at root/<name>;
// this works for separate mounts and for co-mounted ones linked by name.
func (b *v1) hierarchy() ([]cgroup1.Subsystem, error) {
	var subs []cgroup1.Subsystem
	for _, n := range v1Names {
		if !b.present[n] {
			continue
		}
		switch n {
		case cgroup1.Cpu:
			subs = append(subs, cgroup1.NewCpu(b.root))
		case cgroup1.Cpuacct:
			subs = append(subs, cgroup1.NewCpuacct(b.root))
		case cgroup1.Memory:
			subs = append(subs, cgroup1.NewMemory(b.root, cgroup1.OptionalSwap()))
		case cgroup1.Pids:
			subs = append(subs, cgroup1.NewPids(b.root))
		}
	}
	return subs, nil
}

func (b *v1) dir(n cgroup1.Name, group string) string {
	return filepath.Join(b.root, string(n), group)
}

func (b *v1) dirs(group string) []string {
	var out []string
	for _, n := range v1Names {
		if b.present[n] {
			out = append(out, b.dir(n, group))
		}
	}
	return out
}

func (b *v1) exists(group string) (bool, error) {
	for _, d := range b.dirs(group) {
		_, err := os.Stat(d)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
	}
	return false, nil
}

func (b *v1) create(group string, l Limits, period uint64) (bool, error) {
	if l.VCPUs > 0 && !b.present[cgroup1.Cpu] {
		return false, fmt.Errorf("%w: cpu quota needs the v1 cpu controller", ErrUnsupported)
	}
	if l.PIDs > 0 && !b.present[cgroup1.Pids] {
		return false, fmt.Errorf("%w: pids limit needs the v1 pids controller", ErrUnsupported)
	}
	existed, err := b.exists(group)
	if err != nil {
		return false, err
	}
	// Make the group in every controller first, then write each limit,
	// so a re-Create replaces the previous values in a safe order.
	cg, err := cgroup1.New(cgroup1.StaticPath(group), &specs.LinuxResources{}, cgroup1.WithHierarchy(b.hierarchy))
	if err != nil {
		return !existed, fmt.Errorf("mkdir: %w", err)
	}
	if b.present[cgroup1.Cpu] {
		quota := int64(-1)
		if l.VCPUs > 0 {
			quota = int64(l.VCPUs) * int64(period)
		}
		res := &specs.LinuxResources{CPU: &specs.LinuxCPU{Period: &period, Quota: &quota}}
		if err := cg.Update(res); err != nil {
			return !existed, fmt.Errorf("cpu quota: %w", err)
		}
	}
	if err := b.setMemory(group, l.MemoryBytes()); err != nil {
		return !existed, err
	}
	if b.present[cgroup1.Pids] {
		v := "max"
		if l.PIDs > 0 {
			v = strconv.Itoa(l.PIDs)
		}
		if err := writeFile(b.dir(cgroup1.Pids, group), "pids.max", v); err != nil {
			return !existed, err
		}
	}
	return !existed, nil
}

// setMemory writes the memory limit and, with swap accounting, the same
// memory+swap limit so the VMM cannot spill into swap. The kernel wants
// limit <= memsw at every step, so a raise writes memsw first.
func (b *v1) setMemory(group string, limit int64) error {
	dir := b.dir(cgroup1.Memory, group)
	v := "-1"
	if limit > 0 {
		v = strconv.FormatInt(limit, 10)
	}
	if !b.memsw {
		return writeFile(dir, "memory.limit_in_bytes", v)
	}
	cur, err := readUint(filepath.Join(dir, "memory.limit_in_bytes"))
	if err != nil {
		return err
	}
	order := []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"}
	if limit <= 0 || uint64(limit) > cur {
		order[0], order[1] = order[1], order[0]
	}
	for _, f := range order {
		if err := writeFile(dir, f, v); err != nil {
			return err
		}
	}
	return nil
}

func (b *v1) load(group string) (cgroup1.Cgroup, error) {
	cg, err := cgroup1.Load(cgroup1.StaticPath(group), cgroup1.WithHierarchy(b.hierarchy))
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return nil, ErrNotFound
	}
	return cg, err
}

func (b *v1) addProc(group string, pid int) error {
	cg, err := b.load(group)
	if err != nil {
		return err
	}
	return cg.AddProc(uint64(pid))
}

// procs is the union over the controllers, so a process that made it into
// only some of them (a failed AddProcess) still shows.
func (b *v1) procs(group string) ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for _, d := range b.dirs(group) {
		pids, err := readPids(filepath.Join(d, "cgroup.procs"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, p := range pids {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out, nil
}

func (b *v1) stats(group string) (Stats, error) {
	cg, err := b.load(group)
	if err != nil {
		return Stats{}, err
	}
	m, err := cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	if c := m.GetCPU(); c != nil {
		s.CPUUsage = time.Duration(c.GetUsage().GetTotal())
		s.CPUThrottled = c.GetThrottling().GetThrottledPeriods()
	}
	if mem := m.GetMemory(); mem != nil {
		s.MemoryCurrent = mem.GetUsage().GetUsage()
		s.MemoryPeak = mem.GetUsage().GetMax()
		s.MemoryLimit = mem.GetUsage().GetLimit()
	}
	s.OOMKills = m.GetMemoryOomControl().GetOomKill()
	s.PIDs = m.GetPids().GetCurrent()
	return s, nil
}

// killAll: v1 has no cgroup.kill; the caller signals each task.
func (b *v1) killAll(string) bool { return false }

// inGroup matches a v1 line (id:controllers:path) of one of our
// controllers whose path is group.
func (b *v1) inGroup(procCgroup []byte, group string) bool {
	for _, line := range bytes.Split(procCgroup, []byte("\n")) {
		parts := strings.SplitN(string(line), ":", 3)
		if len(parts) != 3 || parts[1] == "" || parts[2] != group {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == string(cgroup1.Memory) || c == string(cgroup1.Cpuacct) {
				return true
			}
		}
	}
	return false
}
