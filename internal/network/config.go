package network

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// Fixed names inside every sandbox namespace.
const (
	TapName  = "tap0" // the guest's TAP; the VMM opens it by this name
	PeerName = "eth0" // the sandbox end of the veth pair

	natTable    = "wrenn_nat"    // family ip, in the sandbox namespace
	filterTable = "wrenn_filter" // family inet, in the sandbox namespace

	// DefaultNetNSDir is where named namespaces live (as with `ip netns`).
	DefaultNetNSDir = "/var/run/netns"
	// DefaultNamePrefix starts every name this package gives an object.
	DefaultNamePrefix = "wrn"
)

var (
	guestIP    = netip.AddrFrom4([4]byte{169, 254, 0, 21})
	gatewayIP  = netip.AddrFrom4([4]byte{169, 254, 0, 22})
	guestBits  = 30
	metadataIP = netip.AddrFrom4([4]byte{169, 254, 169, 254})
)

// GatewayMAC is tap0's fixed hardware address. Like the addresses it is
// the same in every sandbox: a guest restored from a snapshot keeps the
// gateway's MAC in its ARP cache, and a random one would leave it talking
// to a MAC that no longer exists until the entry went stale.
func GatewayMAC() net.HardwareAddr { return net.HardwareAddr{0x02, 0x00, 0xa9, 0xfe, 0x00, 0x16} }

// Guest returns the guest's fixed address, its gateway (tap0 in the
// sandbox namespace) and their netmask; the same for every sandbox.
func Guest() (ip, gw netip.Addr, mask net.IPMask) {
	return guestIP, gatewayIP, net.CIDRMask(guestBits, 32)
}

// KernelIPArg is the kernel's ip= value for the guest's eth0:
// <client>::<gateway>:<netmask>::eth0:off.
func KernelIPArg() string {
	ip, gw, mask := Guest()
	return fmt.Sprintf("%s::%s:%s::eth0:off", ip, gw, net.IP(mask))
}

// DefaultPool is the pool the /30 blocks come from when Config.Pool is unset.
func DefaultPool() netip.Prefix { return netip.MustParsePrefix("10.0.0.0/16") }

// DefaultBlockedCIDRs are the destinations no sandbox may open a connection
// to whatever its policy, used when Config.BlockedCIDRs is nil: private,
// shared, link-local, loopback, multicast and reserved IPv4 space.
func DefaultBlockedCIDRs() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("224.0.0.0/4"),
		netip.MustParsePrefix("240.0.0.0/4"),
	}
}

// TapOwner lets an unprivileged (jailed) VMM open the TAP: the kernel
// wants both its euid and one of its groups to match.
type TapOwner struct {
	UID uint32
	GID uint32
}

// Config configures a Manager. Zero values take the documented defaults.
type Config struct {
	// Pool is the IPv4 prefix the per-sandbox /30 blocks come from
	// (default 10.0.0.0/16). It cannot change while leases exist.
	Pool netip.Prefix
	// StateDir holds the allocator's state file. Required.
	StateDir string
	// HostNS is the path of the namespace the manager treats as the host
	// side (veth host ends, host table); empty means the namespace the
	// process started in.
	HostNS string
	// NetNSDir is where sandbox namespaces are bind-mounted
	// (default /var/run/netns).
	NetNSDir string
	// NamePrefix starts namespace, veth and table names (default "wrn",
	// 1-6 of [a-z0-9], starting with a letter).
	NamePrefix string
	// TapOwner owns every TAP so a jailed VMM running as that user and
	// group can attach; nil means root:root (only CAP_NET_ADMIN attaches).
	TapOwner *TapOwner
	// Uplink limits MASQUERADE to traffic leaving this interface of the
	// host-side namespace; empty means any interface.
	Uplink string
	// AllowHostAccess lets sandboxes open connections to the host-side
	// namespace's own addresses (except ProtectedHostPorts). Off by
	// default: a sandbox reaches no host service.
	AllowHostAccess bool
	// ProtectedHostPorts are TCP and UDP ports on the host's own addresses
	// no sandbox may reach even with AllowHostAccess (the agent's gRPC and
	// metrics ports).
	ProtectedHostPorts []uint16
	// BlockedCIDRs no sandbox may reach whatever its policy; nil means
	// DefaultBlockedCIDRs, an empty non-nil slice none. The metadata
	// address 169.254.169.254 and the pool are always blocked.
	BlockedCIDRs []netip.Prefix
	// Logger receives the manager's logs; nil discards them.
	Logger *slog.Logger
}

