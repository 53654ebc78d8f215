// Package network owns the host agent's per-sandbox networking: one network
// namespace per sandbox holding the guest's TAP and one end of a veth pair,
// the NAT that maps the fixed guest address to the sandbox's unique address,
// the per-sandbox egress firewall, the agent-wide host-side rules, and the
// allocator that hands out the sandbox addresses and remembers them on disk.
//
// # Addresses
//
// Every guest is 169.254.0.21/30 behind the gateway 169.254.0.22 on "tap0"
// (whose MAC is fixed too), so a snapshot restores with the network it was
// taken with, ARP cache included. Each sandbox
// also holds one /30 block of the pool (default 10.0.0.0/16): block address
// +1 is the host end of the veth (HostIP, in the host-side namespace), +2 the
// sandbox end ("eth0" inside the sandbox namespace). +2 is the SandboxIP: the
// host reaches the guest there (DNAT to 169.254.0.21 inside the sandbox
// namespace) and the guest's traffic leaves the namespace with that source
// (SNAT). The host side needs no route beyond the /30 the veth address
// brings, and the guest address never appears outside its namespace.
//
// # Rules
//
// Inside each sandbox namespace (deleted with it; both made in one
// transaction): table ip wrenn_nat does the DNAT/SNAT; table inet wrenn_filter drops everything forwarded that is
// not IPv4 guest traffic on tap0<->eth0, drops spoofed guest sources, lets
// only the host end of the veth open connections to the guest, and filters
// what the guest opens: always-blocked (metadata address, the pool, the
// configured blocked CIDRs), then the policy's allow list, deny list and
// default. UpdatePolicy replaces that table in one transaction and drops the
// guest's existing connections from conntrack so they are judged again.
//
// In the host-side namespace the manager keeps one table, ip <prefix>_host:
// sandboxes may not open connections to the host's own addresses (or only
// to ports not listed as protected, when host access is allowed), nothing is
// forwarded into the pool unless it is a reply (no sandbox-to-sandbox, no
// outside-in), and sandbox traffic leaving the pool is masqueraded.
//
// # Ownership
//
// Every kernel object is created through netlink or nftables, never a shell,
// and deleted only when the allocator's persisted lease says this manager
// created it; names are never swept by prefix. The lease is written before
// anything is created, so after a crash List shows every half-built sandbox
// and Teardown removes it.
//
// This package imports nothing from the control plane or the VM drivers.
package network
