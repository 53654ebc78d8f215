// Package vm defines the contract every virtual-machine driver implements
// (QEMU microvm in internal/vm/qemu, Firecracker in internal/vm/firecracker)
// and the types they share. It owns no VMM code and imports nothing from
// the control plane. Drivers own the VMM process and its sockets; they do
// not allocate networks, clone disks or pick sandbox IDs: the host agent
// hands them ready resources in a Spec.
package vm

import (
	"context"
	"errors"
	"net"
	"time"
)

// Errors drivers return; callers match them with errors.Is.
var (
	// ErrNotSupported: the driver lacks an optional ability (see Capabilities).
	ErrNotSupported = errors.New("not supported by this VM driver")
	// ErrNotFound: the VM (or its persisted handle) does not exist.
	ErrNotFound = errors.New("vm not found")
	// ErrInvalidSpec: the Spec is incomplete or names missing files.
	ErrInvalidSpec = errors.New("invalid vm spec")
	// ErrBootTimeout: the VMM did not reach a running guest in time.
	ErrBootTimeout = errors.New("vm boot timed out")
	// ErrWrongState: the operation is not valid in the VM's current state
	// (for example Resume on a running VM).
	ErrWrongState = errors.New("vm in wrong state for operation")
)

// Spec is everything needed to boot or restore one VM. Paths are absolute.
type Spec struct {
	ID         string // sandbox ID; also names the VMM process
	VCPUs      int
	MemoryMB   int
	Kernel     string // kernel image (bzImage/vmlinuz for QEMU, vmlinux for Firecracker)
	Initrd     string // optional initramfs
	KernelArgs string // extra kernel command line (the driver adds its own)
	Rootfs     string // this VM's own writable rootfs (a clone; the driver never clones)
	RunDir     string // private directory for sockets, logs, pid file; created by the caller
	Net        *NetSpec
	// MemoryFile, when set on Create, backs guest RAM with this file
	// (shared mapping: the guest's memory is the file) instead of
	// anonymous memory, and a Snapshot then saves only device state and
	// records the file (by a path relative to the snapshot dir when the
	// file lies inside it), so every Restore maps it privately
	// (copy-on-write, pages read on first touch) instead of reading the
	// whole memory back. The file must not exist; Create makes it. A
	// restore reads the file for as long as it runs, so it must stay
	// unchanged after the snapshot: use it only for template VMs that are
	// destroyed right after their one snapshot (never resumed). Drivers
	// without Capabilities.MemoryFile return ErrNotSupported. Ignored by
	// Restore.
	MemoryFile string
	// BootTimeout bounds one boot attempt (VMM start to guest running).
	BootTimeout time.Duration
	// Placement, when set, is called with the VMM's pid after the process
	// exists and before the guest runs or guest memory is loaded (the
	// host agent moves the VMM into the sandbox's cgroup here, so the
	// guest's memory is charged to that group from its first page). A
	// driver that retries a start calls it for every new process. An
	// error aborts the Create or Restore: the driver kills the VMM and
	// cleans up as for any failed start. Not persisted in a Handle.
	Placement func(pid int) error `json:"-"`
}

// NetSpec attaches the guest's eth0 to an existing TAP device.
type NetSpec struct {
	TapName string
	MAC     string
	// NetNS is the path of the network namespace holding the TAP
	// (/var/run/netns/x); empty means the agent's own namespace.
	NetNS string
}

// Validate checks the fields every driver needs.
func (s Spec) Validate() error {
	switch {
	case s.ID == "":
		return errors.Join(ErrInvalidSpec, errors.New("empty id"))
	case s.VCPUs < 1:
		return errors.Join(ErrInvalidSpec, errors.New("vcpus < 1"))
	case s.MemoryMB < 64:
		return errors.Join(ErrInvalidSpec, errors.New("memory below 64 MiB"))
	case s.Kernel == "", s.Rootfs == "", s.RunDir == "":
		return errors.Join(ErrInvalidSpec, errors.New("kernel, rootfs and run dir are required"))
	}
	return nil
}

// Capabilities says which optional abilities a driver has.
type Capabilities struct {
	Snapshot      bool // Snapshot and Restore work
	DiffSnapshot  bool // incremental memory snapshots
	Reattach      bool // a restarted agent can take over a running VMM
	Vsock         bool // the envd channel is vsock (else a driver-specific stream)
	LiveMigration bool
	MemoryFile    bool // Spec.MemoryFile works (file-backed RAM, lazy restores)
}

// Driver creates, restores and reattaches VMs. Implementations are safe for
// concurrent use across different VM IDs.
type Driver interface {
	Name() string
	Capabilities() Capabilities
	// Create boots a new VM. It returns once the guest kernel is running
	// (not when envd answers: that is the caller's health check). On error
	// nothing is left behind: no process, no socket in RunDir.
	Create(ctx context.Context, spec Spec) (Instance, error)
	// Restore starts a VM from a snapshot directory written by
	// Instance.Snapshot, using spec's rootfs, RunDir and network instead of
	// the original ones. The restored VM is running when Restore returns.
	Restore(ctx context.Context, spec Spec, snapshotDir string) (Instance, error)
	// Reattach takes over a VM whose VMM is still running after the agent
	// restarted, from the Handle it persisted. ErrNotFound when the VMM is
	// gone.
	Reattach(ctx context.Context, h Handle) (Instance, error)
}

// State is a VM's run state as the VMM reports it.
type State string

const (
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateStopped State = "stopped"
)

// Instance is one running (or paused) VM. Methods are safe for concurrent
// use; Destroy may be called at any time and more than once.
type Instance interface {
	ID() string
	// Handle is what the agent persists to reattach after a restart.
	Handle() Handle
	State(ctx context.Context) (State, error)
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	// Snapshot writes the memory state and a consistent copy of the rootfs
	// into dir (created by the caller, empty but for the VM's own
	// Spec.MemoryFile, which may live there). The VM is paused for the
	// duration and left paused; the caller resumes or destroys it.
	Snapshot(ctx context.Context, dir string) (SnapshotInfo, error)
	// DialEnvd opens a new stream to envd inside the guest. Streams do not
	// survive a snapshot/restore; callers redial.
	DialEnvd(ctx context.Context) (net.Conn, error)
	// Destroy kills the VMM and removes everything in RunDir the driver
	// created. The rootfs is the caller's. Idempotent.
	Destroy(ctx context.Context) error
	// Exited is closed when the VMM process ends for any reason.
	Exited() <-chan struct{}
}

// Handle is the JSON-serialisable description of a running VM.
type Handle struct {
	Driver  string            `json:"driver"`
	ID      string            `json:"id"`
	PID     int               `json:"pid"`
	Spec    Spec              `json:"spec"`
	Sockets map[string]string `json:"sockets"` // role -> path (api, qmp, envd...)
}

// SnapshotInfo describes what Snapshot wrote.
type SnapshotInfo struct {
	Dir       string        `json:"dir"`
	MemBytes  int64         `json:"mem_bytes"`
	DiskBytes int64         `json:"disk_bytes"`
	Took      time.Duration `json:"took"`
}
