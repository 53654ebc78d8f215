package network

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// hostSpec is what the agent-wide host table is built from.
type hostSpec struct {
	table           string
	pool            netip.Prefix
	uplink          string
	allowHostAccess bool
	protectedPorts  []uint16
}

func (s hostSpec) nftTable() *nftables.Table {
	return &nftables.Table{Name: s.table, Family: nftables.TableFamilyIPv4}
}

// installHostTable creates or atomically replaces the manager's table in
// the host-side namespace (one for all sandboxes):
//
//	set protected_ports { type inet_service; ... }
//	chain input { type filter hook input priority filter; policy accept;
//	    ip saddr POOL ct state established,related accept
//	    ip saddr POOL meta l4proto tcp th dport @protected_ports drop
//	    ip saddr POOL meta l4proto udp th dport @protected_ports drop
//	    ip saddr POOL drop                        (unless host access allowed) }
//	chain forward { type filter hook forward priority filter; policy accept;
//	    ip daddr POOL ct state established,related accept
//	    ip daddr POOL drop }
//	chain postrouting { type nat hook postrouting priority srcnat;
//	    ip saddr POOL ip daddr != POOL [oifname UPLINK] masquerade }
func installHostTable(c *nftables.Conn, s hostSpec) error {
	b := &batch{c: c}
	t := b.replaceTable(s.nftTable())
	var ports *nftables.Set
	if len(s.protectedPorts) > 0 {
		var els []nftables.SetElement
		seen := map[uint16]bool{}
		ps := slices.Clone(s.protectedPorts)
		slices.Sort(ps)
		for _, p := range ps {
			if seen[p] {
				continue
			}
			seen[p] = true
			k := make([]byte, 2)
			binary.BigEndian.PutUint16(k, p)
			els = append(els, nftables.SetElement{Key: k})
		}
		ports = b.set(&nftables.Set{Table: t, Name: "protected_ports", KeyType: nftables.TypeInetService}, els)
	}
	in := baseChain(b, t, "input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter, nftables.ChainPolicyAccept)
	fwd := baseChain(b, t, "forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter, nftables.ChainPolicyAccept)
	post := baseChain(b, t, "postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource, nftables.ChainPolicyAccept)

	fromPool := ipIn(ipv4SaddrOffset, expr.CmpOpEq, s.pool)
	toPool := ipIn(ipv4DaddrOffset, expr.CmpOpEq, s.pool)

	b.rule(t, in, rule(fromPool, established(), verdict(accept())))
	if ports != nil {
		b.rule(t, in, rule(fromPool, l4proto(unix.IPPROTO_TCP), dportInSet(ports), verdict(drop())))
		b.rule(t, in, rule(fromPool, l4proto(unix.IPPROTO_UDP), dportInSet(ports), verdict(drop())))
	}
	if !s.allowHostAccess {
		b.rule(t, in, rule(fromPool, verdict(drop())))
	}

	b.rule(t, fwd, rule(toPool, established(), verdict(accept())))
	b.rule(t, fwd, rule(toPool, verdict(drop())))

	masq := rule(fromPool, ipIn(ipv4DaddrOffset, expr.CmpOpNeq, s.pool))
	if s.uplink != "" {
		masq = rule(masq, oif(s.uplink))
	}
	b.rule(t, post, rule(masq, verdict(&expr.Masq{})))

	if err := b.flush(); err != nil {
		return fmt.Errorf("nftables host table %s: %w", s.table, err)
	}
	return nil
}

// deleteHostTable removes the manager's host table; missing is fine.
func deleteHostTable(c *nftables.Conn, s hostSpec) error {
	b := &batch{c: c}
	b.deleteTable(s.nftTable())
	if err := b.flush(); err != nil {
		return fmt.Errorf("delete nftables host table %s: %w", s.table, err)
	}
	return nil
}
