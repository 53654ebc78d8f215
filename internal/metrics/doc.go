// Package metrics owns the host agent's observability: per-sandbox usage
// read from the host (CPU and memory from the sandbox's cgroup through
// internal/cgroup, disk from the blocks its rootfs clone holds, network
// bytes from its host-side veth through netlink) and the Prometheus
// registry the agent serves at /metrics, which also carries the agent's
// gRPC request counts and latencies via server interceptors.
//
// Sandbox metrics are produced at scrape time from a SandboxLister, so a
// destroyed sandbox disappears from the next scrape; nothing is cached.
//
// It imports internal/cgroup only; never the control plane, the VM
// drivers or the agent's server (the agent hands it a lister).
package metrics
