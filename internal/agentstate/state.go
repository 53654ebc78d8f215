// Package agentstate is the host agent's on-disk memory: one JSON record
// per sandbox (<root>/<sandbox id>/state.json), written atomically
// (temp file, fsync, rename, fsync of the directory) before each resource
// is acquired and after each step, so a record always names everything the
// sandbox might own. After a restart the agent loads every record and
// either reattaches or releases what it names. Snapshot records live
// beside them (<root>/../snapshots is the snapshot store's business, not
// this package's).
//
// Records hold the sandbox's envd access token, so files are 0600 and
// directories 0700. This package imports only shared packages and the VM
// contract.
package agentstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// FormatVersion is written into every record; a record with a newer one
// is refused rather than misread.
const FormatVersion = 1

// Steps of a create, recorded in Record.Step as each completes. A record
// still in StatusStarting after a restart is released from the last step
// back.
const (
	StepRecorded = "recorded" // the record exists; nothing acquired yet
	StepNetwork  = "network"  // the network is set up (Record.Network)
	StepCgroup   = "cgroup"   // the cgroup exists (Record.Cgroup)
	StepRootfs   = "rootfs"   // the disk clone exists (Record.Rootfs)
	StepVM       = "vm"       // the VMM runs (Record.VM)
	StepReady    = "ready"    // envd initialised; the create is complete
)

