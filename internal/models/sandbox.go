package models

import (
	"fmt"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// SandboxStatus is a sandbox's lifecycle state.
type SandboxStatus string

// The states (original design, plus nothing else):
//
//	PENDING → STARTING → RUNNING ⇄ PAUSED → HIBERNATED → RUNNING
//	                        │         │          │
//	                        └─────────┴──────────┴──→ STOPPED (terminal)
//	any non-terminal state → ERROR → STOPPED
const (
	StatusPending    SandboxStatus = "pending"    // accepted, no host work yet
	StatusStarting   SandboxStatus = "starting"   // resources being acquired, VM booting
	StatusRunning    SandboxStatus = "running"    // envd answers
	StatusPaused     SandboxStatus = "paused"     // vCPUs stopped, memory kept (warm)
	StatusHibernated SandboxStatus = "hibernated" // memory and disk in a snapshot, no VMM (cold)
	StatusStopped    SandboxStatus = "stopped"    // destroyed; terminal
	StatusError      SandboxStatus = "error"      // failed; only destroy remains
)

// AllStatuses lists every status, in lifecycle order.
var AllStatuses = []SandboxStatus{
	StatusPending, StatusStarting, StatusRunning, StatusPaused,
	StatusHibernated, StatusStopped, StatusError,
}

// transitions[from] is the set of states from may move to.
var transitions = map[SandboxStatus]map[SandboxStatus]bool{
	StatusPending:    {StatusStarting: true, StatusStopped: true, StatusError: true},
	StatusStarting:   {StatusRunning: true, StatusStopped: true, StatusError: true},
	StatusRunning:    {StatusPaused: true, StatusHibernated: true, StatusStopped: true, StatusError: true},
	StatusPaused:     {StatusRunning: true, StatusHibernated: true, StatusStopped: true, StatusError: true},
	StatusHibernated: {StatusRunning: true, StatusStopped: true, StatusError: true},
	StatusError:      {StatusStopped: true},
	StatusStopped:    {},
}

// Valid reports whether s is a known status.
func (s SandboxStatus) Valid() bool {
	_, ok := transitions[s]
	return ok
}

// Terminal reports whether no transition leaves s.
func (s SandboxStatus) Terminal() bool { return s == StatusStopped }

// Live reports whether a VMM process exists in this state.
func (s SandboxStatus) Live() bool {
	return s == StatusStarting || s == StatusRunning || s == StatusPaused
}

// CanTransition reports whether from → to is allowed. Staying in the same
// state is not a transition (callers treat it as an idempotent repeat).
func CanTransition(from, to SandboxStatus) bool { return transitions[from][to] }

// Transition returns nil when from → to is allowed and an error wrapping
// errdefs.ErrConflict otherwise (errdefs.ErrInvalidArgument for unknown
// states).
func Transition(from, to SandboxStatus) error {
	if !from.Valid() || !to.Valid() {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "unknown sandbox status %q -> %q", from, to)
	}
	if !CanTransition(from, to) {
		return errdefs.Errorf(errdefs.ErrConflict, "sandbox is %s, cannot become %s", from, to)
	}
	return nil
}

// Sandbox is one sandbox as the platform knows it.
type Sandbox struct {
	ID           string            `json:"id"`
	OwnerID      string            `json:"owner_id,omitempty"`
	HostID       string            `json:"host_id,omitempty"`
	Template     string            `json:"template"`
	Status       SandboxStatus     `json:"status"`
	VCPUs        int               `json:"vcpus"`
	MemoryMB     int               `json:"memory_mb"`
	DiskMB       int               `json:"disk_mb,omitempty"`
	TimeoutSec   int               `json:"timeout_sec,omitempty"`
	GuestIP      string            `json:"guest_ip,omitempty"`
	SnapshotPath string            `json:"snapshot_path,omitempty"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	Network      *NetworkPolicy    `json:"network,omitempty"` // nil = allow all
	Error        string            `json:"error,omitempty"`   // reason, when Status is error
	CreatedAt    time.Time         `json:"created_at"`
	StartedAt    time.Time         `json:"started_at,omitzero"`
	PausedAt     time.Time         `json:"paused_at,omitzero"`
	LastActiveAt time.Time         `json:"last_active_at,omitzero"`
}

// Resources is what a sandbox reserves on its host.
type Resources struct {
	VCPUs    int `json:"vcpus"`
	MemoryMB int `json:"memory_mb"`
	DiskMB   int `json:"disk_mb"`
}

// Validate checks resources against hard bounds (not capacity).
func (r Resources) Validate() error {
	switch {
	case r.VCPUs < 1 || r.VCPUs > 64:
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "vcpus %d: want 1-64", r.VCPUs)
	case r.MemoryMB < 64 || r.MemoryMB > 256<<10:
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "memory_mb %d: want 64-262144", r.MemoryMB)
	case r.DiskMB < 0:
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "disk_mb %d: negative", r.DiskMB)
	}
	return nil
}

func (r Resources) String() string {
	return fmt.Sprintf("%d vcpu, %d MiB memory, %d MiB disk", r.VCPUs, r.MemoryMB, r.DiskMB)
}
