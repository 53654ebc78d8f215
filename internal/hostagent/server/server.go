// Package server is the host agent's gRPC service: it decodes requests,
// calls the sandbox manager and encodes replies. Errors from the manager
// are errdefs sentinels; the interceptors of this package translate them
// to gRPC status codes (errdefs.ToGRPC), the only place that happens on
// the agent. It owns no sandbox state and imports nothing from the
// control plane.
package server

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/sandbox"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// Server implements pb.HostAgentServiceServer.
type Server struct {
	pb.UnimplementedHostAgentServiceServer

	m       *sandbox.Manager
	hostID  string
	version string
	started time.Time
	log     *slog.Logger
}

// Config configures a Server.
type Config struct {
	Manager *sandbox.Manager
	HostID  string
	Version string
	Log     *slog.Logger
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{m: cfg.Manager, hostID: cfg.HostID, version: cfg.Version, started: time.Now(), log: cfg.Log}
}

// CreateSandbox implements pb.HostAgentServiceServer.
func (s *Server) CreateSandbox(ctx context.Context, req *pb.CreateSandboxRequest) (*pb.CreateSandboxResponse, error) {
	rec, err := s.m.Create(ctx, req.GetSandboxId(), agentstate.Request{
		Template:       req.GetTemplate(),
		VCPUs:          int(req.GetVcpus()),
		MemoryMB:       int(req.GetMemoryMb()),
		DiskMB:         int(req.GetDiskMb()),
		Envs:           req.GetEnvs(),
		Metadata:       req.GetMetadata(),
		TimeoutSec:     int(req.GetTimeoutSec()),
		Network:        policyFromPB(req.GetNetwork()),
		DefaultUser:    req.GetDefaultUser(),
		DefaultWorkdir: req.GetDefaultWorkdir(),
		ColdBoot:       req.GetColdBoot(),
	})
	if err != nil {
		return nil, err
	}
	return &pb.CreateSandboxResponse{Sandbox: sandboxToPB(rec), EnvdAccessToken: rec.AccessToken}, nil
}

// DestroySandbox implements pb.HostAgentServiceServer.
func (s *Server) DestroySandbox(ctx context.Context, req *pb.DestroySandboxRequest) (*pb.DestroySandboxResponse, error) {
	if err := s.m.Destroy(ctx, req.GetSandboxId()); err != nil {
		return nil, err
	}
	return &pb.DestroySandboxResponse{}, nil
}

// PauseSandbox implements pb.HostAgentServiceServer.
func (s *Server) PauseSandbox(ctx context.Context, req *pb.PauseSandboxRequest) (*pb.PauseSandboxResponse, error) {
	rec, err := s.m.Pause(ctx, req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	return &pb.PauseSandboxResponse{Sandbox: sandboxToPB(rec)}, nil
}

// ResumeSandbox implements pb.HostAgentServiceServer.
func (s *Server) ResumeSandbox(ctx context.Context, req *pb.ResumeSandboxRequest) (*pb.ResumeSandboxResponse, error) {
	rec, err := s.m.Resume(ctx, req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	return &pb.ResumeSandboxResponse{Sandbox: sandboxToPB(rec)}, nil
}

// GetSandbox implements pb.HostAgentServiceServer.
func (s *Server) GetSandbox(_ context.Context, req *pb.GetSandboxRequest) (*pb.GetSandboxResponse, error) {
	rec, err := s.m.Get(req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	return &pb.GetSandboxResponse{Sandbox: sandboxToPB(rec)}, nil
}

// ListSandboxes implements pb.HostAgentServiceServer.
func (s *Server) ListSandboxes(context.Context, *pb.ListSandboxesRequest) (*pb.ListSandboxesResponse, error) {
	recs := s.m.List()
	out := &pb.ListSandboxesResponse{Sandboxes: make([]*pb.Sandbox, 0, len(recs))}
	for _, r := range recs {
		out.Sandboxes = append(out.Sandboxes, sandboxToPB(r))
	}
	return out, nil
}

// GetMetrics implements pb.HostAgentServiceServer.
func (s *Server) GetMetrics(ctx context.Context, req *pb.GetMetricsRequest) (*pb.GetMetricsResponse, error) {
	ms, err := s.m.Metrics(ctx, req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	out := &pb.GetMetricsResponse{}
	for _, m := range ms {
		out.Sandboxes = append(out.Sandboxes, &pb.SandboxMetrics{
			SandboxId: m.SandboxID, SampledAt: timestamppb.New(m.SampledAt),
			CpuSeconds: m.CPU.Seconds(), MemoryBytes: m.MemoryBytes, MemoryLimitBytes: m.MemoryLimit,
			DiskBytes: m.DiskBytes, NetRxBytes: m.NetRxBytes, NetTxBytes: m.NetTxBytes,
			VmmPid: uint32(m.VMMPID),
		})
	}
	return out, nil
}

// Heartbeat implements pb.HostAgentServiceServer.
func (s *Server) Heartbeat(context.Context, *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	byState := map[string]int32{}
	for _, r := range s.m.List() {
		byState[string(r.Status)]++
	}
	return &pb.HeartbeatResponse{
		HostId:           s.hostID,
		AgentVersion:     s.version,
		Driver:           s.m.DriverName(),
		Capacity:         capacityToPB(s.m.Capacity()),
		Now:              timestamppb.Now(),
		StartedAt:        timestamppb.New(s.started),
		Templates:        s.m.Templates(),
		SandboxesByState: byState,
	}, nil
}
