// Package api is the control plane's REST API (/v1, JSON, X-API-Key): the
// chi router, its middleware, the handlers, and the one translation of
// errdefs errors into the {"error":{"code","message"}} body. It talks to
// agents only through the small Agent interface (agentclient implements
// it) and must not import host-agent packages.
package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn-dev/wrenn-sandbox/internal/auth"
	"github.com/wrenn-dev/wrenn-sandbox/internal/scheduler"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// Agent is what the API needs from one host agent. Errors match the
// errdefs sentinels. *agentclient.Client implements it.
type Agent interface {
	CreateSandbox(ctx context.Context, req *pb.CreateSandboxRequest) (*pb.CreateSandboxResponse, error)
	DestroySandbox(ctx context.Context, id string) error
	PauseSandbox(ctx context.Context, id string) error
	// ResumeSandbox resumes a paused sandbox or wakes a hibernated one.
	ResumeSandbox(ctx context.Context, id string) error
	// HibernateSandbox saves the sandbox and stops its VM; it returns the
	// snapshot's location.
	HibernateSandbox(ctx context.Context, id string) (string, error)
	// Exec calls fn for every event, the exit event last.
	Exec(ctx context.Context, req *pb.ExecRequest, fn func(*pb.ExecResponse) error) error
	WriteFile(ctx context.Context, hdr *pb.WriteFileHeader, r io.Reader) (*pb.WriteFileResponse, error)
	// ReadFile calls first(size) before writing anything to w.
	ReadFile(ctx context.Context, req *pb.ReadFileRequest, first func(size int64) error, w io.Writer) (int64, error)
}

// Agents finds the agent of a host; an unknown or disconnected host is
// errdefs.ErrUnavailable.
type Agents interface {
	Agent(hostID string) (Agent, error)
}

// Config tunes the API; zero values take the defaults.
type Config struct {
	MaxJSONBytes    int64         // request bodies other than uploads (default 1 MiB)
	MaxUploadBytes  int64         // PUT .../files (default 100 MiB)
	MaxOutputBytes  int           // stdout and stderr kept by non-streaming exec, each (default 8 MiB)
	CreateTimeout   time.Duration // agent create, detached from the request (default 3 min)
	DefaultTemplate string        // default "minimal"
	RateLimit       auth.Limit    // per key, unless the key has its own (default 20/s, burst 40)
	// MetricsPerKey adds per-key pool gauges (label key_id) to /metrics.
	MetricsPerKey bool
	// ActivityEvery is how often a long exec, transfer or terminal
	// session marks its sandbox active (default 5 s).
	ActivityEvery time.Duration
}

func (c *Config) defaults() {
	if c.MaxJSONBytes <= 0 {
		c.MaxJSONBytes = 1 << 20
	}
	if c.MaxUploadBytes <= 0 {
		c.MaxUploadBytes = 100 << 20
	}
	if c.MaxOutputBytes <= 0 {
		c.MaxOutputBytes = 8 << 20
	}
	if c.CreateTimeout <= 0 {
		c.CreateTimeout = 3 * time.Minute
	}
	if c.ActivityEvery <= 0 {
		c.ActivityEvery = 5 * time.Second
	}
	if c.DefaultTemplate == "" {
		c.DefaultTemplate = "minimal"
	}
	if c.RateLimit.Rate <= 0 || c.RateLimit.Burst < 1 {
		c.RateLimit = auth.Limit{Rate: 20, Burst: 40}
	}
}

// Deps are the API's collaborators.
type Deps struct {
	Store     *store.Store
	Agents    Agents
	Scheduler scheduler.Scheduler
	Audit     *store.AuditWriter // nil = no audit
	// Activity records exec, file and terminal use for the idle timers
	// (nil = not recorded).
	Activity *store.ActivityRecorder
	// Collectors are registered on /metrics with the API's own.
	Collectors []prometheus.Collector
	Log        *slog.Logger
}

// Server holds the handlers.
type Server struct {
	cfg      Config
	st       *store.Store
	agents   Agents
	sched    scheduler.Scheduler
	audit    *store.AuditWriter
	activity *store.ActivityRecorder
	log      *slog.Logger
	authn    *auth.Authenticator
	limiter  *auth.Limiter
	metrics  *metrics
}

// New returns a server.
func New(cfg Config, d Deps) (*Server, error) {
	cfg.defaults()
	lim, err := auth.NewLimiter(cfg.RateLimit)
	if err != nil {
		return nil, err
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, st: d.Store, agents: d.Agents, sched: d.Scheduler, audit: d.Audit, activity: d.Activity, log: log,
		authn: auth.NewAuthenticator(d.Store), limiter: lim,
	}
	s.metrics = newMetrics(s)
	for _, c := range d.Collectors {
		if err := s.metrics.reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return s, nil
}

// Handler is the router with every route.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.requestID, s.logRequests, s.observe, s.recoverPanics)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, errNotFoundRoute)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, errMethod)
	})
	r.Get("/healthz", s.healthz)
	// Prometheus metrics, unauthenticated: expose the listener only where
	// scrapers may see these counts.
	r.Method(http.MethodGet, "/metrics", s.metricsHandler())
	r.Route("/v1", func(r chi.Router) {
		r.Use(s.authenticate, s.rateLimit)
		r.Post("/sandboxes", s.createSandbox)
		r.Get("/sandboxes", s.listSandboxes)
		r.Get("/sandboxes/{id}", s.getSandbox)
		r.Patch("/sandboxes/{id}", s.updateSandbox)
		r.Delete("/sandboxes/{id}", s.deleteSandbox)
		r.Post("/sandboxes/{id}/pause", s.pauseSandbox)
		r.Post("/sandboxes/{id}/resume", s.resumeSandbox)
		r.Post("/sandboxes/{id}/hibernate", s.hibernateSandbox)
		r.Post("/sandboxes/{id}/exec", s.exec)
		r.Put("/sandboxes/{id}/files", s.writeFile)
		r.Get("/sandboxes/{id}/files/*", s.readFile)
		r.Get("/sandboxes/{id}/terminal", s.terminal)
		r.Group(func(r chi.Router) {
			r.Use(s.adminOnly)
			r.Get("/hosts", s.listHosts)
			r.Get("/keys", s.listKeys)
			r.Post("/keys", s.createKey)
			r.Delete("/keys/{id}", s.revokeKey)
		})
	})
	return r
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.st.Ping(r.Context()); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
