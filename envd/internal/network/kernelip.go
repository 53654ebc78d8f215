// Package network owns envd's guest network setup when it runs as PID 1:
// parsing the kernel's `ip=` parameter into a static IPv4 configuration and
// applying it (link up, address, default route) through rtnetlink. It talks
// to the kernel with golang.org/x/sys/unix only and imports nothing else from
// envd. It must not be used outside a VM: callers gate it on PID 1.
package network

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultDevice is used when `ip=` leaves the device field empty. The kernel
// would pick the first device; in our VMs that is always eth0.
const DefaultDevice = "eth0"

// ErrNotStatic means the `ip=` value asks for no static configuration
// (off, none, dhcp, ...). It is not a failure: there is nothing to apply.
var ErrNotStatic = errors.New("ip= is not a static configuration")

// Config is a static IPv4 configuration of one interface.
type Config struct {
	Device   string
	Addr     netip.Prefix // client address with the netmask's prefix length
	Gateway  netip.Addr   // invalid when the field was empty
	Hostname string       // the hostname field, informational
	DNS      []netip.Addr // dns0 and dns1 fields, when given
}

// ParseKernelIP parses the value of the kernel's `ip=` parameter in its
// static form:
//
//	<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>:<ntp0>
//
// Trailing fields may be omitted. Firecracker and E2B use
// `<client-ip>::<gw-ip>:<netmask>::eth0:off`. The netmask may be dotted
// (255.255.255.252) or a prefix length (30 or /30); when empty the classful
// default is used, as the kernel does. Values without a client address
// (off, none, dhcp, on, any, bootp, rarp, both) return ErrNotStatic.
func ParseKernelIP(v string) (Config, error) {
	v = strings.TrimSpace(v)
	switch v {
	case "", "off", "none", "dhcp", "on", "any", "bootp", "rarp", "both", "dhcp6", "auto6":
		return Config{}, ErrNotStatic
	}
	f := strings.Split(v, ":")
	if len(f) > 10 {
		return Config{}, fmt.Errorf("ip=: %d fields, at most 10 expected", len(f))
	}
	field := func(i int) string {
		if i < len(f) {
			return strings.TrimSpace(f[i])
		}
		return ""
	}
	if field(0) == "" {
		return Config{}, ErrNotStatic
	}
	client, err := parseIPv4(field(0))
	if err != nil {
		return Config{}, fmt.Errorf("ip= client address: %w", err)
	}
	bits, err := parseNetmask(field(3), client)
	if err != nil {
		return Config{}, fmt.Errorf("ip= netmask: %w", err)
	}
	cfg := Config{
		Device:   field(5),
		Addr:     netip.PrefixFrom(client, bits),
		Hostname: field(4),
	}
	if cfg.Device == "" {
		cfg.Device = DefaultDevice
	}
	if len(cfg.Device) > 15 || strings.ContainsAny(cfg.Device, "/ ") {
		return Config{}, fmt.Errorf("ip= device %q is not an interface name", cfg.Device)
	}
	if gw := field(2); gw != "" {
		if cfg.Gateway, err = parseIPv4(gw); err != nil {
			return Config{}, fmt.Errorf("ip= gateway: %w", err)
		}
		if cfg.Gateway == client {
			return Config{}, fmt.Errorf("ip= gateway %s equals the client address", gw)
		}
	}
	for _, i := range []int{7, 8} {
		if s := field(i); s != "" {
			a, err := parseIPv4(s)
			if err != nil {
				return Config{}, fmt.Errorf("ip= dns%d: %w", i-7, err)
			}
			cfg.DNS = append(cfg.DNS, a)
		}
	}
	return cfg, nil
}

// ParseDNSList parses a comma-separated list of IPv4 or IPv6 addresses, as
// given by `wrenn.dns=`. Empty items are skipped.
func ParseDNSList(v string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("dns server %q: %w", s, err)
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}

func parseIPv4(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	a = a.Unmap()
	if !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%s is not an IPv4 address", s)
	}
	if a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("%s is unspecified", s)
	}
	return a, nil
}

// parseNetmask returns the prefix length of a dotted mask or a prefix length.
func parseNetmask(s string, client netip.Addr) (int, error) {
	if s == "" {
		return classfulBits(client), nil
	}
	if n, err := strconv.Atoi(strings.TrimPrefix(s, "/")); err == nil {
		if n < 0 || n > 32 {
			return 0, fmt.Errorf("prefix length %d out of range", n)
		}
		return n, nil
	}
	m, err := netip.ParseAddr(s)
	if err != nil || !m.Is4() {
		return 0, fmt.Errorf("%q is neither a dotted mask nor a prefix length", s)
	}
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for v&(1<<31) != 0 {
		ones++
		v <<= 1
	}
	if v != 0 {
		return 0, fmt.Errorf("mask %s is not contiguous", s)
	}
	return ones, nil
}

func classfulBits(a netip.Addr) int {
	switch b := a.As4()[0]; {
	case b < 128:
		return 8
	case b < 192:
		return 16
	default:
		return 24
	}
}
