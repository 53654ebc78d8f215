package hostagent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/wrenn-dev/wrenn-sandbox/internal/config"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/server"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// ServiceName is the gRPC service the health server reports on.
const ServiceName = "hostagent.HostAgentService"

// maxMsgBytes bounds one gRPC message (file chunks are at most 1 MiB).
const maxMsgBytes = 4 << 20

// GRPCServer builds the mTLS gRPC server with the agent's service,
// health, reflection, keepalives and interceptors.
func (a *Agent) GRPCServer() (*grpc.Server, *health.Server, error) {
	tlsCfg, err := config.ServerTLS(a.cfg.TLS)
	if err != nil {
		return nil, nil, err
	}
	mu, ms := a.exporter.RPCInterceptors()
	eu, es := server.Interceptors(a.log)
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(maxMsgBytes),
		grpc.ChainUnaryInterceptor(mu, eu),
		grpc.ChainStreamInterceptor(ms, es),
	)
	pb.RegisterHostAgentServiceServer(gs, server.New(server.Config{
		Manager: a.mgr, HostID: a.hostID, Version: a.version, Log: a.log,
	}))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	reflection.Register(gs)
	return gs, hs, nil
}

// Serve listens on the configured addresses and serves until ctx ends,
// then stops gracefully (bounded by AGENT_SHUTDOWN_TIMEOUT) and detaches
// from every VM, which keeps running. ready, when set, is called with the
// gRPC address once it listens.
func (a *Agent) Serve(ctx context.Context, ready func(grpcAddr, metricsAddr string)) error {
	defer a.closeBackends()
	gs, hs, err := a.GRPCServer()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", a.cfg.ListenAddr, err)
	}
	var hsrv *http.Server
	metricsAddr := ""
	if a.cfg.MetricsAddr != "" && a.cfg.MetricsAddr != "off" {
		mln, err := net.Listen("tcp", a.cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen %s: %w", a.cfg.MetricsAddr, err)
		}
		metricsAddr = mln.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("/metrics", a.exporter.Handler())
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
		hsrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hsrv.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("metrics server", "err", err)
			}
		}()
	}
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(ln) }()
	a.log.Info("host agent serving", "host_id", a.hostID, "grpc", ln.Addr().String(), "metrics", metricsAddr,
		"driver", a.driver.Name(), "version", a.version)
	if ready != nil {
		ready(ln.Addr().String(), metricsAddr)
	}
	if a.cfg.TemplateSnapshots == config.TemplateSnapshotsStart {
		go a.PrepareTemplates(ctx)
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	a.log.Info("host agent stopping; sandboxes keep running", "timeout", a.cfg.ShutdownTimeout)
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	t := time.NewTimer(a.cfg.ShutdownTimeout)
	select {
	case <-stopped:
	case <-t.C:
		a.log.Warn("graceful stop timed out; closing remaining calls")
		gs.Stop()
		<-stopped
	}
	t.Stop()
	if hsrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = hsrv.Shutdown(sctx)
		cancel()
	}
	return serveErr
}
