package server

import (
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/sandbox"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/snapstore"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

var stateToPB = map[models.SandboxStatus]pb.SandboxState{
	models.StatusStarting:   pb.SandboxState_SANDBOX_STATE_STARTING,
	models.StatusRunning:    pb.SandboxState_SANDBOX_STATE_RUNNING,
	models.StatusPaused:     pb.SandboxState_SANDBOX_STATE_PAUSED,
	models.StatusHibernated: pb.SandboxState_SANDBOX_STATE_HIBERNATED,
	models.StatusStopped:    pb.SandboxState_SANDBOX_STATE_STOPPED,
	models.StatusError:      pb.SandboxState_SANDBOX_STATE_ERROR,
}

// StatusFromPB maps a wire state back to the shared status (for clients).
func StatusFromPB(s pb.SandboxState) models.SandboxStatus {
	for k, v := range stateToPB {
		if v == s {
			return k
		}
	}
	return models.StatusPending
}

var bootToPB = map[string]pb.BootMode{
	sandbox.BootCold:             pb.BootMode_BOOT_MODE_COLD,
	sandbox.BootTemplateSnapshot: pb.BootMode_BOOT_MODE_TEMPLATE_SNAPSHOT,
	sandbox.BootSnapshot:         pb.BootMode_BOOT_MODE_SNAPSHOT,
}

func ts(t interface{ IsZero() bool }) bool { return !t.IsZero() }

func sandboxToPB(r *agentstate.Record) *pb.Sandbox {
	s := &pb.Sandbox{
		SandboxId:   r.SandboxID,
		State:       stateToPB[r.Status],
		Template:    r.Template,
		Vcpus:       int32(r.Request.VCPUs),
		MemoryMb:    int32(r.Request.MemoryMB),
		DiskMb:      int32(r.Resources().DiskMB),
		Metadata:    r.Request.Metadata,
		TimeoutSec:  int32(r.Request.TimeoutSec),
		CreatedAt:   timestamppb.New(r.CreatedAt),
		GuestIp:     r.GuestIP,
		HostIp:      r.HostIP,
		Driver:      r.Driver,
		BootMode:    bootToPB[r.BootMode],
		EnvdVersion: r.EnvdVersion,
		Error:       r.Error,
		SnapshotId:  r.Hibernation,
		Network:     policyToPB(r.Request.Network),
	}
	if ts(r.StartedAt) {
		s.StartedAt = timestamppb.New(r.StartedAt)
	}
	if ts(r.PausedAt) {
		s.PausedAt = timestamppb.New(r.PausedAt)
	}
	return s
}

func policyToPB(p agentstate.NetworkPolicy) *pb.NetworkPolicy {
	e := pb.NetworkPolicy_EGRESS_ALLOW_ALL
	if p.DenyAll {
		e = pb.NetworkPolicy_EGRESS_DENY_ALL
	}
	return &pb.NetworkPolicy{Egress: e, AllowCidrs: p.AllowCIDRs, DenyCidrs: p.DenyCIDRs}
}

func policyFromPB(p *pb.NetworkPolicy) agentstate.NetworkPolicy {
	if p == nil {
		return agentstate.NetworkPolicy{}
	}
	return agentstate.NetworkPolicy{
		DenyAll:    p.GetEgress() == pb.NetworkPolicy_EGRESS_DENY_ALL,
		AllowCIDRs: p.GetAllowCidrs(),
		DenyCIDRs:  p.GetDenyCidrs(),
	}
}

func snapshotToPB(m snapstore.Meta) *pb.Snapshot {
	return &pb.Snapshot{
		SnapshotId:  m.SnapshotID,
		SandboxId:   m.SandboxID,
		Template:    m.Template,
		Vcpus:       int32(m.VCPUs),
		MemoryMb:    int32(m.MemoryMB),
		MemBytes:    m.MemBytes,
		DiskBytes:   m.DiskBytes,
		CreatedAt:   timestamppb.New(m.CreatedAt),
		Location:    m.Location,
		Hibernation: m.Hibernation,
	}
}

func exitToPB(e sandbox.ExecExit) *pb.ExecExit {
	return &pb.ExecExit{
		ExitCode: int32(e.ExitCode), Exited: e.Exited, Status: e.Status,
		Duration: durationpb.New(e.Duration), Error: e.Error,
	}
}

func capacityToPB(c models.Capacity) *pb.Capacity {
	return &pb.Capacity{
		TotalVcpus: int32(c.TotalVCPUs), UsedVcpus: int32(c.UsedVCPUs),
		TotalMemoryMb: c.TotalMemoryMB, UsedMemoryMb: c.UsedMemoryMB,
		TotalDiskMb: c.TotalDiskMB, UsedDiskMb: c.UsedDiskMB,
		SandboxCount: int32(c.SandboxCount),
	}
}
