package network

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// The tables inside a sandbox namespace. They die with the namespace.

// addNATTable queues table ip wrenn_nat: traffic for the sandbox address
// coming in on eth0 goes to the guest, and the guest's traffic leaves eth0
// with the sandbox address.
//
//	chain prerouting  { type nat hook prerouting priority dstnat; iifname "eth0" ip daddr SANDBOX dnat to 169.254.0.21 }
//	chain postrouting { type nat hook postrouting priority srcnat; oifname "eth0" ip saddr 169.254.0.21 snat to SANDBOX }
func addNATTable(b *batch, sandboxIP netip.Addr) {
	t := b.c.AddTable(&nftables.Table{Name: natTable, Family: nftables.TableFamilyIPv4})
	pre := baseChain(b, t, "prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest, nftables.ChainPolicyAccept)
	post := baseChain(b, t, "postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, nftables.ChainPolicyAccept)
	b.rule(t, pre, rule(iif(PeerName), ipIs(ipv4DaddrOffset, expr.CmpOpEq, sandboxIP), natTo(expr.NATTypeDestNAT, guestIP)))
	b.rule(t, post, rule(oif(PeerName), ipIs(ipv4SaddrOffset, expr.CmpOpEq, guestIP), natTo(expr.NATTypeSourceNAT, sandboxIP)))
}

// filterSpec is what the sandbox's filter table is built from.
type filterSpec struct {
	hostIP  netip.Addr     // host end of the veth: the only opener of inbound connections
	blocked []netip.Prefix // always blocked destinations
	policy  Policy
}

// addFilterTable queues table inet wrenn_filter; with replace, the old
// table goes in the same transaction, so no packet sees a mix:
//
//	set blocked/allow/deny { type ipv4_addr; flags interval; ... }
//	chain forward { type filter hook forward priority filter; policy drop;
//	    meta nfproto ipv4 iifname "tap0" oifname "eth0" jump from_guest
//	    meta nfproto ipv4 iifname "eth0" oifname "tap0" jump to_guest }
//	chain to_guest { ct state established,related accept
//	    ct state new ip saddr HOST accept }
//	chain from_guest { ip saddr != 169.254.0.21 drop; ct state invalid drop
//	    ct state established,related accept; ip daddr @blocked drop
//	    ip daddr @allow accept; ip daddr @deny drop; accept|drop }
//	chain input { type filter hook input priority filter; policy drop;
//	    iifname "lo" accept; ct state established,related accept }
func addFilterTable(b *batch, s filterSpec, replace bool) {
	t := &nftables.Table{Name: filterTable, Family: nftables.TableFamilyINet}
	if replace {
		t = b.replaceTable(t)
	} else {
		t = b.c.AddTable(t)
	}
	ipSet := func(name string, ps []netip.Prefix) *nftables.Set {
		return b.set(&nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIPAddr, Interval: true}, intervalElements(ps))
	}
	blocked := ipSet("blocked", s.blocked)

	fwd := baseChain(b, t, "forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter, nftables.ChainPolicyDrop)
	in := baseChain(b, t, "input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter, nftables.ChainPolicyDrop)
	ingress := regularChain(b, t, "to_guest")
	egress := regularChain(b, t, "from_guest")

	b.rule(t, fwd, rule(isIPv4(), iif(TapName), oif(PeerName), verdict(jump("from_guest"))))
	b.rule(t, fwd, rule(isIPv4(), iif(PeerName), oif(TapName), verdict(jump("to_guest"))))

	b.rule(t, ingress, rule(established(), verdict(accept())))
	b.rule(t, ingress, rule(ctState(expr.CtStateBitNEW), ipIs(ipv4SaddrOffset, expr.CmpOpEq, s.hostIP), verdict(accept())))

	b.rule(t, egress, rule(ipIs(ipv4SaddrOffset, expr.CmpOpNeq, guestIP), verdict(drop())))
	b.rule(t, egress, rule(ctState(expr.CtStateBitINVALID), verdict(drop())))
	b.rule(t, egress, rule(established(), verdict(accept())))
	b.rule(t, egress, rule(ipInSet(ipv4DaddrOffset, blocked), verdict(drop())))
	if len(s.policy.Allow) > 0 {
		b.rule(t, egress, rule(ipInSet(ipv4DaddrOffset, ipSet("allow", s.policy.Allow)), verdict(accept())))
	}
	if len(s.policy.Deny) > 0 {
		b.rule(t, egress, rule(ipInSet(ipv4DaddrOffset, ipSet("deny", s.policy.Deny)), verdict(drop())))
	}
	if s.policy.DefaultDeny {
		b.rule(t, egress, verdict(drop()))
	} else {
		b.rule(t, egress, verdict(accept()))
	}

	b.rule(t, in, rule(iif("lo"), verdict(accept())))
	b.rule(t, in, rule(established(), verdict(accept())))
}
