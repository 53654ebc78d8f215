package hostagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/cgroup"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/sandbox"
	"github.com/wrenn-dev/wrenn-sandbox/internal/metrics"
	"github.com/wrenn-dev/wrenn-sandbox/internal/network"
)

// netAdapter is internal/network behind sandbox.Network.
type netAdapter struct {
	m      *network.Manager
	hostNS string // path of the host-side namespace ("" = own)
}

func parsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "network policy: %q", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (a *netAdapter) Setup(ctx context.Context, sid string, p agentstate.NetworkPolicy) (sandbox.NetInfo, error) {
	allow, err := parsePrefixes(p.AllowCIDRs)
	if err != nil {
		return sandbox.NetInfo{}, err
	}
	deny, err := parsePrefixes(p.DenyCIDRs)
	if err != nil {
		return sandbox.NetInfo{}, err
	}
	h, err := a.m.Setup(ctx, sid, network.Policy{DefaultDeny: p.DenyAll, Allow: allow, Deny: deny})
	if err != nil {
		return sandbox.NetInfo{}, err
	}
	raw, err := json.Marshal(h)
	if err != nil {
		return sandbox.NetInfo{}, err
	}
	return sandbox.NetInfo{
		Handle: raw, NetNS: h.NetNSPath, Tap: h.Tap,
		GuestIP: h.GuestIP.String(), HostIP: h.SandboxIP.String(),
		KernelArgs: "ip=" + network.KernelIPArg(),
	}, nil
}

// handle decodes a persisted handle; with none, it looks for a lease of
// the sandbox (a Setup cut short before its handle was recorded).
func (a *netAdapter) handle(sid string, raw json.RawMessage) (network.Handle, bool, error) {
	if len(raw) > 0 {
		var h network.Handle
		if err := json.Unmarshal(raw, &h); err != nil {
			return h, false, fmt.Errorf("decode network handle: %w", err)
		}
		return h, true, nil
	}
	for _, h := range a.m.List() {
		if h.SandboxID == sid {
			return h, true, nil
		}
	}
	return network.Handle{}, false, nil
}

func (a *netAdapter) Teardown(ctx context.Context, sid string, raw json.RawMessage) error {
	h, ok, err := a.handle(sid, raw)
	if err != nil || !ok {
		return err
	}
	return a.m.Teardown(ctx, h)
}

func (a *netAdapter) Counters(ctx context.Context, sid string, raw json.RawMessage) (sandbox.NetCounters, error) {
	h, ok, err := a.handle(sid, raw)
	if err != nil || !ok {
		return sandbox.NetCounters{}, err
	}
	m, err := metrics.NetlinkReader{}.Counters(ctx, a.hostNS, []string{h.HostVeth})
	if err != nil {
		return sandbox.NetCounters{}, err
	}
	c := m[h.HostVeth]
	// The host end transmits what the guest receives.
	return sandbox.NetCounters{RxBytes: c.TxBytes, TxBytes: c.RxBytes}, nil
}

// cgAdapter is internal/cgroup behind sandbox.Cgroups.
type cgAdapter struct {
	m          *cgroup.Manager
	overheadMB int
	pids       int
}

func decodeCgroup(sid string, raw json.RawMessage) (cgroup.Handle, error) {
	h := cgroup.Handle{SandboxID: sid}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &h); err != nil {
			return h, fmt.Errorf("decode cgroup handle: %w", err)
		}
	}
	return h, nil
}

func (a *cgAdapter) Create(ctx context.Context, sid string, vcpus, memoryMB int) (json.RawMessage, error) {
	h, err := a.m.Create(ctx, sid, cgroup.Limits{VCPUs: vcpus, MemoryMB: memoryMB, OverheadMB: a.overheadMB, PIDs: a.pids})
	if err != nil {
		return nil, cgErr(err)
	}
	return json.Marshal(h)
}

func (a *cgAdapter) AddProcess(ctx context.Context, raw json.RawMessage, pid int) error {
	if len(raw) == 0 {
		return errdefs.Errorf(errdefs.ErrInternal, "add vmm to cgroup: no cgroup recorded")
	}
	h, err := decodeCgroup("", raw)
	if err != nil {
		return err
	}
	return cgErr(a.m.AddProcess(ctx, h, pid))
}

func (a *cgAdapter) Remove(ctx context.Context, sid string, raw json.RawMessage) error {
	h, err := decodeCgroup(sid, raw)
	if err != nil {
		return err
	}
	if err := a.m.Kill(ctx, h); err != nil {
		return cgErr(err)
	}
	if err := a.m.Delete(ctx, h); err != nil && !errors.Is(err, cgroup.ErrNotFound) {
		return cgErr(err)
	}
	return nil
}

func (a *cgAdapter) Stats(ctx context.Context, raw json.RawMessage) (sandbox.CgroupStats, error) {
	h, err := decodeCgroup("", raw)
	if err != nil {
		return sandbox.CgroupStats{}, err
	}
	st, err := a.m.Stats(ctx, h)
	if err != nil {
		return sandbox.CgroupStats{}, cgErr(err)
	}
	return sandbox.CgroupStats{CPU: st.CPUUsage, MemoryBytes: st.MemoryCurrent, MemoryLimit: st.MemoryLimit}, nil
}

// cgErr gives cgroup errors their errdefs kind.
func cgErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cgroup.ErrNotFound):
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	case errors.Is(err, cgroup.ErrInvalidArgument):
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	case errors.Is(err, cgroup.ErrUnsupported):
		return fmt.Errorf("%w: %w", errdefs.ErrNotImplemented, err)
	}
	return err
}

// imagesAdapter is internal/filesystem's registry behind sandbox.Images.
type imagesAdapter struct {
	r *filesystem.Registry
	// kernel, when set, replaces the registry's kernel (AGENT_KERNEL_PATH).
	kernel string
}

func (a *imagesAdapter) Resolve(template string) (sandbox.Image, error) {
	im, err := a.r.Resolve(template, "")
	if err != nil {
		switch {
		case errors.Is(err, filesystem.ErrNotFound):
			return sandbox.Image{}, fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
		case errors.Is(err, filesystem.ErrInvalidName):
			return sandbox.Image{}, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
		case errors.Is(err, filesystem.ErrImageMissing):
			return sandbox.Image{}, fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
		}
		return sandbox.Image{}, err
	}
	out := sandbox.Image{
		Template: im.Template, Version: im.Version, Kernel: im.Kernel.Image, Initrd: im.Kernel.Initrd,
		KernelArgs: "quiet", Rootfs: im.Rootfs, SizeBytes: im.Manifest.SizeBytes,
	}
	if a.kernel != "" {
		out.Kernel = a.kernel
	}
	return out, nil
}

func (a *imagesAdapter) Templates() []string {
	ts, _ := a.r.Templates()
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Name)
	}
	return out
}
