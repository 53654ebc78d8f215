package server

import (
	"context"

	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/sandbox"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// SnapshotSandbox implements pb.HostAgentServiceServer.
func (s *Server) SnapshotSandbox(ctx context.Context, req *pb.SnapshotSandboxRequest) (*pb.SnapshotSandboxResponse, error) {
	meta, err := s.m.Snapshot(ctx, req.GetSandboxId(), req.GetSnapshotId())
	if err != nil {
		return nil, err
	}
	return &pb.SnapshotSandboxResponse{Snapshot: snapshotToPB(meta)}, nil
}

// HibernateSandbox implements pb.HostAgentServiceServer.
func (s *Server) HibernateSandbox(ctx context.Context, req *pb.HibernateSandboxRequest) (*pb.HibernateSandboxResponse, error) {
	rec, meta, err := s.m.Hibernate(ctx, req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	return &pb.HibernateSandboxResponse{Sandbox: sandboxToPB(rec), Snapshot: snapshotToPB(meta)}, nil
}

// RestoreSandbox implements pb.HostAgentServiceServer.
func (s *Server) RestoreSandbox(ctx context.Context, req *pb.RestoreSandboxRequest) (*pb.RestoreSandboxResponse, error) {
	rec, _, err := s.m.Restore(ctx, req.GetSandboxId(), req.GetSnapshotId(), sandbox.ForkOptions{
		Metadata: req.GetMetadata(), Network: policyFromPB(req.GetNetwork()), TimeoutSec: int(req.GetTimeoutSec()),
	})
	if err != nil {
		return nil, err
	}
	return &pb.RestoreSandboxResponse{Sandbox: sandboxToPB(rec), EnvdAccessToken: rec.AccessToken}, nil
}

// ListSnapshots implements pb.HostAgentServiceServer.
func (s *Server) ListSnapshots(ctx context.Context, req *pb.ListSnapshotsRequest) (*pb.ListSnapshotsResponse, error) {
	metas, err := s.m.ListSnapshots(ctx, req.GetSandboxId())
	if err != nil {
		return nil, err
	}
	out := &pb.ListSnapshotsResponse{}
	for _, m := range metas {
		out.Snapshots = append(out.Snapshots, snapshotToPB(m))
	}
	return out, nil
}

// DeleteSnapshot implements pb.HostAgentServiceServer.
func (s *Server) DeleteSnapshot(ctx context.Context, req *pb.DeleteSnapshotRequest) (*pb.DeleteSnapshotResponse, error) {
	if err := s.m.DeleteSnapshot(ctx, req.GetSnapshotId()); err != nil {
		return nil, err
	}
	return &pb.DeleteSnapshotResponse{}, nil
}
