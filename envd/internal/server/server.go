// Package server assembles envd's HTTP surface: the Connect services
// (process, filesystem), the plain routes (/health, /metrics, /envs, /init,
// /files) and the middleware in front of them (CORS, X-Access-Token, user
// resolution). It owns no process or file logic itself; transports (TCP,
// vsock, virtio-serial) live in internal/transport and all serve Handler().
package server

import (
	"log/slog"
	"math"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/envd/internal/files"
	"github.com/wrenn-dev/envd/internal/filesystem"
	"github.com/wrenn-dev/envd/internal/gen/filesystem/filesystemconnect"
	"github.com/wrenn-dev/envd/internal/gen/process/processconnect"
	"github.com/wrenn-dev/envd/internal/process"
	"github.com/wrenn-dev/envd/internal/reaper"
	"github.com/wrenn-dev/envd/internal/state"
)

// Version is envd's protocol version as reported to clients. E2B SDKs gate
// features on it, so it must stay >= 0.6.4.
const Version = "0.7.0"

// Config is what New needs.
type Config struct {
	Log    *slog.Logger
	State  *state.State
	Reaper *reaper.Reaper
	// MaxUploadBytes caps one POST /files body; 0 means no cap.
	MaxUploadBytes int64
	// SetClock, when set, is called with the /init timestamp so a restored
	// guest's wall clock jumps to the present. Nil outside a VM.
	SetClock func(time.Time) error
	// SetHostname, when set, applies the /init hostname. Nil outside a VM.
	SetHostname func(string) error
	// Reseed, when set, mixes /init entropy into the kernel RNG. Nil
	// outside a VM.
	Reseed func([]byte) error
	// DiskPath is the filesystem /metrics reports on ("/" by default).
	DiskPath string
}

// Server is envd's HTTP handler plus the services behind it.
type Server struct {
	cfg     Config
	log     *slog.Logger
	state   *state.State
	proc    *process.Service
	fs      *filesystem.Service
	files   *files.Handler
	cpu     cpuSampler
	handler http.Handler
}

// New wires every route. Close releases the services' resources.
func New(cfg Config) *Server {
	if cfg.DiskPath == "" {
		cfg.DiskPath = "/"
	}
	s := &Server{cfg: cfg, log: cfg.Log, state: cfg.State}
	s.proc = process.New(cfg.State, cfg.Reaper, cfg.Log.With("svc", "process"))
	s.fs = filesystem.New(cfg.State, cfg.Log.With("svc", "filesystem"))
	s.files = files.New(cfg.State, cfg.Log.With("svc", "files"), files.Options{
		MaxUploadBytes: cfg.MaxUploadBytes,
		Token:          cfg.State.Token,
	})

	mux := http.NewServeMux()
	// Responses are never compressed: process output is mostly already
	// compressed or binary, and gzip costs about 3x stdout throughput. Clients
	// may still send compressed requests.
	opts := []connect.HandlerOption{connect.WithCompressMinBytes(math.MaxInt32)}
	mux.Handle(processconnect.NewProcessHandler(s.proc, opts...))
	mux.Handle(filesystemconnect.NewFilesystemHandler(s.fs, opts...))
	s.files.Register(mux)
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("GET /envs", s.envs)
	mux.HandleFunc("POST /init", s.init)

	s.handler = cors(s.requireToken(s.resolveUser(mux)))
	return s
}

// Handler is the http.Handler every transport serves.
func (s *Server) Handler() http.Handler { return s.handler }

// Close stops watchers and kills the process groups envd started.
func (s *Server) Close() {
	s.fs.Close()
	s.proc.Close()
}

// NewHTTPServer returns an http.Server for h that speaks HTTP/1.1 and
// cleartext HTTP/2 (gRPC clients need the latter), with no read or write
// deadline because process and watch streams may live for days.
func NewHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		Protocols:         &p,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       640 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
