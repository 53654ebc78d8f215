// Package hostagent assembles the host agent: it builds the VM driver,
// the network, cgroup, image, template-snapshot and snapshot-store
// backends from config.Agent, hands them to the sandbox manager
// (internal/hostagent/sandbox), recovers the sandboxes a previous run
// left, and serves the gRPC API (internal/hostagent/server) with mTLS,
// keepalives, health and reflection, plus Prometheus /metrics on a
// separate plain-HTTP listener. Shutdown stops serving gracefully and
// leaves every VM running for the next agent to reattach.
//
// It imports nothing from the control plane.
package hostagent
