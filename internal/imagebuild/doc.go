// Package imagebuild owns the guest images Wrenn boots: the initramfs that
// Debian's cloud kernel needs (a newc cpio written here, holding busybox, the
// virtio/vsock modules and a small /init that mounts the root disk and hands
// over to envd), the staging of root filesystems (accounts, envd, busybox) and
// their packing into ext4 with `mkfs.ext4 -d` (no mount, no loop device), the
// per-artefact manifest with its input-keyed cache, and a QEMU microvm boot
// check used by tests and by `wrenn-image boottest`.
//
// It is build-time tooling: nothing in the control plane or the host agent
// imports it, and it imports neither of them.
package imagebuild
