package network

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/google/nftables"
)

// addrRange is an inclusive IPv4 range as integers.
type addrRange struct{ first, last uint32 }

func u32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func addrOf(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// mergeRanges turns IPv4 prefixes into sorted, disjoint, non-adjacent
// ranges: the kernel refuses overlapping elements in an interval set.
func mergeRanges(prefixes []netip.Prefix) []addrRange {
	rs := make([]addrRange, 0, len(prefixes))
	for _, p := range prefixes {
		p = p.Masked()
		first := u32(p.Addr())
		last := first | uint32(uint64(1)<<(32-p.Bits())-1)
		rs = append(rs, addrRange{first, last})
	}
	slices.SortFunc(rs, func(a, b addrRange) int {
		switch {
		case a.first < b.first:
			return -1
		case a.first > b.first:
			return 1
		}
		return 0
	})
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 && (out[n-1].last == ^uint32(0) || r.first <= out[n-1].last+1) {
			out[n-1].last = max(out[n-1].last, r.last)
			continue
		}
		out = append(out, r)
	}
	return out
}

// intervalElements encodes ranges the way nft does for an interval set:
// each range is a start key and an interval-end key one past its last
// address (none when it runs to 255.255.255.255), and a leading interval
// end at 0.0.0.0 when the first range does not start there.
func intervalElements(prefixes []netip.Prefix) []nftables.SetElement {
	rs := mergeRanges(prefixes)
	var els []nftables.SetElement
	if len(rs) > 0 && rs[0].first != 0 {
		els = append(els, nftables.SetElement{Key: []byte{0, 0, 0, 0}, IntervalEnd: true})
	}
	for _, r := range rs {
		start := addrOf(r.first).As4()
		els = append(els, nftables.SetElement{Key: start[:]})
		if r.last != ^uint32(0) {
			end := addrOf(r.last + 1).As4()
			els = append(els, nftables.SetElement{Key: end[:], IntervalEnd: true})
		}
	}
	return els
}
