package sandbox

import (
	"context"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
)

// Metrics is one reading of a sandbox's usage.
type Metrics struct {
	SandboxID   string
	SampledAt   time.Time
	CPU         time.Duration
	MemoryBytes uint64
	MemoryLimit uint64
	DiskBytes   uint64
	NetRxBytes  uint64
	NetTxBytes  uint64
	VMMPID      int
}

// Metrics reads the usage of one sandbox, or of every sandbox with a VM
// when sid is empty. Counters that cannot be read stay zero.
func (m *Manager) Metrics(ctx context.Context, sid string) ([]Metrics, error) {
	var recs = m.List()
	if sid != "" {
		r, err := m.Get(sid)
		if err != nil {
			return nil, err
		}
		recs = recs[:0]
		recs = append(recs, r)
	}
	out := make([]Metrics, 0, len(recs))
	for _, r := range recs {
		if r.VM == nil && sid == "" {
			continue
		}
		mt := Metrics{SandboxID: r.SandboxID, SampledAt: time.Now().UTC()}
		if r.VM != nil {
			mt.VMMPID = r.VM.PID
		}
		if r.Cgroup != nil {
			if st, err := m.cfg.Cgroups.Stats(ctx, r.Cgroup); err == nil {
				mt.CPU, mt.MemoryBytes, mt.MemoryLimit = st.CPU, st.MemoryBytes, st.MemoryLimit
			} else if !errdefs.IsNotFound(err) {
				m.log.Debug("cgroup stats", "sandbox_id", r.SandboxID, "err", err)
			}
		}
		if r.Rootfs != "" {
			if n, err := filesystem.AllocatedBytes(r.Rootfs); err == nil {
				mt.DiskBytes = uint64(n)
			}
		}
		if ns, ok := m.cfg.Network.(NetworkStats); ok && r.Network != nil {
			if c, err := ns.Counters(ctx, r.SandboxID, r.Network); err == nil {
				mt.NetRxBytes, mt.NetTxBytes = c.RxBytes, c.TxBytes
			}
		}
		out = append(out, mt)
	}
	return out, nil
}
