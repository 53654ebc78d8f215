// Package lifecycle is the control plane's background lifecycle manager.
// It pauses running sandboxes that have been idle (no exec, file transfer
// or terminal through the API) for longer than their timeout_sec, and
// hibernates sandboxes left paused for longer than HibernateAfter (their
// VM stops and the host's vCPUs and memory are freed). Destruction of long
// hibernated sandboxes slots in as a further sweep. Several control-plane
// replicas may run it: a PostgreSQL advisory lock elects one leader, and
// every state change takes the sandbox's operation lease in the store, so
// it never interleaves with a user's pause, resume or hibernate.
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

// Agents reaches the host agents, by host ID; an unknown or disconnected
// host is errdefs.ErrUnavailable. *agentclient.Pool implements it.
type Agents interface {
	PauseSandbox(ctx context.Context, hostID, id string) error
	// HibernateSandbox returns the location of the sandbox's snapshot.
	HibernateSandbox(ctx context.Context, hostID, id string) (string, error)
}

// Config tunes the manager; zero values take the defaults.
type Config struct {
	Interval         time.Duration // between sweeps, and between leadership attempts (default 10 s)
	Batch            int           // sandboxes handled per sweep and kind (default 100)
	PauseTimeout     time.Duration // one agent pause call (default 30 s)
	HibernateTimeout time.Duration // one agent hibernate call, which writes all guest memory (default 10 min)
	// RetryMax caps the wait before a sandbox whose operation failed is
	// tried again; the wait starts at Interval and doubles (default 10 min).
	RetryMax time.Duration
	// HibernateAfter is how long a sandbox stays paused before it is
	// hibernated; 0 never hibernates.
	HibernateAfter time.Duration
	// UsageCheckpoint bills the unbilled part of runs longer than this
	// (store.CheckpointRuns); 0 bills runs only when they end.
	UsageCheckpoint time.Duration
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
	if c.HibernateTimeout <= 0 {
		c.HibernateTimeout = 10 * time.Minute
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 10 * time.Minute
	}
}

// Manager runs the sweeps. Use New.
type Manager struct {
	st     *store.Store
	pool   *pgxpool.Pool
	agents Agents
	log    *slog.Logger
	cfg    Config

	leader     atomic.Bool
	paused     atomic.Uint64
	hibernated atomic.Uint64
	failures   atomic.Uint64

	// backoff holds sandboxes whose last operation failed, so that they
	// do not take the front of every sweep (Sweep runs in one goroutine).
	backoff map[string]retry
}

type retry struct {
	at    time.Time
	fails int
}

// New returns a manager; Run starts it.
func New(st *store.Store, agents Agents, log *slog.Logger, cfg Config) *Manager {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{st: st, pool: st.Pool(), agents: agents, log: log.With("component", "lifecycle"), cfg: cfg,
		backoff: map[string]retry{}}
}

// Stats are the manager's counters.
type Stats struct {
	Leader     bool
	Paused     uint64 // sandboxes paused for idleness
	Hibernated uint64 // paused sandboxes hibernated after HibernateAfter
	Failures   uint64 // pauses and hibernations that failed (retried next sweep)
}

// Stats returns the counters so far.
func (m *Manager) Stats() Stats {
	return Stats{Leader: m.leader.Load(), Paused: m.paused.Load(), Hibernated: m.hibernated.Load(), Failures: m.failures.Load()}
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
// the lock's connection fails.
func (m *Manager) lead(ctx context.Context) error {
	pc, err := m.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	var got bool
	if err := pc.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, leaderLockKey).Scan(&got); err != nil {
		pc.Release()
		return fmt.Errorf("try leader lock: %w", err)
	}
	if !got {
		pc.Release() // holds no lock: back to the pool
		return nil
	}
	// The lock lives as long as this session: take the connection out of
	// the pool, and close it at the end, which drops the lock whatever
	// happened.
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	// Make the server notice a leader that vanished (power loss,
	// partition) in seconds rather than the operating system's two hours.
	if _, err := conn.Exec(ctx, `SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3`); err != nil {
		return fmt.Errorf("leader session keepalives: %w", err)
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
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := conn.Exec(pctx, `SELECT 1`)
		pcancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("leader connection: %w", err)
		}
	}
}

// Sweep pauses the running sandboxes that are idle past their timeout,
// bills the long runs (UsageCheckpoint) and hibernates the sandboxes
// paused for longer than HibernateAfter, up to Batch of each, and returns
// how many it paused or hibernated. An operation that fails is
// logged, counted and tried again on the next sweep; a sandbox that a user
// is changing at the same moment, or that became active, is skipped.
// Sweep does not check leadership; Run calls it only while leader.
func (m *Manager) Sweep(ctx context.Context) (int, error) {
	waiting := m.waiting()
	idle, err := m.st.IdleSandboxes(ctx, m.cfg.Batch, waiting...)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, sb := range idle {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		n += m.apply(ctx, sb, store.Op{ID: sb.ID, From: []models.SandboxStatus{models.StatusRunning},
			To: models.StatusPaused, Name: "idle pause", IdleOnly: true},
			func(ctx context.Context) (store.SandboxPatch, error) {
				return store.SandboxPatch{}, m.agents.PauseSandbox(ctx, sb.HostID, sb.ID)
			})
	}
	if m.cfg.UsageCheckpoint > 0 {
		if _, err := m.st.CheckpointRuns(ctx, m.cfg.UsageCheckpoint, m.cfg.Batch); err != nil {
			m.log.Warn("usage checkpoint", "err", err)
		}
	}
	if m.cfg.HibernateAfter <= 0 {
		return n, nil
	}
	paused, err := m.st.PausedSandboxes(ctx, m.cfg.HibernateAfter, m.cfg.Batch, waiting...)
	if err != nil {
		return n, err
	}
	for _, sb := range paused {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		n += m.apply(ctx, sb, store.Op{ID: sb.ID, From: []models.SandboxStatus{models.StatusPaused},
			To: models.StatusHibernated, Name: "hibernate after pause", PausedFor: m.cfg.HibernateAfter},
			func(ctx context.Context) (store.SandboxPatch, error) {
				loc, err := m.agents.HibernateSandbox(ctx, sb.HostID, sb.ID)
				return store.SandboxPatch{HibernateLocation: &loc}, err
			})
	}
	return n, nil
}

