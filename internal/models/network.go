package models

import (
	"net/netip"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// Egress defaults of a NetworkPolicy.
const (
	EgressAllowAll = "allow_all" // everything except DenyCIDRs
	EgressDenyAll  = "deny_all"  // nothing except AllowCIDRs
)

// MaxPolicyCIDRs bounds each list of a NetworkPolicy.
const MaxPolicyCIDRs = 64

// NetworkPolicy is a sandbox's egress policy as users give it. A
// destination passes when AllowCIDRs covers it, is dropped when DenyCIDRs
// covers it, and otherwise follows Egress. The cloud metadata address,
// other sandboxes and the host agent are blocked whatever the policy.
type NetworkPolicy struct {
	Egress     string   `json:"egress,omitempty"` // "" = allow_all
	AllowCIDRs []string `json:"allow_cidrs,omitempty"`
	DenyCIDRs  []string `json:"deny_cidrs,omitempty"`
}

// DenyAll reports whether destinations on neither list are dropped.
func (p NetworkPolicy) DenyAll() bool { return p.Egress == EgressDenyAll }

// Validate checks the egress mode and that every entry is an IPv4 CIDR
// (the guest has no IPv6), at most MaxPolicyCIDRs per list.
func (p NetworkPolicy) Validate() error {
	switch p.Egress {
	case "", EgressAllowAll, EgressDenyAll:
	default:
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "network.egress %q: want %s or %s", p.Egress, EgressAllowAll, EgressDenyAll)
	}
	for _, l := range []struct {
		field string
		cidrs []string
	}{{"network.allow_cidrs", p.AllowCIDRs}, {"network.deny_cidrs", p.DenyCIDRs}} {
		if len(l.cidrs) > MaxPolicyCIDRs {
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "%s: %d entries, at most %d", l.field, len(l.cidrs), MaxPolicyCIDRs)
		}
		for _, c := range l.cidrs {
			pfx, err := netip.ParsePrefix(c)
			if err != nil || !pfx.Addr().Is4() {
				return errdefs.Errorf(errdefs.ErrInvalidArgument, "%s: %q is not an IPv4 CIDR (like 203.0.113.0/24)", l.field, c)
			}
		}
	}
	return nil
}
