// Package snapshot owns template snapshots: a template (a rootfs from the
// image registry plus the kernel) is booted once through a vm.Driver,
// envd is waited for, and the running VM is snapshotted into a cache
// directory keyed by everything that makes the snapshot what it is (the
// image bits, the driver, vCPUs, memory, kernel arguments). A new sandbox
// is then a copy-on-write clone of the snapshot's rootfs, a driver
// Restore into the sandbox's own run directory (its own sockets and envd
// channel), and an envd /init that gives it its own access token, env
// vars, hostname and the current time (the restored clock is stale).
//
// A TemplateManager is safe for concurrent use: creates of the same
// template share one build, and a lock file keeps two processes on one
// cache directory from building the same snapshot twice. One snapshot's
// memory file is only read, so any number of sandboxes restore from it at
// once, each onto its own disk.
//
// It imports the VM contract, the image registry and the envd client; it
// must not import a VM driver, the host agent's server or the control
// plane.
package snapshot
