package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/db"
	"github.com/wrenn-dev/wrenn-sandbox/internal/agentclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/api"
	"github.com/wrenn-dev/wrenn-sandbox/internal/config"
	"github.com/wrenn-dev/wrenn-sandbox/internal/lifecycle"
	"github.com/wrenn-dev/wrenn-sandbox/internal/scheduler"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	lago "github.com/wrenn-dev/wrenn-sandbox/internal/usage"
)

// poolAgents adapts the agent pool to api.Agents.
type poolAgents struct{ p *agentclient.Pool }

func (a poolAgents) Agent(hostID string) (api.Agent, error) {
	c, err := a.p.Get(hostID)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// serve runs the API until ctx ends, then shuts down gracefully: stop
// accepting, let in-flight requests finish (up to ShutdownTimeout), stop
// heartbeats, flush audit events, close connections. ready, when set,
// gets the listening address.
func serve(ctx context.Context, cfg cpConfig, log *slog.Logger, ready func(addr string)) error {
	st, err := store.Open(ctx, cfg.DatabaseURL, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if cfg.MigrateOnStart {
		if err := db.MigratePool(ctx, st.Pool(), db.Up, db.WithLogger(log)); err != nil {
			return fmt.Errorf("migrate on start: %w", err)
		}
	}
	var agents *agentclient.Pool
	if len(cfg.AgentEndpoints) > 0 {
		tlsCfg, err := config.ClientTLS(cfg.TLS, cfg.AgentServerName)
		if err != nil {
			return err
		}
		agents = agentclient.NewPool(tlsCfg, st, log)
	} else {
		log.Warn("no CP_AGENT_ENDPOINTS: sandboxes cannot be created")
		agents = agentclient.NewPool(nil, st, log)
	}
	defer agents.Close()
	sched, err := scheduler.New(cfg.Scheduler, st, cfg.SchedulerHost)
	if err != nil {
		return err
	}
	var sender *lago.Sender
	if cfg.LagoURL != "" {
		if sender, err = lago.New(st, lago.Config{URL: cfg.LagoURL, APIKey: cfg.LagoAPIKey}, log); err != nil {
			return fmt.Errorf("LAGO_API_URL: %w", err)
		}
		st.SetUsageEvents(true)
	}
	audit := st.NewAuditWriter(store.AuditOptions{})
	activity := st.NewActivityRecorder(time.Second)
	// Flush both on every way out, after the server and the background
	// work have stopped (and before the store closes: defers run last in,
	// first out).
	defer func() {
		actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := audit.Close(actx); err != nil {
			log.Warn("flush audit events", "err", err)
		}
		if err := activity.Close(actx); err != nil {
			log.Warn("flush sandbox activity", "err", err)
		}
	}()
	deps := api.Deps{Store: st, Agents: poolAgents{agents}, Scheduler: sched, Audit: audit, Activity: activity, Log: log}
	var lm *lifecycle.Manager
	if cfg.LifecycleInterval > 0 {
		lcfg := lifecycle.Config{Interval: cfg.LifecycleInterval, HibernateAfter: cfg.HibernateAfter}
		if sender != nil {
			lcfg.UsageCheckpoint = time.Hour // runs are billed at least hourly
		}
		lm = lifecycle.New(st, agents, log, lcfg)
		deps.Collectors = append(deps.Collectors, lm.Collector())
	} else {
		log.Warn("CP_LIFECYCLE_INTERVAL=0: idle sandboxes are never paused, paused ones never hibernated")
	}
	if sender != nil {
		deps.Collectors = append(deps.Collectors, sender.Collector())
	}
	srv, err := api.New(api.Config{MaxUploadBytes: cfg.MaxUploadBytes}, deps)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}

	bg, stopBG := context.WithCancel(context.Background())
	var bgWG sync.WaitGroup
	bgWG.Add(3)
	go func() {
		defer bgWG.Done()
		if len(cfg.AgentEndpoints) > 0 {
			agents.Run(bg, cfg.AgentEndpoints, agentclient.Heartbeats{Interval: cfg.HeartbeatInterval, GoneAfter: cfg.HostGoneAfter,
				Reconciler: agentclient.NewReconciler(st, log, agentclient.ReconcileOptions{})})
		}
	}()
	go func() {
		defer bgWG.Done()
		if lm != nil {
			lm.Run(bg)
		}
	}()
	go func() {
		defer bgWG.Done()
		if sender != nil {
			sender.Run(bg)
		}
	}()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("control plane listening", "addr", ln.Addr().String(), "agents", len(cfg.AgentEndpoints))
	if ready != nil {
		ready(ln.Addr().String())
	}
	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		err = hs.Shutdown(sctx)
		cancel()
		if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
			err = serr
		}
	}
	stopBG()
	bgWG.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
