package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// Network gives each sandbox its network namespace, TAP and addresses.
type Network interface {
	// Setup creates the sandbox's network. It persists what it is about
	// to create before creating it, so Teardown(sandboxID, nil) after a
	// crash in the middle still finds it.
	Setup(ctx context.Context, sandboxID string, p agentstate.NetworkPolicy) (NetInfo, error)
	// Teardown removes everything Setup made for the sandbox. The handle
	// is NetInfo.Handle as persisted (nil when the crash came before it
	// was recorded). Idempotent: nothing to remove is success.
	Teardown(ctx context.Context, sandboxID string, handle json.RawMessage) error
}

// NetInfo is a sandbox's network as the VM and the agent need it.
type NetInfo struct {
	Handle     json.RawMessage // persisted verbatim, handed back to Teardown
	NetNS      string          // path of the namespace holding the TAP
	Tap        string
	GuestIP    string // the guest's address inside its namespace
	HostIP     string // where the host reaches the guest
	KernelArgs string // kernel command line for the guest's network (cold boot)
}

// NetCounters are a sandbox's network byte counters, seen from the guest.
type NetCounters struct {
	RxBytes, TxBytes uint64
}

// NetworkStats is an optional ability of a Network.
type NetworkStats interface {
	Counters(ctx context.Context, sandboxID string, handle json.RawMessage) (NetCounters, error)
}

// Cgroups holds each VMM in a control group with CPU and memory limits.
type Cgroups interface {
	// Create makes the sandbox's group; idempotent.
	Create(ctx context.Context, sandboxID string, vcpus, memoryMB int) (json.RawMessage, error)
	// AddProcess moves a process (the VMM) into the group; idempotent.
	AddProcess(ctx context.Context, handle json.RawMessage, pid int) error
	// Remove kills whatever is still in the group and deletes it; a nil
	// handle means "the group this manager would have made for the
	// sandbox". Idempotent.
	Remove(ctx context.Context, sandboxID string, handle json.RawMessage) error
	// Stats reads the group's counters.
	Stats(ctx context.Context, handle json.RawMessage) (CgroupStats, error)
}

// CgroupStats is one reading of a sandbox's group.
type CgroupStats struct {
	CPU         time.Duration
	MemoryBytes uint64
	MemoryLimit uint64
}

// Image is a resolved template: what a cold boot needs.
type Image struct {
	Template   string
	Version    string
	Kernel     string
	Initrd     string
	KernelArgs string
	Rootfs     string // never booted in place: cloned per sandbox
	SizeBytes  int64
}

// Images resolves template names.
type Images interface {
	// Resolve fails with errdefs.ErrNotFound for unknown templates.
	Resolve(template string) (Image, error)
	// Templates lists the templates this host can boot.
	Templates() []string
}

// TemplateCreate is one sandbox to make from a template's snapshot.
type TemplateCreate struct {
	SandboxID string
	Template  string
	VCPUs     int
	MemoryMB  int
	RunDir    string
	Rootfs    string // created by the implementation, removed by it on failure
	Net       *vm.NetSpec
	Init      envdclient.InitRequest
	// Placement is the restored VM's vm.Spec.Placement (it moves the VMM
	// into the sandbox's cgroup before the snapshot's memory is loaded).
	Placement func(pid int) error
}

// ErrTemplateUnusable is returned by TemplateSnapshots.Create, having
// acquired nothing, when the template's snapshot cannot serve the sandbox
// (for example it was made without a network card); the manager then
// boots the sandbox cold.
var ErrTemplateUnusable = errors.New("template snapshot unusable for this sandbox")

// TemplateSnapshots makes sandboxes from template snapshots.
type TemplateSnapshots interface {
	// Usable reports whether a sandbox of this shape can come from the
	// template's snapshot (some shapes need a cold boot).
	Usable(template string, vcpus, memoryMB int) bool
	// Prepare builds the snapshot if it is missing (at agent start).
	Prepare(ctx context.Context, template string, vcpus, memoryMB int) error
	// Create clones the snapshot's disk to Rootfs, restores the VM into
	// RunDir and posts envd /init. On error nothing is left behind.
	Create(ctx context.Context, c TemplateCreate) (vm.Instance, *envdclient.Client, error)
}