// Record is everything the agent knows about one sandbox.
type Record struct {
	Format    int                  `json:"format"`
	SandboxID string               `json:"sandbox_id"`
	Status    models.SandboxStatus `json:"status"`
	Step      string               `json:"step"`
	Error     string               `json:"error,omitempty"`

	// The request, for idempotent repeats and reporting.
	Request Request `json:"request"`

	// What the sandbox owns. Each is set before (paths) or right after
	// (handles) it is acquired.
	Driver      string          `json:"driver"`
	Dir         string          `json:"dir"`     // <root>/<id>
	RunDir      string          `json:"run_dir"` // VMM sockets and logs
	Rootfs      string          `json:"rootfs"`  // the disk clone
	VM          *vm.Handle      `json:"vm,omitempty"`
	Network     json.RawMessage `json:"network,omitempty"`
	Cgroup      json.RawMessage `json:"cgroup,omitempty"`
	NetNS       string          `json:"netns,omitempty"` // path of its network namespace
	GuestIP     string          `json:"guest_ip,omitempty"`
	HostIP      string          `json:"host_ip,omitempty"`
	AccessToken string          `json:"access_token"`
	BootMode    string          `json:"boot_mode,omitempty"` // cold | template-snapshot | snapshot
	// Hibernation is the snapshot holding a hibernated sandbox.
	Hibernation string `json:"hibernation,omitempty"`
	EnvdVersion string `json:"envd_version,omitempty"`
	Template    string `json:"template"`
	TemplateVer string `json:"template_version,omitempty"`
	// Reserved is the host capacity the sandbox holds (disk includes the
	// template image size when the request left it at 0).
	Reserved models.Resources `json:"reserved"`

	CreatedAt time.Time `json:"created_at"`
	StartedAt time.Time `json:"started_at,omitzero"`
	PausedAt  time.Time `json:"paused_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Request is what a create asked for.
type Request struct {
	Template       string            `json:"template"`
	VCPUs          int               `json:"vcpus"`
	MemoryMB       int               `json:"memory_mb"`
	DiskMB         int               `json:"disk_mb,omitempty"`
	Envs           map[string]string `json:"envs,omitempty"`
	Metadata       map[string]string `json:"metadata,omitempty"`
	TimeoutSec     int               `json:"timeout_sec,omitempty"`
	Network        NetworkPolicy     `json:"network"`
	DefaultUser    string            `json:"default_user,omitempty"`
	DefaultWorkdir string            `json:"default_workdir,omitempty"`
	ColdBoot       bool              `json:"cold_boot,omitempty"`
	// FromSnapshot is set when the sandbox was forked from a snapshot.
	FromSnapshot string `json:"from_snapshot,omitempty"`
}

// NetworkPolicy is the egress policy a sandbox was created with.
type NetworkPolicy struct {
	DenyAll    bool     `json:"deny_all,omitempty"`
	AllowCIDRs []string `json:"allow_cidrs,omitempty"`
	DenyCIDRs  []string `json:"deny_cidrs,omitempty"`
}

// SameAs reports whether two requests would make the same sandbox (the
// idempotency check of a repeated create).
func (r Request) SameAs(o Request) bool {
	return r.Template == o.Template && r.VCPUs == o.VCPUs && r.MemoryMB == o.MemoryMB &&
		r.DiskMB == o.DiskMB && r.FromSnapshot == o.FromSnapshot
}

// Resources is what the sandbox reserves on the host.
func (r *Record) Resources() models.Resources {
	if r.Reserved != (models.Resources{}) {
		return r.Reserved
	}
	return models.Resources{VCPUs: r.Request.VCPUs, MemoryMB: r.Request.MemoryMB, DiskMB: r.Request.DiskMB}
}

// Clone returns a deep copy (records are shared between goroutines by value).
func (r *Record) Clone() *Record {
	c := *r
	c.Request.Envs = cloneMap(r.Request.Envs)
	c.Request.Metadata = cloneMap(r.Request.Metadata)
	c.Request.Network.AllowCIDRs = slices.Clone(r.Request.Network.AllowCIDRs)
	c.Request.Network.DenyCIDRs = slices.Clone(r.Request.Network.DenyCIDRs)
	c.Network = slices.Clone(r.Network)
	c.Cgroup = slices.Clone(r.Cgroup)
	if r.VM != nil {
		h := *r.VM
		h.Sockets = cloneMap(r.VM.Sockets)
		if r.VM.Spec.Net != nil {
			n := *r.VM.Spec.Net
			h.Spec.Net = &n
		}
		c.VM = &h
	}
	return &c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// File names inside a sandbox directory.
const (
	StateFile  = "state.json"
	RunDir     = "run"
	RootfsFile = "rootfs.ext4"
)

// Store reads and writes records under a root directory. It holds no
// locks: the caller serialises writes of one sandbox (the manager's
// per-sandbox mutex); different sandboxes never share a file.
type Store struct {
	root string
}

// Open returns a store rooted at dir, creating it (0700).
func Open(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", abs, err)
	}
	return &Store{root: abs}, nil
}

// Root is the store's directory.
func (s *Store) Root() string { return s.root }

// Dir is the directory of one sandbox.
func (s *Store) Dir(sandboxID string) string { return filepath.Join(s.root, sandboxID) }

// Paths fills a new record's Dir, RunDir and Rootfs.
func (s *Store) Paths(r *Record) {
	r.Dir = s.Dir(r.SandboxID)
	r.RunDir = filepath.Join(r.Dir, RunDir)
	r.Rootfs = filepath.Join(r.Dir, RootfsFile)
}

// Save writes r atomically, creating the sandbox directory (0700) first.
func (s *Store) Save(r *Record) error {
	if err := id.ValidateSandboxID(r.SandboxID); err != nil {
		return err
	}
	r.Format = FormatVersion
	r.UpdatedAt = time.Now().UTC()
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state of %s: %w", r.SandboxID, err)
	}
	dir := s.Dir(r.SandboxID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save state of %s: %w", r.SandboxID, err)
	}
	if err := writeAtomic(filepath.Join(dir, StateFile), data); err != nil {
		return fmt.Errorf("save state of %s: %w", r.SandboxID, err)
	}
	return nil
}

// writeAtomic writes data to path through a synced temp file and rename,
// then syncs the directory so the rename survives a power cut.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Load reads one record; errors wrap fs.ErrNotExist when there is none.
func (s *Store) Load(sandboxID string) (*Record, error) {
	if err := id.ValidateSandboxID(sandboxID); err != nil {
		return nil, err
	}
	return readRecord(filepath.Join(s.Dir(sandboxID), StateFile))
}

func readRecord(path string) (*Record, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if r.Format > FormatVersion {
		return nil, fmt.Errorf("%s: format %d is newer than this agent's %d", path, r.Format, FormatVersion)
	}
	return &r, nil
}

// Entry is one directory found under the root by LoadAll.
type Entry struct {
	SandboxID string
	Dir       string
	Record    *Record // nil when the directory has no (readable) record
	Err       error   // why Record is nil, when it is not simply missing
}

// LoadAll returns every sandbox directory under the root, with its record
// when it has one. Names that are not sandbox IDs are ignored (the store
// never made them).
func (s *Store) LoadAll() ([]Entry, error) {
	ents, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("list state dir: %w", err)
	}
	var out []Entry
	for _, e := range ents {
		if !e.IsDir() || id.ValidateSandboxID(e.Name()) != nil {
			continue
		}
		en := Entry{SandboxID: e.Name(), Dir: filepath.Join(s.root, e.Name())}
		r, err := readRecord(filepath.Join(en.Dir, StateFile))
		switch {
		case err == nil && r.SandboxID != e.Name():
			en.Err = fmt.Errorf("record in %s names sandbox %q", en.Dir, r.SandboxID)
		case err == nil:
			en.Record = r
		case !errors.Is(err, fs.ErrNotExist):
			en.Err = err
		}
		out = append(out, en)
	}
	return out, nil
}

// Remove deletes a sandbox's record and then its directory with whatever
// is left in it. Call it last, after every resource the record names has
// been released. Removing a missing sandbox succeeds.
func (s *Store) Remove(sandboxID string) error {
	if err := id.ValidateSandboxID(sandboxID); err != nil {
		return err
	}
	dir := s.Dir(sandboxID)
	if err := os.Remove(filepath.Join(dir, StateFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove state of %s: %w", sandboxID, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove dir of %s: %w", sandboxID, err)
	}
	return nil
}
