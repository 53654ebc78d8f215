// Package cgroup owns the per-sandbox control group that holds a sandbox's
// VMM process on the host: creating it with CPU, memory and pids limits,
// moving the VMM into it, reading its usage, listing the groups that exist
// (for leak checks and reconciliation after an agent restart) and removing
// it again.
//
// Both cgroup hierarchies are supported and the mode is detected at run
// time: cgroup v2 (the unified hierarchy, modern hosts) and cgroup v1
// (one hierarchy per controller; our build machines mount cpu, cpuacct,
// memory and pids that way next to an empty v2 hierarchy). Kernel files are
// written through github.com/containerd/cgroups/v3; removal, listing and
// killing are done here so the retry and ownership rules are ours.
//
// Layout: every sandbox gets the group <Parent>/<sandbox ID>, where Parent
// is relative to the hierarchy root (on v1: to each controller's mount).
// On v2 the parent must not hold processes itself (the kernel's "no
// internal processes" rule), so give the agent a delegated subtree whose
// leaf it runs in, and point Parent at a sibling.
//
// The Manager keeps no state of its own: a Handle is a plain value the host
// agent persists with the rest of the sandbox and hands back after a
// restart. Create and Delete are an idempotent pair. Delete never kills:
// the VMM must be gone first (the VM driver stops it); Kill exists for the
// reconciler that finds a group nobody owns any more.
//
// This package imports nothing from the control plane or other agent
// packages.
package cgroup
