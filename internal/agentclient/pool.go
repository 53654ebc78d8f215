package agentclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// Registrar is the part of the store the pool keeps host rows with
// (*store.Store implements it).
type Registrar interface {
	UpsertHost(ctx context.Context, r store.HostRegistration) (store.Host, error)
	MarkStaleHosts(ctx context.Context, olderThan time.Duration) ([]string, error)
	// MarkGoneHosts also fails the sandboxes of the hosts it marks.
	MarkGoneHosts(ctx context.Context, unhealthyFor time.Duration) ([]store.GoneHost, error)
}

// Heartbeats tunes Run; zero values take the defaults.
type Heartbeats struct {
	Interval   time.Duration // between rounds (default 5s)
	StaleAfter time.Duration // no heartbeat this long: unhealthy, no new sandboxes (default 3 intervals)
	GoneAfter  time.Duration // unhealthy this long: gone, its sandboxes go to error (default 5 min)
	// Reconciler, when set, reconciles a host after its first successful
	// heartbeat (the agent connected, or came back after failed ones) and
	// then every Reconciler Every, in the background.
	Reconciler *Reconciler
}

// epState is what Run remembers of one endpoint between rounds; only
// Run's goroutine touches it.
type epState struct {
	hostID     string
	up         bool      // the last heartbeat succeeded
	reconciled time.Time // last pass started
}

// Pool holds one Client per host, keyed by the host ID the agent reports.
// It is safe for concurrent use.
type Pool struct {
	tls *tls.Config
	reg Registrar
	log *slog.Logger

	mu          sync.RWMutex
	hosts       map[string]*Client // host ID -> client
	byEP        map[string]*Client // endpoint -> client
	reconciling map[string]bool    // host ID -> a pass is running
}

// NewPool returns an empty pool dialling with tlsCfg.
func NewPool(tlsCfg *tls.Config, reg Registrar, log *slog.Logger) *Pool {
	return &Pool{tls: tlsCfg, reg: reg, log: log, hosts: map[string]*Client{}, byEP: map[string]*Client{}}
}

// Get returns the client of hostID; an unknown host is
// errdefs.ErrUnavailable (its agent never answered this control plane).
func (p *Pool) Get(hostID string) (*Client, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	c, ok := p.hosts[hostID]
	if !ok {
		return nil, errdefs.Errorf(errdefs.ErrUnavailable, "host %s is not connected", hostID)
	}
	return c, nil
}

// PauseSandbox pauses sandbox id on host hostID (this and the two below
// are the lifecycle manager's view of the pool).
func (p *Pool) PauseSandbox(ctx context.Context, hostID, id string) error {
	c, err := p.Get(hostID)
	if err != nil {
		return err
	}
	return c.PauseSandbox(ctx, id)
}

// HibernateSandbox hibernates sandbox id on host hostID.
func (p *Pool) HibernateSandbox(ctx context.Context, hostID, id string) (string, error) {
	c, err := p.Get(hostID)
	if err != nil {
		return "", err
	}
	return c.HibernateSandbox(ctx, id)
}

// ResumeSandbox resumes or wakes sandbox id on host hostID.
func (p *Pool) ResumeSandbox(ctx context.Context, hostID, id string) error {
	c, err := p.Get(hostID)
	if err != nil {
		return err
	}
	return c.ResumeSandbox(ctx, id)
}

// Register dials endpoint (once), asks the agent who it is and records
// the host row. Calling it again refreshes the row (a heartbeat).
func (p *Pool) Register(ctx context.Context, endpoint string) (store.Host, error) {
	p.mu.Lock()
	c, ok := p.byEP[endpoint]
	if !ok {
		var err error
		c, err = Dial(endpoint, p.tls)
		if err != nil {
			p.mu.Unlock()
			return store.Host{}, err
		}
		p.byEP[endpoint] = c
	}
	p.mu.Unlock()
	info, err := c.Heartbeat(ctx)
	if err != nil {
		return store.Host{}, fmt.Errorf("register %s: %w", endpoint, err)
	}
	// The client is reachable by host ID before the row says the host is
	// healthy, so the scheduler never picks a host the API cannot reach.
	p.mu.Lock()
	p.hosts[info.HostID] = c
	p.mu.Unlock()
	h, err := p.reg.UpsertHost(ctx, store.HostRegistration{
		ID: info.HostID, GRPCEndpoint: endpoint, AgentVersion: info.AgentVersion,
		Driver: info.Driver, Capacity: info.Capacity,
	})
	if err != nil {
		return store.Host{}, fmt.Errorf("register %s: %w", endpoint, err)
	}
	return h, nil
}

