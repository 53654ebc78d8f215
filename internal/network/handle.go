package network

import (
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Handle names everything Setup created for one sandbox. The agent stores
// it (it is plain JSON) and gives it back to Teardown or UpdatePolicy, also
// after a restart. Teardown deletes only what the manager's own lease for
// the sandbox confirms.
type Handle struct {
	SandboxID string `json:"sandbox_id"`
	Index     int    `json:"index"` // block number within the pool
	NetNS     string `json:"netns"` // namespace name
	// NetNSPath is the namespace's bind mount; the VMM joins it.
	NetNSPath string `json:"netns_path"`
	HostVeth  string `json:"host_veth"` // in the host-side namespace
	PeerVeth  string `json:"peer_veth"` // in the sandbox namespace
	Tap       string `json:"tap"`       // in the sandbox namespace
	// Block is the sandbox's /30 of the pool.
	Block netip.Prefix `json:"block"`
	// HostIP is the host end of the veth.
	HostIP netip.Addr `json:"host_ip"`
	// SandboxIP is where the host reaches the guest (DNAT to the guest).
	SandboxIP netip.Addr `json:"sandbox_ip"`
	GuestIP   netip.Addr `json:"guest_ip"`
	GatewayIP netip.Addr `json:"gateway_ip"`
	// Tables are the nftables tables inside the sandbox namespace.
	Tables []string `json:"tables"`
}

// handleFor derives a lease's names. The allocator refuses to open with a
// different name prefix while leases exist, so this is stable across
// restarts.
func (m *Manager) handleFor(l Lease) Handle {
	idx := strconv.Itoa(l.Index)
	name := m.cfg.NamePrefix + "-" + idx + "-" + shortID(l.SandboxID)
	return Handle{
		SandboxID: l.SandboxID,
		Index:     l.Index,
		NetNS:     name,
		NetNSPath: filepath.Join(m.cfg.NetNSDir, name),
		HostVeth:  m.cfg.NamePrefix + "-" + idx,
		PeerVeth:  PeerName,
		Tap:       TapName,
		Block:     l.Block,
		HostIP:    l.HostIP(),
		SandboxIP: l.SandboxIP(),
		GuestIP:   guestIP,
		GatewayIP: gatewayIP,
		Tables:    []string{"ip " + natTable, "inet " + filterTable},
	}
}

// sameObjects reports whether h names the same objects as want.
func (h Handle) sameObjects(want Handle) bool {
	return h.SandboxID == want.SandboxID && h.Index == want.Index && h.NetNS == want.NetNS &&
		h.NetNSPath == want.NetNSPath && h.HostVeth == want.HostVeth && h.Block == want.Block
}

// shortID is up to 8 characters of id safe in a file name.
func shortID(id string) string {
	var b strings.Builder
	for _, r := range id {
		if b.Len() == 8 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		case r >= 'A' && r <= 'Z':
			b.WriteRune(r - 'A' + 'a')
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// keyedLocks serialises operations on one sandbox ID.
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedLocks) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
