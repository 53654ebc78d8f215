package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// blockBits is the size of one sandbox's block: host end, sandbox end.
const blockBits = 30

const allocFileVersion = 1

// Lease is one sandbox's block of the pool.
type Lease struct {
	SandboxID string       `json:"sandbox_id"`
	Index     int          `json:"index"` // block number within the pool
	Block     netip.Prefix `json:"block"` // the /30
	// Ready is set once everything for the lease was created; a lease that
	// is not ready after a restart belongs to an interrupted Setup.
	Ready bool `json:"ready"`
}

// HostIP is the host end of the sandbox's veth (block +1).
func (l Lease) HostIP() netip.Addr { return l.Block.Addr().Next() }

// SandboxIP is the sandbox end of the veth, where the host reaches the
// guest (block +2).
func (l Lease) SandboxIP() netip.Addr { return l.Block.Addr().Next().Next() }

// ExhaustedError says the pool has no free block. It matches
// errdefs.ErrResourceExhausted with errors.Is.
type ExhaustedError struct {
	Pool   netip.Prefix
	Blocks int
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("address pool %s exhausted (%d blocks in use)", e.Pool, e.Blocks)
}

// Is makes errors.Is(err, errdefs.ErrResourceExhausted) true.
func (e *ExhaustedError) Is(target error) bool { return target == errdefs.ErrResourceExhausted }

// allocFile is the on-disk form.
type allocFile struct {
	Version int          `json:"version"`
	Pool    netip.Prefix `json:"pool"`
	Label   string       `json:"label"`
	Next    int          `json:"next"`
	Leases  []Lease      `json:"leases"`
}

// Allocator hands out /30 blocks of a pool, one per sandbox ID, and writes
// every change to a JSON file (atomically, before returning) so a restart
// keeps them. Safe for concurrent use.
type Allocator struct {
	path  string
	pool  netip.Prefix
	label string
	size  int

	mu     sync.Mutex
	next   int              // where the next search starts (next fit)
	leases map[string]Lease // by sandbox ID
	used   map[int]string   // block index -> sandbox ID
}

// OpenAllocator loads (or starts) the state file at path. label names the
// owner's naming scheme; neither it nor the pool may change while leases
// exist, because the names of live objects derive from them.
func OpenAllocator(path string, pool netip.Prefix, label string) (*Allocator, error) {
	if !pool.Addr().Is4() || pool.Bits() > blockBits || pool.Bits() < 8 {
		return nil, fmt.Errorf("%w: allocator pool %s", errdefs.ErrInvalidArgument, pool)
	}
	pool = pool.Masked()
	a := &Allocator{
		path: path, pool: pool, label: label,
		size:   1 << (blockBits - pool.Bits()),
		leases: map[string]Lease{},
		used:   map[int]string{},
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("allocator state dir: %w", err)
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return a, a.persistLocked()
	case err != nil:
		return nil, fmt.Errorf("read allocator state: %w", err)
	}
	var f allocFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parse allocator state %s: %w", path, err)
	}
	if f.Version != allocFileVersion {
		return nil, fmt.Errorf("allocator state %s: version %d, want %d", path, f.Version, allocFileVersion)
	}
	if len(f.Leases) > 0 && (f.Pool != pool || f.Label != label) {
		return nil, fmt.Errorf("%w: allocator state %s holds %d leases of pool %s (names %q); config says pool %s (names %q)",
			errdefs.ErrConflict, path, len(f.Leases), f.Pool, f.Label, pool, label)
	}
	for _, l := range f.Leases {
		if l.SandboxID == "" || l.Index < 0 || l.Index >= a.size || l.Block != a.block(l.Index) {
			return nil, fmt.Errorf("allocator state %s: bad lease %+v", path, l)
		}
		if _, dup := a.used[l.Index]; dup {
			return nil, fmt.Errorf("allocator state %s: block %d leased twice", path, l.Index)
		}
		if _, dup := a.leases[l.SandboxID]; dup {
			return nil, fmt.Errorf("allocator state %s: sandbox %s leased twice", path, l.SandboxID)
		}
		a.leases[l.SandboxID] = l
		a.used[l.Index] = l.SandboxID
	}
	if f.Next >= 0 && f.Next < a.size {
		a.next = f.Next
	}
	return a, a.persistLocked()
}

// Pool is the prefix the allocator hands blocks out of.
func (a *Allocator) Pool() netip.Prefix { return a.pool }

// Capacity is the number of blocks in the pool.
func (a *Allocator) Capacity() int { return a.size }

func (a *Allocator) block(i int) netip.Prefix {
	b := a.pool.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i) << (32 - blockBits)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), blockBits)
}

// Allocate leases a free block to id, or returns id's existing lease with
// existed=true. The lease is on disk before Allocate returns. A full pool
// gives an *ExhaustedError.
func (a *Allocator) Allocate(id string) (l Lease, existed bool, err error) {
	if id == "" {
		return Lease{}, false, fmt.Errorf("%w: empty sandbox id", errdefs.ErrInvalidArgument)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if l, ok := a.leases[id]; ok {
		return l, true, nil
	}
	if len(a.used) >= a.size {
		return Lease{}, false, &ExhaustedError{Pool: a.pool, Blocks: a.size}
	}
	idx := a.next
	for {
		if _, taken := a.used[idx]; !taken {
			break
		}
		idx = (idx + 1) % a.size
	}
	l = Lease{SandboxID: id, Index: idx, Block: a.block(idx)}
	prevNext := a.next
	a.leases[id] = l
	a.used[idx] = id
	a.next = (idx + 1) % a.size
	if err := a.persistLocked(); err != nil {
		delete(a.leases, id)
		delete(a.used, idx)
		a.next = prevNext
		return Lease{}, false, err
	}
	return l, false, nil
}

// MarkReady records that everything for id's lease exists.
func (a *Allocator) MarkReady(id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.leases[id]
	if !ok {
		return fmt.Errorf("%w: no lease for sandbox %s", errdefs.ErrNotFound, id)
	}
	if l.Ready {
		return nil
	}
	l.Ready = true
	a.leases[id] = l
	if err := a.persistLocked(); err != nil {
		l.Ready = false
		a.leases[id] = l
		return err
	}
	return nil
}

// Get returns id's lease.
func (a *Allocator) Get(id string) (Lease, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.leases[id]
	return l, ok
}

// Release frees id's block; releasing what is not leased is fine.
func (a *Allocator) Release(id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	l, ok := a.leases[id]
	if !ok {
		return nil
	}
	delete(a.leases, id)
	delete(a.used, l.Index)
	if err := a.persistLocked(); err != nil {
		a.leases[id] = l
		a.used[l.Index] = id
		return err
	}
	return nil
}

// List returns every lease, ordered by block.
func (a *Allocator) List() []Lease {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Lease, 0, len(a.leases))
	for _, l := range a.leases {
		out = append(out, l)
	}
	slices.SortFunc(out, func(x, y Lease) int { return x.Index - y.Index })
	return out
}

// persistLocked writes the state file atomically: temp file, fsync,
// rename, fsync of the directory.
func (a *Allocator) persistLocked() error {
	f := allocFile{Version: allocFileVersion, Pool: a.pool, Label: a.label, Next: a.next, Leases: []Lease{}}
	for _, l := range a.leases {
		f.Leases = append(f.Leases, l)
	}
	slices.SortFunc(f.Leases, func(x, y Lease) int { return x.Index - y.Index })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode allocator state: %w", err)
	}
	if err := writeFileAtomic(a.path, append(b, '\n')); err != nil {
		return fmt.Errorf("write allocator state: %w", err)
	}
	return nil
}

func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