// Run heartbeats every endpoint each round until ctx ends. Hosts whose
// heartbeats stop become unhealthy (the scheduler skips them); hosts that
// stay unhealthy become gone and their sandboxes move to error with a
// reason, which releases their pool reservations.
func (p *Pool) Run(ctx context.Context, endpoints []string, hb Heartbeats) {
	if hb.Interval <= 0 {
		hb.Interval = 5 * time.Second
	}
	if hb.StaleAfter <= 0 {
		hb.StaleAfter = 3 * hb.Interval
	}
	if hb.GoneAfter <= 0 {
		hb.GoneAfter = 5 * time.Minute
	}
	t := time.NewTicker(hb.Interval)
	defer t.Stop()
	eps := make(map[string]*epState, len(endpoints))
	for _, ep := range endpoints {
		eps[ep] = &epState{}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		p.round(ctx, endpoints, hb, eps, &wg)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Pool) round(ctx context.Context, endpoints []string, hb Heartbeats, eps map[string]*epState, wg *sync.WaitGroup) {
	for _, ep := range endpoints {
		hctx, cancel := context.WithTimeout(ctx, hb.Interval)
		h, err := p.Register(hctx, ep)
		cancel()
		es := eps[ep]
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("agent heartbeat failed", "endpoint", ep, "err", err)
			}
			es.up = false
			continue
		}
		if hb.Reconciler == nil {
			continue
		}
		reconnect := !es.up || es.hostID != h.ID
		es.up, es.hostID = true, h.ID
		if reconnect || time.Since(es.reconciled) >= hb.Reconciler.opts.Every {
			if p.startReconcile(ctx, wg, hb.Reconciler, h.ID, reconnect) {
				es.reconciled = time.Now()
			}
		}
	}
	stale, err := p.reg.MarkStaleHosts(ctx, hb.StaleAfter)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("mark stale hosts", "err", err)
		}
		return
	}
	if len(stale) > 0 {
		p.log.Warn("hosts missed heartbeats", "host_ids", stale)
	}
	gone, err := p.reg.MarkGoneHosts(ctx, hb.GoneAfter)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("mark gone hosts", "err", err)
		}
		return
	}
	for _, h := range gone {
		p.log.Warn("host gone", "host_id", h.ID, "failed_sandboxes", len(h.Sandboxes))
	}
}

// startReconcile runs one reconciliation of hostID in the background,
// unless one is still running; it reports whether it started one.
func (p *Pool) startReconcile(ctx context.Context, wg *sync.WaitGroup, r *Reconciler, hostID string, reconnect bool) bool {
	c, err := p.Get(hostID)
	if err != nil {
		return false
	}
	p.mu.Lock()
	if p.reconciling == nil {
		p.reconciling = map[string]bool{}
	}
	if p.reconciling[hostID] {
		p.mu.Unlock()
		return false
	}
	p.reconciling[hostID] = true
	p.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			p.mu.Lock()
			delete(p.reconciling, hostID)
			p.mu.Unlock()
		}()
		res, err := r.ReconcileHost(ctx, hostID, c)
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("reconcile host", "host_id", hostID, "err", err)
			}
			return
		}
		lvl := slog.LevelDebug
		if len(res.Fixes) > 0 || reconnect {
			lvl = slog.LevelInfo
		}
		p.log.Log(ctx, lvl, "reconciled host", "host_id", hostID, "reconnect", reconnect,
			"fixes", len(res.Fixes), "applied", res.Applied, "skipped", res.Skipped, "failed", res.Failed)
	}()
	return true
}

// Close closes every connection.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ep, c := range p.byEP {
		_ = c.Close()
		delete(p.byEP, ep)
	}
	clear(p.hosts)
	return nil
}
