package metrics

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/cgroup"
)

// CgroupStats reads one sandbox group's counters. *cgroup.Manager
// implements it. It must return an error matching cgroup.ErrNotFound for
// a group that is gone.
type CgroupStats interface {
	Stats(ctx context.Context, h cgroup.Handle) (cgroup.Stats, error)
}

// NetCounters are an interface's counters as the kernel keeps them (from
// the interface's own point of view).
type NetCounters struct {
	RxBytes, TxBytes     uint64
	RxPackets, TxPackets uint64
}

// NetReader reads interface counters inside one network namespace.
type NetReader interface {
	// Counters returns the counters of the named interfaces in the
	// namespace at netnsPath ("" is the caller's own namespace). Names
	// missing from the result do not exist there. Safe for concurrent use.
	Counters(ctx context.Context, netnsPath string, names []string) (map[string]NetCounters, error)
}

// SandboxInfo says where one sandbox's usage can be read. Empty fields
// are skipped.
type SandboxInfo struct {
	SandboxID string
	// Cgroup is the group holding the sandbox's VMM (zero: none).
	Cgroup cgroup.Handle
	// Rootfs is the sandbox's rootfs clone: a file, or a directory whose
	// files are all counted.
	Rootfs string
	// Veth is the host-side end of the sandbox's veth pair, which lives in
	// the network namespace at Netns ("" is the agent's own).
	Veth  string
	Netns string
}

// Sample is one reading of one sandbox. The Has* flags say which groups
// of fields were read; an absent source is not an error.
type Sample struct {
	SandboxID string

	HasCgroup    bool
	CPU          time.Duration
	CPUThrottled uint64
	Memory       uint64 // bytes charged now
	MemoryPeak   uint64 // 0 where the kernel keeps no peak
	MemoryLimit  uint64 // 0 when unlimited
	OOMKills     uint64
	PIDs         uint64

	HasDisk   bool
	DiskBytes uint64 // blocks allocated to the rootfs (shared reflink extents count in full)

	HasNet bool
	// From the sandbox's point of view: what it received (the host-side
	// veth transmitted) and what it sent (the veth received).
	NetRxBytes, NetTxBytes     uint64
	NetRxPackets, NetTxPackets uint64

	// Errors per source ("cgroup", "disk", "net") for this sandbox.
	Errors map[string]error
}

// Collector reads samples. It holds no state beyond its sources and is
// safe for concurrent use.
type Collector struct {
	cg  CgroupStats
	net NetReader
}

// NewCollector returns a Collector. cg or net may be nil, which skips that
// source.
func NewCollector(cg CgroupStats, net NetReader) *Collector {
	return &Collector{cg: cg, net: net}
}

// Sample reads one sandbox.
func (c *Collector) Sample(ctx context.Context, info SandboxInfo) Sample {
	return c.Collect(ctx, []SandboxInfo{info})[0]
}

// Collect reads every sandbox, in order. Network counters are read with
// one netlink dump per namespace. A source that has vanished (the sandbox
// was destroyed while we read) is left out without an error.
func (c *Collector) Collect(ctx context.Context, infos []SandboxInfo) []Sample {
	out := make([]Sample, len(infos))
	for i, in := range infos {
		s := &out[i]
		s.SandboxID = in.SandboxID
		if in.Cgroup.SandboxID != "" && c.cg != nil {
			c.readCgroup(ctx, in, s)
		}
		if in.Rootfs != "" {
			n, err := diskUsage(in.Rootfs)
			switch {
			case err == nil:
				s.HasDisk, s.DiskBytes = true, n
			case errors.Is(err, fs.ErrNotExist):
			default:
				s.addErr("disk", err)
			}
		}
	}
	if c.net != nil {
		c.readNet(ctx, infos, out)
	}
	return out
}

func (c *Collector) readCgroup(ctx context.Context, in SandboxInfo, s *Sample) {
	st, err := c.cg.Stats(ctx, in.Cgroup)
	if errors.Is(err, cgroup.ErrNotFound) {
		return
	}
	if err != nil {
		s.addErr("cgroup", err)
		return
	}
	s.HasCgroup = true
	s.CPU, s.CPUThrottled = st.CPUUsage, st.CPUThrottled
	s.Memory, s.MemoryPeak = st.MemoryCurrent, st.MemoryPeak
	if st.MemoryLimit < 1<<62 { // the kernels' "unlimited" is near MaxInt64
		s.MemoryLimit = st.MemoryLimit
	}
	s.OOMKills, s.PIDs = st.OOMKills, st.PIDs
}

func (c *Collector) readNet(ctx context.Context, infos []SandboxInfo, out []Sample) {
	byNS := map[string][]int{}
	var order []string
	for i, in := range infos {
		if in.Veth == "" {
			continue
		}
		if _, ok := byNS[in.Netns]; !ok {
			order = append(order, in.Netns)
		}
		byNS[in.Netns] = append(byNS[in.Netns], i)
	}
	for _, ns := range order {
		idx := byNS[ns]
		names := make([]string, len(idx))
		for j, i := range idx {
			names[j] = infos[i].Veth
		}
		got, err := c.net.Counters(ctx, ns, names)
		for _, i := range idx {
			if err != nil {
				out[i].addErr("net", err)
				continue
			}
			nc, ok := got[infos[i].Veth]
			if !ok {
				continue // veth gone: sandbox being torn down
			}
			s := &out[i]
			s.HasNet = true
			s.NetRxBytes, s.NetTxBytes = nc.TxBytes, nc.RxBytes
			s.NetRxPackets, s.NetTxPackets = nc.TxPackets, nc.RxPackets
		}
	}
}

func (s *Sample) addErr(source string, err error) {
	if s.Errors == nil {
		s.Errors = map[string]error{}
	}
	s.Errors[source] = err
}

// diskUsage returns the bytes allocated to path (st_blocks × 512): for a
// directory, the sum over its regular files, hard links counted once.
func diskUsage(path string) (uint64, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, err
	}
	if !fi.IsDir() {
		return blocks(fi)
	}
	var total uint64
	seen := map[[2]uint64]bool{}
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walk
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("stat %s: no unix stat", p)
		}
		key := [2]uint64{uint64(st.Dev), st.Ino}
		if !seen[key] {
			seen[key] = true
			total += uint64(st.Blocks) * 512
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("walk %s: %w", path, err)
	}
	return total, nil
}

func blocks(fi fs.FileInfo) (uint64, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no unix stat", fi.Name())
	}
	return uint64(st.Blocks) * 512, nil
}