// waiting returns the sandboxes still backing off, forgetting the rest.
func (m *Manager) waiting() []string {
	now := time.Now()
	var ids []string
	for id, r := range m.backoff {
		if now.Before(r.at) {
			ids = append(ids, id)
		} else if now.Sub(r.at) > 2*m.cfg.RetryMax {
			delete(m.backoff, id) // not seen failing for long
		}
	}
	return ids
}

// failed puts sandbox id in backoff: Interval, doubled per failure in a
// row, at most RetryMax.
func (m *Manager) failed(id string) {
	r := m.backoff[id]
	r.fails++
	d := m.cfg.Interval
	for i := 1; i < r.fails && d < m.cfg.RetryMax; i++ {
		d *= 2
	}
	r.at = time.Now().Add(min(d, m.cfg.RetryMax))
	m.backoff[id] = r
}

// apply runs one lifecycle operation under the sandbox's lease and
// returns 1 when the sandbox moved.
func (m *Manager) apply(ctx context.Context, sb store.Sandbox, op store.Op, call func(context.Context) (store.SandboxPatch, error)) int {
	log := m.log.With("sandbox_id", sb.ID, "host_id", sb.HostID, "op", op.Name)
	if _, err := m.st.BeginOp(ctx, op); err != nil {
		if !errdefs.IsConflict(err) && !errdefs.IsNotFound(err) {
			m.failures.Add(1)
			log.Warn("lifecycle operation not started", "err", err)
		}
		return 0 // busy, changed or gone since the listing
	}
	fail := func(err error) int {
		m.failures.Add(1)
		m.failed(sb.ID)
		log.Warn("lifecycle operation failed", "err", err, "retry_in", time.Until(m.backoff[sb.ID].at).Round(time.Second))
		if err := m.st.EndOp(context.WithoutCancel(ctx), sb.ID, op.Name); err != nil {
			log.Error("end lifecycle operation", "err", err)
		}
		return 0
	}
	if sb.HostID == "" {
		return fail(errdefs.Errorf(errdefs.ErrConflict, "sandbox %s is %s but on no host", sb.ID, sb.Status))
	}
	timeout := m.cfg.PauseTimeout
	if op.To == models.StatusHibernated {
		timeout = m.cfg.HibernateTimeout
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	set, err := call(actx)
	cancel()
	if err != nil {
		return fail(fmt.Errorf("agent: %w", err))
	}
	// The agent has acted: record it even if the manager is stopping.
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer wcancel()
	if _, err := m.st.Transition(wctx, store.Transition{ID: sb.ID, From: op.From, To: op.To, Set: set}); err != nil {
		// Only a destroy or the reconciler moves a leased sandbox; a failed
		// write is repaired by the reconciler from the agent's inventory.
		m.failures.Add(1)
		log.Warn("lifecycle operation not recorded", "err", err)
		if err := m.st.EndOp(wctx, sb.ID, op.Name); err != nil {
			log.Error("end lifecycle operation", "err", err)
		}
		return 0
	}
	delete(m.backoff, sb.ID)
	switch op.To {
	case models.StatusPaused:
		m.paused.Add(1)
		log.Info("sandbox paused after idle timeout", "owner_id", sb.OwnerID, "timeout_sec", sb.TimeoutSec,
			"idle_for", time.Since(lastActive(sb)).Round(time.Second))
	case models.StatusHibernated:
		m.hibernated.Add(1)
		log.Info("sandbox hibernated after a long pause", "owner_id", sb.OwnerID,
			"paused_for", time.Since(sb.PausedAt).Round(time.Second), "location", *set.HibernateLocation)
	}
	return 1
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
	descHibernated = prometheus.NewDesc("wrenn_lifecycle_hibernations_total",
		"Sandboxes hibernated because they stayed paused past CP_HIBERNATE_AFTER.", nil, nil)
	descFailures = prometheus.NewDesc("wrenn_lifecycle_failures_total",
		"Lifecycle pauses and hibernations that failed (tried again on the next sweep).", nil, nil)
)

type collector struct{ m *Manager }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLeader
	ch <- descPaused
	ch <- descHibernated
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
	ch <- prometheus.MustNewConstMetric(descHibernated, prometheus.CounterValue, float64(st.Hibernated))
	ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(st.Failures))
}
