package network

import (
	"net/netip"

	"github.com/vishvananda/netlink"
)

// guestFlows matches the connections the guest opened (inside a sandbox
// namespace: original source 169.254.0.21).
type guestFlows struct{}

func (guestFlows) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	a, ok := netip.AddrFromSlice(f.Forward.SrcIP)
	return ok && a.Unmap() == guestIP
}
