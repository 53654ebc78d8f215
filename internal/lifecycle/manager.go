// Package lifecycle is the control plane's background lifecycle manager.
// Today it pauses running sandboxes that have been idle (no exec, file
// transfer or terminal through the API) for longer than their
// timeout_sec; hibernation to object storage and destruction of long
// hibernated sandboxes slot in as further sweeps. Several control-plane
// replicas may run it: a PostgreSQL advisory lock elects one leader, and
// every state change is a compare-and-set in the store.
package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// leaderLockKey is the advisory lock the leader holds ("WrennLM").
const leaderLockKey int64 = 0x5772656e6e4c4d

// Agents reaches the host agents: PauseSandbox pauses sandbox id on
// host hostID; an unknown or disconnected host is errdefs.ErrUnavailable.
// *agentclient.Pool implements it.
type Agents interface {
	PauseSandbox(ctx context.Context, hostID, id string) error
}

// Config tunes the manager; zero values take the defaults.
type Config struct {
	Interval     time.Duration // between sweeps, and between leadership attempts (default 10 s)
	Batch        int           // sandboxes handled per sweep (default 100)
	PauseTimeout time.Duration // one agent pause call (default 30 s)
}

func (c *Config) defaults() {
	if c.Interval <= 0 {
		c.Interval = 10 * time.Second
	}
	if c.Batch <= 0 {
		c.Batch = 100
	}
	if c.PauseTimeout <= 0 {
		c.PauseTimeout = 30 * time.Second
	}
}

// Manager runs the sweeps. Use New.
type Manager struct {
	st     *store.Store
	pool   *pgxpool.Pool
	agents Agents
	log    *slog.Logger
	cfg    Config

	leader   atomic.Bool
	paused   atomic.Uint64
	failures atomic.Uint64
}

// New returns a manager; Run starts it.
func New(st *store.Store, agents Agents, log *slog.Logger, cfg Config) *Manager {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{st: st, pool: st.Pool(), agents: agents, log: log.With("component", "lifecycle"), cfg: cfg}
}

// Stats are the manager's counters.
type Stats struct {
	Leader   bool
	Paused   uint64 // sandboxes paused for idleness
	Failures uint64 // pauses that failed (retried next sweep)
}

// Stats returns the counters so far.
func (m *Manager) Stats() Stats {
	return Stats{Leader: m.leader.Load(), Paused: m.paused.Load(), Failures: m.failures.Load()}
}

// Run sweeps every Interval while this replica is the leader, and tries
// to become leader every Interval while it is not, until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	for {
		if err := m.lead(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("lifecycle leadership lost", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(m.cfg.Interval):
		}
	}
}

// lead takes the leader lock if it is free and sweeps until ctx ends or
// the lock's connection fails. The connection is taken out of the pool
// and closed at the end, which releases the lock whatever happened.
func (m *Manager) lead(ctx context.Context) error {
	pc, err := m.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, leaderLockKey).Scan(&got); err != nil {
		return fmt.Errorf("try leader lock: %w", err)
	}
	if !got {
		return nil
	}
	m.leader.Store(true)
	defer m.leader.Store(false)
	m.log.Info("lifecycle manager is leader", "interval", m.cfg.Interval)
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := m.Sweep(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("lifecycle sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// The lock lives as long as this session: check it is alive.
		if _, err := conn.Exec(ctx, `SELECT 1`); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("leader connection: %w", err)
		}
	}
}

// Sweep pauses the running sandboxes that are idle past their timeout,
// up to Batch of them, and returns how many it paused. A pause that fails
// is logged, counted and tried again on the next sweep. Sweep does not
// check leadership; Run calls it only while leader.
func (m *Manager) Sweep(ctx context.Context) (int, error) {
	idle, err := m.st.IdleSandboxes(ctx, m.cfg.Batch)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, sb := range idle {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		if err := m.pauseIdle(ctx, sb); err != nil {
			m.failures.Add(1)
			m.log.Warn("pause idle sandbox", "sandbox_id", sb.ID, "host_id", sb.HostID, "err", err)
			continue
		}
		n++
	}
	return n, nil
}

func (m *Manager) pauseIdle(ctx context.Context, sb store.Sandbox) error {
	// Activity may have come in since the listing.
	still, err := m.st.StillIdle(ctx, sb.ID)
	if err != nil {
		return err
	}
	if !still {
		return nil
	}
	if sb.HostID == "" {
		return errdefs.Errorf(errdefs.ErrConflict, "sandbox %s is running but on no host", sb.ID)
	}
	pctx, cancel := context.WithTimeout(ctx, m.cfg.PauseTimeout)
	err = m.agents.PauseSandbox(pctx, sb.HostID, sb.ID)
	cancel()
	if err != nil {
		return fmt.Errorf("agent pause: %w", err)
	}
	if _, err := m.st.Transition(ctx, store.Transition{ID: sb.ID,
		From: []models.SandboxStatus{models.StatusRunning}, To: models.StatusPaused}); err != nil {
		return fmt.Errorf("record pause: %w", err)
	}
	m.paused.Add(1)
	idleFor := time.Since(lastActive(sb)).Round(time.Second)
	m.log.Info("sandbox paused after idle timeout", "sandbox_id", sb.ID, "owner_id", sb.OwnerID,
		"timeout_sec", sb.TimeoutSec, "idle_for", idleFor)
	return nil
}

func lastActive(sb store.Sandbox) time.Time {
	for _, t := range []time.Time{sb.LastActiveAt, sb.StartedAt, sb.CreatedAt} {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

// Collector exports the manager's counters to Prometheus.
func (m *Manager) Collector() prometheus.Collector { return collector{m} }

var (
	descLeader = prometheus.NewDesc("wrenn_lifecycle_leader",
		"1 when this control plane runs the lifecycle sweeps.", nil, nil)
	descPaused = prometheus.NewDesc("wrenn_lifecycle_idle_pauses_total",
		"Sandboxes paused because they were idle past their timeout_sec.", nil, nil)
	descFailures = prometheus.NewDesc("wrenn_lifecycle_pause_failures_total",
		"Idle pauses that failed (tried again on the next sweep).", nil, nil)
)

type collector struct{ m *Manager }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLeader
	ch <- descPaused
	ch <- descFailures
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.Stats()
	leader := 0.0
	if st.Leader {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(descPaused, prometheus.CounterValue, float64(st.Paused))
	ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(st.Failures))
}
