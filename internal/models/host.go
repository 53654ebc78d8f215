package models

import "time"

// HostStatus is a host agent's health as the control plane sees it.
type HostStatus string

// Host statuses.
const (
	HostHealthy   HostStatus = "healthy"   // heartbeats arrive; gets new sandboxes
	HostUnhealthy HostStatus = "unhealthy" // missed heartbeats; gets none
	HostDraining  HostStatus = "draining"  // healthy but takes no new sandboxes
)

// Capacity is a host's total and used resources, as its agent reports in
// every heartbeat. Totals are what the agent is configured to hand out
// (vCPUs may be overcommitted), not raw hardware.
type Capacity struct {
	TotalVCPUs    int   `json:"total_vcpus"`
	UsedVCPUs     int   `json:"used_vcpus"`
	TotalMemoryMB int64 `json:"total_memory_mb"`
	UsedMemoryMB  int64 `json:"used_memory_mb"`
	TotalDiskMB   int64 `json:"total_disk_mb"`
	UsedDiskMB    int64 `json:"used_disk_mb"`
	SandboxCount  int   `json:"sandbox_count"`
}

// FreeVCPUs is TotalVCPUs - UsedVCPUs, never negative.
func (c Capacity) FreeVCPUs() int { return max(c.TotalVCPUs-c.UsedVCPUs, 0) }

// FreeMemoryMB is TotalMemoryMB - UsedMemoryMB, never negative.
func (c Capacity) FreeMemoryMB() int64 { return max(c.TotalMemoryMB-c.UsedMemoryMB, 0) }

// FreeDiskMB is TotalDiskMB - UsedDiskMB, never negative.
func (c Capacity) FreeDiskMB() int64 { return max(c.TotalDiskMB-c.UsedDiskMB, 0) }

// Fits reports whether r fits in what is free (disk only when both the
// request and the total are known).
func (c Capacity) Fits(r Resources) bool {
	if r.VCPUs > c.FreeVCPUs() || int64(r.MemoryMB) > c.FreeMemoryMB() {
		return false
	}
	if r.DiskMB > 0 && c.TotalDiskMB > 0 && int64(r.DiskMB) > c.FreeDiskMB() {
		return false
	}
	return true
}

// Host is one registered host agent.
type Host struct {
	ID            string     `json:"id"`
	GRPCEndpoint  string     `json:"grpc_endpoint"`
	Status        HostStatus `json:"status"`
	AgentVersion  string     `json:"agent_version,omitempty"`
	Driver        string     `json:"driver,omitempty"` // qemu | firecracker
	Capacity      Capacity   `json:"capacity"`
	LastHeartbeat time.Time  `json:"last_heartbeat,omitzero"`
}
