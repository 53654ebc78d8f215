package network

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestMergeRanges(t *testing.T) {
	tests := []struct {
		name string
		in   []netip.Prefix
		want string
	}{
		{"single", prefixes("10.0.0.0/8"), "10.0.0.0-10.255.255.255"},
		{"unmasked input", prefixes("10.1.2.3/16"), "10.1.0.0-10.1.255.255"},
		{"contained", prefixes("10.0.0.0/8", "10.1.0.0/16"), "10.0.0.0-10.255.255.255"},
		{"adjacent", prefixes("10.0.0.0/25", "10.0.0.128/25"), "10.0.0.0-10.0.0.255"},
		{"disjoint sorted", prefixes("192.168.0.0/16", "10.0.0.0/8"), "10.0.0.0-10.255.255.255 192.168.0.0-192.168.255.255"},
		{"everything", prefixes("1.2.3.4/32", "0.0.0.0/0"), "0.0.0.0-255.255.255.255"},
		{"top address", prefixes("255.255.255.255/32", "255.255.255.254/32"), "255.255.255.254-255.255.255.255"},
		{"empty", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var parts []string
			for _, r := range mergeRanges(tc.in) {
				parts = append(parts, addrOf(r.first).String()+"-"+addrOf(r.last).String())
			}
			if got := strings.Join(parts, " "); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestIntervalElements(t *testing.T) {
	tests := []struct {
		name string
		in   []netip.Prefix
		want string // key, "/" marks an interval end
	}{
		{"one prefix", prefixes("10.0.0.0/8"), "/0.0.0.0 10.0.0.0 /11.0.0.0"},
		{"from zero", prefixes("0.0.0.0/8"), "0.0.0.0 /1.0.0.0"},
		{"everything", prefixes("0.0.0.0/0"), "0.0.0.0"},
		{"to the top", prefixes("240.0.0.0/4"), "/0.0.0.0 240.0.0.0"},
		{"two", prefixes("169.254.169.254/32", "10.0.0.0/16"), "/0.0.0.0 10.0.0.0 /10.1.0.0 169.254.169.254 /169.254.169.255"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var parts []string
			for _, e := range intervalElements(tc.in) {
				s := netip.AddrFrom4([4]byte(e.Key)).String()
				if e.IntervalEnd {
					s = "/" + s
				}
				parts = append(parts, s)
			}
			if got := strings.Join(parts, " "); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	c, err := Config{StateDir: "/x"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Pool != DefaultPool() || c.NetNSDir != DefaultNetNSDir || c.NamePrefix != DefaultNamePrefix || len(c.BlockedCIDRs) == 0 {
		t.Errorf("defaults: %+v", c)
	}
	if c, _ := (Config{StateDir: "/x", BlockedCIDRs: []netip.Prefix{}}).withDefaults(); len(c.BlockedCIDRs) != 0 {
		t.Errorf("an empty BlockedCIDRs became %v", c.BlockedCIDRs)
	}
	bad := map[string]Config{
		"no state dir":    {},
		"ipv6 pool":       {StateDir: "/x", Pool: netip.MustParsePrefix("fd00::/64")},
		"pool too small":  {StateDir: "/x", Pool: netip.MustParsePrefix("10.0.0.0/31")},
		"pool on guest":   {StateDir: "/x", Pool: netip.MustParsePrefix("169.254.0.0/16")},
		"prefix too long": {StateDir: "/x", NamePrefix: "toolong"},
		"prefix chars":    {StateDir: "/x", NamePrefix: "W-1"},
		"uplink too long": {StateDir: "/x", Uplink: "abcdefghijklmnop"},
		"port zero":       {StateDir: "/x", ProtectedHostPorts: []uint16{0}},
		"ipv6 blocked":    {StateDir: "/x", BlockedCIDRs: prefixes("fd00::/8")},
	}
	for name, cfg := range bad {
		if _, err := cfg.withDefaults(); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := (Policy{Allow: prefixes("1.2.3.0/24"), Deny: prefixes("0.0.0.0/0")}).Validate(); err != nil {
		t.Error(err)
	}
	for _, p := range []Policy{{Allow: prefixes("::/0")}, {Deny: []netip.Prefix{{}}}} {
		if err := p.Validate(); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%+v: %v", p, err)
		}
	}
}

func TestGuestAndNames(t *testing.T) {
	if got, want := KernelIPArg(), "169.254.0.21::169.254.0.22:255.255.255.252::eth0:off"; got != want {
		t.Errorf("KernelIPArg = %q, want %q", got, want)
	}
	for in, want := range map[string]string{
		"i1a2b3c4d5e6": "i1a2b3c4", "AB/c d": "ab_c_d", "x": "x", "ünï": "_n_",
	} {
		if got := shortID(in); got != want {
			t.Errorf("shortID(%q) = %q, want %q", in, got, want)
		}
	}
	m := &Manager{cfg: Config{NamePrefix: "wrn", NetNSDir: "/var/run/netns"}}
	h := m.handleFor(Lease{SandboxID: "sbxABCDEFGH", Index: 4194303, Block: netip.MustParsePrefix("10.255.255.252/30")})
	if h.NetNS != "wrn-4194303-sbxabcde" || h.HostVeth != "wrn-4194303" || len(h.HostVeth) > 15 ||
		h.NetNSPath != "/var/run/netns/wrn-4194303-sbxabcde" || h.SandboxIP.String() != "10.255.255.254" {
		t.Errorf("handle %+v", h)
	}
}
