package network

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Small builders for nftables expressions; each returns the expressions of
// one match, to be concatenated into a rule. Register 1 is scratch.

const (
	ipv4SaddrOffset = 12
	ipv4DaddrOffset = 16
)

func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func matchMeta(key expr.MetaKey, op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

// iif / oif match the input / output interface name.
func iif(name string) []expr.Any {
	return matchMeta(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameBytes(name))
}
func oif(name string) []expr.Any {
	return matchMeta(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameBytes(name))
}

// isIPv4 matches IPv4 packets in an inet table.
func isIPv4() []expr.Any {
	return matchMeta(expr.MetaKeyNFPROTO, expr.CmpOpEq, []byte{unix.NFPROTO_IPV4})
}

func l4proto(proto byte) []expr.Any {
	return matchMeta(expr.MetaKeyL4PROTO, expr.CmpOpEq, []byte{proto})
}

func loadIP(offset uint32) expr.Any {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}
}

// ipIs matches the IPv4 address at offset against addr.
func ipIs(offset uint32, op expr.CmpOp, addr netip.Addr) []expr.Any {
	b := addr.As4()
	return []expr.Any{loadIP(offset), &expr.Cmp{Op: op, Register: 1, Data: b[:]}}
}

// ipIn matches the IPv4 address at offset against a prefix.
func ipIn(offset uint32, op expr.CmpOp, p netip.Prefix) []expr.Any {
	p = p.Masked()
	var mask [4]byte
	binary.BigEndian.PutUint32(mask[:], ^uint32(0)<<(32-p.Bits()))
	if p.Bits() == 0 {
		mask = [4]byte{}
	}
	net := p.Addr().As4()
	return []expr.Any{
		loadIP(offset),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask[:], Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: op, Register: 1, Data: net[:]},
	}
}

// ipInSet matches the IPv4 address at offset against a named set.
func ipInSet(offset uint32, set *nftables.Set) []expr.Any {
	return []expr.Any{loadIP(offset), &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID}}
}

// dportInSet matches the transport destination port against a named set.
func dportInSet(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

// ctState matches when the connection's state is any of bits.
func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
	}
}

func established() []expr.Any {
	return ctState(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
}

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }
func drop() expr.Any   { return &expr.Verdict{Kind: expr.VerdictDrop} }
func jump(chain string) expr.Any {
	return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}
}

// natTo rewrites the source (snat) or destination (dnat) to addr.
func natTo(t expr.NATType, addr netip.Addr) []expr.Any {
	b := addr.As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: b[:]},
		&expr.NAT{Type: t, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}
}

// rule concatenates matches and a verdict.
func rule(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func verdict(e expr.Any) []expr.Any { return []expr.Any{e} }

// batch collects one nftables transaction. Set IDs are numbered per batch
// (nftables' own counter is a package global, unsafe across goroutines).
type batch struct {
	c      *nftables.Conn
	nextID uint32
	err    error
}

func (b *batch) set(s *nftables.Set, els []nftables.SetElement) *nftables.Set {
	b.nextID++
	s.ID = b.nextID
	if err := b.c.AddSet(s, els); err != nil && b.err == nil {
		b.err = err
	}
	return s
}

func (b *batch) rule(t *nftables.Table, ch *nftables.Chain, exprs []expr.Any) {
	b.c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
}

func (b *batch) flush() error {
	if b.err != nil {
		return b.err
	}
	return b.c.Flush()
}

// replaceTable queues "add table; delete table; add table": the table is
// rebuilt from scratch in the same transaction whether or not it existed.
func (b *batch) replaceTable(t *nftables.Table) *nftables.Table {
	b.c.AddTable(t)
	b.c.DelTable(t)
	return b.c.AddTable(t)
}

// deleteTable queues "add table; delete table", which succeeds whether or
// not the table existed.
func (b *batch) deleteTable(t *nftables.Table) {
	b.c.AddTable(t)
	b.c.DelTable(t)
}

func baseChain(b *batch, t *nftables.Table, name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority, policy nftables.ChainPolicy) *nftables.Chain {
	return b.c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &policy})
}

func regularChain(b *batch, t *nftables.Table, name string) *nftables.Chain {
	return b.c.AddChain(&nftables.Chain{Name: name, Table: t})
}
