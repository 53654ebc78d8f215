package hostagent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/cgroup"
	"github.com/wrenn-dev/wrenn-sandbox/internal/config"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/sandbox"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/snapstore"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/metrics"
	"github.com/wrenn-dev/wrenn-sandbox/internal/network"
	"github.com/wrenn-dev/wrenn-sandbox/internal/snapshot"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// Defaults for resources the configuration does not name.
const (
	// vmmOverheadMB is added to each sandbox's memory cgroup limit for
	// the VMM itself (QEMU under TCG keeps a translation cache).
	vmmOverheadMB = 256
	// vmmPIDs bounds the tasks (threads) of one VMM.
	vmmPIDs = 1024
)

// Agent is one assembled host agent.
type Agent struct {
	cfg     config.Agent
	log     *slog.Logger
	hostID  string
	version string

	driver   vm.Driver
	net      *network.Manager
	cg       *cgroup.Manager
	mgr      *sandbox.Manager
	exporter *metrics.Exporter
	tmpl     *templatesAdapter
	report   sandbox.RecoverReport
}

// New builds every backend, then recovers the sandboxes a previous agent
// left (reattaching to running VMs, releasing half-made ones).
func New(ctx context.Context, cfg config.Agent, version string, log *slog.Logger) (_ *Agent, err error) {
	a := &Agent{cfg: cfg, log: log, version: version}
	a.hostID = cfg.HostID
	if a.hostID == "" {
		hn, _ := os.Hostname()
		a.hostID = id.HostIDFromHostname(hn)
	}
	for _, d := range []string{cfg.SandboxesPath, cfg.SnapshotsPath, cfg.TemplateCache} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("agent dir %s: %w", d, err)
		}
	}
	defer func() {
		if err != nil {
			a.closeBackends()
		}
	}()
	var hasNIC func(string) bool
	if a.driver, hasNIC, err = newDriver(cfg, log); err != nil {
		return nil, fmt.Errorf("vm driver: %w", err)
	}
	state, err := agentstate.Open(cfg.SandboxesPath)
	if err != nil {
		return nil, err
	}
	reg, err := filesystem.NewRegistry(cfg.ImagesPath)
	if err != nil {
		return nil, err
	}
	store, err := snapstore.NewLocal(cfg.SnapshotsPath)
	if err != nil {
		return nil, err
	}
	hostNS := hostNSPath(cfg.NetworkHostNS)
	a.net, err = network.New(network.Config{
		Pool: cfg.NetworkPool, StateDir: cfg.SandboxesPath, HostNS: hostNS, Uplink: cfg.HostInterface,
		NamePrefix:         cfg.NetworkPrefix,
		ProtectedHostPorts: protectedPorts(cfg.ListenAddr, cfg.MetricsAddr), Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if a.cg, err = cgroup.New(cgroup.Config{Parent: cfg.CgroupParent, Logger: log}); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	totals, err := hostTotals(cfg)
	if err != nil {
		return nil, err
	}
	netA := &netAdapter{m: a.net, hostNS: hostNS}
	mcfg := sandbox.Config{
		Driver: a.driver, State: state, Snapshots: store,
		Images:  &imagesAdapter{r: reg, kernel: cfg.KernelPath},
		Network: netA,
		Cgroups: &cgAdapter{m: a.cg, overheadMB: vmmOverheadMB, pids: vmmPIDs},
		Totals:  totals, DefaultTemplate: cfg.DefaultTemplate, DefaultVCPUs: cfg.DefaultVCPUs,
		DefaultMemoryMB: cfg.DefaultMemoryMB, BootTimeout: cfg.BootTimeout,
		PauseCreateAt: cfg.TestPauseCreateAt, Log: log,
	}
	if cfg.TemplateSnapshots != config.TemplateSnapshotsOff && a.driver.Capabilities().Snapshot {
		a.tmpl = newTemplatesAdapter(a.driver, netA, reg, cfg.TemplateCache, cfg.BootTimeout/2, hasNIC, log)
		mcfg.Templates = a.tmpl
	}
	if a.mgr, err = sandbox.New(mcfg); err != nil {
		return nil, err
	}
	a.cleanTemplateBuilds()
	if a.report, err = a.mgr.Recover(ctx); err != nil {
		return nil, fmt.Errorf("recover sandboxes: %w", err)
	}
	// Networks whose sandbox has no record any more (a crash between the
	// lease and the record cannot happen, but a lost state dir can).
	known := map[string]bool{}
	for _, r := range a.mgr.List() {
		known[r.SandboxID] = true
	}
	if err := a.net.Reconcile(ctx, func(sid string) bool { return known[sid] }); err != nil {
		log.Error("reconcile networks", "err", err)
	}
	a.reconcileCgroups(ctx, known)
	a.exporter, err = metrics.NewExporter(metrics.ExporterConfig{
		Lister:    metrics.SandboxListerFunc(a.metricsSandboxes),
		Collector: metrics.NewCollector(a.cg, metrics.NetlinkReader{}),
		Logger:    log,
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Manager is the agent's sandbox manager.
func (a *Agent) Manager() *sandbox.Manager { return a.mgr }

// HostID is the ID the agent reports.
func (a *Agent) HostID() string { return a.hostID }

// RecoverReport says what the start-up recovery did.
func (a *Agent) RecoverReport() sandbox.RecoverReport { return a.report }

// MetricsHandler serves Prometheus metrics.
func (a *Agent) MetricsHandler() http.Handler { return a.exporter.Handler() }

// PrepareTemplates builds the template snapshots of every template at the
// default shape (AGENT_TEMPLATE_SNAPSHOTS=start).
func (a *Agent) PrepareTemplates(ctx context.Context) {
	if a.tmpl == nil {
		return
	}
	for _, t := range a.mgr.Templates() {
		start := time.Now()
		if err := a.tmpl.Prepare(ctx, t, a.cfg.DefaultVCPUs, a.cfg.DefaultMemoryMB); err != nil {
			a.log.Warn("template snapshot not built", "template", t, "err", err)
			continue
		}
		a.log.Info("template snapshot ready", "template", t, "took", time.Since(start))
	}
}

// metricsSandboxes lists where each sandbox's usage is read.
func (a *Agent) metricsSandboxes(context.Context) ([]metrics.SandboxInfo, error) {
	var out []metrics.SandboxInfo
	for _, r := range a.mgr.List() {
		in := metrics.SandboxInfo{SandboxID: r.SandboxID, Rootfs: r.Rootfs, Netns: hostNSPath(a.cfg.NetworkHostNS)}
		if len(r.Cgroup) > 0 {
			_ = json.Unmarshal(r.Cgroup, &in.Cgroup)
		}
		if len(r.Network) > 0 {
			var h network.Handle
			if json.Unmarshal(r.Network, &h) == nil {
				in.Veth = h.HostVeth
			}
		}
		out = append(out, in)
	}
	return out, nil
}

// cleanTemplateBuilds removes what a template snapshot build cut short by
// a crash left in the cache: the template VM (its command line names the
// build directory) and the directory. Its network lease goes with the
// network reconciliation. It also removes template snapshots that no
// current image can use (snapshot.PruneStale).
func (a *Agent) cleanTemplateBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(a.cfg.TemplateCache, ".build-*"))
	for _, d := range dirs {
		if n := sandbox.KillOrphans(d); n > 0 {
			a.log.Warn("killed template vm left by an interrupted build", "dir", d, "count", n)
		}
		if err := os.RemoveAll(d); err != nil {
			a.log.Error("remove interrupted template build", "dir", d, "err", err)
		}
	}
	if a.tmpl == nil {
		return
	}
	// Snapshots of images that were rebuilt or removed would only fill
	// the disk: nothing can restore them any more.
	removed, err := snapshot.PruneStale(a.cfg.TemplateCache, a.tmpl.images)
	for _, d := range removed {
		a.log.Info("removed stale template snapshot", "dir", d)
	}
	if err != nil {
		a.log.Error("prune template snapshots", "err", err)
	}
}

// reconcileCgroups removes sandbox cgroups under the agent's parent that
// no record owns (the parent is the agent's own, so its children are too).
func (a *Agent) reconcileCgroups(ctx context.Context, known map[string]bool) {
	hs, err := a.cg.List(ctx)
	if err != nil {
		a.log.Error("list cgroups", "err", err)
		return
	}
	for _, h := range hs {
		if known[h.SandboxID] {
			continue
		}
		a.log.Warn("removing cgroup of unknown sandbox", "sandbox_id", h.SandboxID, "group", h.Group)
		if err := a.cg.Kill(ctx, h); err != nil {
			a.log.Error("kill cgroup", "sandbox_id", h.SandboxID, "err", err)
			continue
		}
		if err := a.cg.Delete(ctx, h); err != nil {
			a.log.Error("delete cgroup", "sandbox_id", h.SandboxID, "err", err)
		}
	}
}

// closeBackends releases descriptors; every VM and network stays.
func (a *Agent) closeBackends() {
	if a.mgr != nil {
		a.mgr.Close()
	}
	if a.net != nil {
		a.net.Close()
	}
}

// hostNSPath turns AGENT_NETWORK_HOST_NS (a name under /var/run/netns or
// a path) into a path.
func hostNSPath(v string) string {
	if v == "" || filepath.IsAbs(v) {
		return v
	}
	return filepath.Join(network.DefaultNetNSDir, v)
}

// protectedPorts are the agent's own ports, which no sandbox may reach.
func protectedPorts(addrs ...string) []uint16 {
	var out []uint16
	for _, a := range addrs {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if n, err := strconv.ParseUint(p, 10, 16); err == nil && n > 0 {
			out = append(out, uint16(n))
		}
	}
	return out
}

// hostTotals derives the capacity the agent hands out.
func hostTotals(cfg config.Agent) (sandbox.Totals, error) {
	t := sandbox.Totals{VCPUs: cfg.TotalVCPUs, MemoryMB: cfg.TotalMemoryMB, DiskMB: cfg.TotalDiskMB}
	if t.VCPUs == 0 {
		t.VCPUs = int(float64(runtime.NumCPU()) * cfg.VCPUOvercommit)
	}
	if t.MemoryMB == 0 {
		total, err := memTotalMB()
		if err != nil {
			return t, err
		}
		t.MemoryMB = max(total-cfg.ReservedMemoryMB, 0)
	}
	if t.DiskMB == 0 {
		var st unix.Statfs_t
		if err := unix.Statfs(cfg.SandboxesPath, &st); err == nil {
			t.DiskMB = int64(st.Blocks) * st.Bsize >> 20
		}
	}
	return t, nil
}

// memTotalMB reads MemTotal from /proc/meminfo.
func memTotalMB() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb >> 10, nil
		}
	}
	return 0, errors.New("MemTotal not found in /proc/meminfo")
}
