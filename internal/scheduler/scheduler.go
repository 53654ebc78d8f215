// Package scheduler picks the host a new sandbox goes to, from the host
// rows in the store (healthy hosts with room only). It owns no state of
// its own and must not import host-agent packages.
package scheduler

import (
	"context"
	"fmt"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// Names of the policies, for configuration (CP_SCHEDULER).
const (
	SingleHost  = "single_host"
	LeastLoaded = "least_loaded"
)

// Scheduler picks a host for a sandbox needing need. When no healthy
// host has room the error matches errdefs.ErrUnavailable. Implementations
// are safe for concurrent use; the pick is advisory (the agent has the
// last word on capacity).
type Scheduler interface {
	Pick(ctx context.Context, need models.Resources) (store.Host, error)
}

// Candidates lists healthy hosts that fit need (*store.Store implements it).
type Candidates interface {
	HostCandidates(ctx context.Context, need models.Resources) ([]store.Host, error)
}

// New returns the named policy. hostID pins single_host to one host
// ("" = whichever single healthy host fits).
func New(name string, c Candidates, hostID string) (Scheduler, error) {
	switch name {
	case SingleHost, "":
		return singleHost{c: c, hostID: hostID}, nil
	case LeastLoaded:
		return leastLoaded{c: c}, nil
	}
	return nil, fmt.Errorf("scheduler %q: want %s or %s", name, SingleHost, LeastLoaded)
}

type singleHost struct {
	c      Candidates
	hostID string
}

func (s singleHost) Pick(ctx context.Context, need models.Resources) (store.Host, error) {
	hosts, err := s.c.HostCandidates(ctx, need)
	if err != nil {
		return store.Host{}, fmt.Errorf("schedule: %w", err)
	}
	for _, h := range hosts {
		if s.hostID == "" || h.ID == s.hostID {
			return h, nil
		}
	}
	return store.Host{}, noHost(need)
}

type leastLoaded struct{ c Candidates }

// load is the larger of the vCPU and memory fractions in use after
// placing need, counting the larger of reported and allocated use.
func load(h store.Host, need models.Resources) float64 {
	c := h.Capacity
	usedCPU := max(c.UsedVCPUs, h.Allocated.VCPUs) + need.VCPUs
	usedMem := max(c.UsedMemoryMB, int64(h.Allocated.MemoryMB)) + int64(need.MemoryMB)
	var fc, fm float64
	if c.TotalVCPUs > 0 {
		fc = float64(usedCPU) / float64(c.TotalVCPUs)
	}
	if c.TotalMemoryMB > 0 {
		fm = float64(usedMem) / float64(c.TotalMemoryMB)
	}
	return max(fc, fm)
}

func (l leastLoaded) Pick(ctx context.Context, need models.Resources) (store.Host, error) {
	hosts, err := l.c.HostCandidates(ctx, need)
	if err != nil {
		return store.Host{}, fmt.Errorf("schedule: %w", err)
	}
	if len(hosts) == 0 {
		return store.Host{}, noHost(need)
	}
	best := hosts[0]
	for _, h := range hosts[1:] {
		if lh, lb := load(h, need), load(best, need); lh < lb || (lh == lb && h.ID < best.ID) {
			best = h
		}
	}
	return best, nil
}

func noHost(need models.Resources) error {
	return errdefs.Errorf(errdefs.ErrUnavailable, "no healthy host has room for %s", need)
}