var prefixRe = regexp.MustCompile(`^[a-z][a-z0-9]{0,5}$`)

// withDefaults fills defaults and validates.
func (c Config) withDefaults() (Config, error) {
	if !c.Pool.IsValid() {
		c.Pool = DefaultPool()
	}
	if c.NetNSDir == "" {
		c.NetNSDir = DefaultNetNSDir
	}
	if c.NamePrefix == "" {
		c.NamePrefix = DefaultNamePrefix
	}
	if c.BlockedCIDRs == nil {
		c.BlockedCIDRs = DefaultBlockedCIDRs()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if !c.Pool.Addr().Is4() || c.Pool.Bits() < 8 || c.Pool.Bits() > 30 {
		errs = append(errs, fmt.Errorf("pool %s: want an IPv4 prefix from /8 to /30", c.Pool))
	}
	c.Pool = c.Pool.Masked()
	guestNet := netip.PrefixFrom(guestIP, guestBits).Masked()
	if c.Pool.Overlaps(guestNet) || c.Pool.Contains(metadataIP) {
		errs = append(errs, fmt.Errorf("pool %s overlaps the guest or metadata address", c.Pool))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state dir is required"))
	}
	if !prefixRe.MatchString(c.NamePrefix) {
		errs = append(errs, fmt.Errorf("name prefix %q: want 1-6 of [a-z0-9] starting with a letter", c.NamePrefix))
	}
	if len(c.Uplink) > 15 {
		errs = append(errs, fmt.Errorf("uplink %q: interface names are at most 15 bytes", c.Uplink))
	}
	for _, p := range c.BlockedCIDRs {
		if !p.IsValid() || !p.Addr().Is4() {
			errs = append(errs, fmt.Errorf("blocked cidr %s: want IPv4", p))
		}
	}
	for _, p := range c.ProtectedHostPorts {
		if p == 0 {
			errs = append(errs, errors.New("protected host port 0"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("%w: network config: %w", errdefs.ErrInvalidArgument, err)
	}
	return c, nil
}

// Policy is a sandbox's egress policy: what the guest may open connections
// to. A destination is judged in order: always blocked (metadata, the pool,
// Config.BlockedCIDRs) -> Allow -> Deny -> DefaultDeny. The zero Policy
// allows everything not always blocked.
type Policy struct {
	// DefaultDeny drops destinations on neither list; otherwise they pass.
	DefaultDeny bool
	// Allow lists destinations that pass even when Deny covers them.
	Allow []netip.Prefix
	// Deny lists destinations that are dropped unless Allow covers them.
	Deny []netip.Prefix
}

// AllowAll lets the guest reach anything not always blocked.
func AllowAll() Policy { return Policy{} }

// DenyAll lets the guest open no connection at all.
func DenyAll() Policy { return Policy{DefaultDeny: true} }

// Validate checks that every prefix is IPv4 (the guest has no IPv6).
func (p Policy) Validate() error {
	for _, list := range [][]netip.Prefix{p.Allow, p.Deny} {
		for _, c := range list {
			if !c.IsValid() || !c.Addr().Is4() {
				return fmt.Errorf("%w: egress policy: %s is not an IPv4 prefix", errdefs.ErrInvalidArgument, c)
			}
		}
	}
	return nil
}
