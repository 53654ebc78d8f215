// Package firecracker is the Firecracker implementation of the vm.Driver
// contract: it starts firecracker (directly or under the jailer), configures
// and boots the microVM through the REST API (package fcapi), pauses,
// resumes, snapshots and restores it, reattaches after an agent restart, and
// dials envd in the guest over Firecracker's hybrid vsock
// (`CONNECT 49983\n` / `OK <n>\n` on a Unix socket).
//
// NOT RUN AGAINST REAL FIRECRACKER. Firecracker cannot run on the machines
// this was written on. Every test here runs the driver against the fake in
// cmd/fake-firecracker (package fakefc), which implements the API,
// validation rules and state machine documented for Firecracker 1.16.1 and
// plays the guest with a real envd process. What the fake cannot show: a
// real kernel booting (boot args, the vmlinux format, virtio devices), real
// memory snapshots, TAP devices being opened, the jailer's chroot, cgroups
// and privilege drop, and real timing. Treat the first runs on a KVM host as
// the first real tests.
//
// The rootfs path is baked into a Firecracker snapshot (vmstate stores each
// drive's path_on_host), but every restore uses its own rootfs clone. The
// driver arranges for every VM to see its rootfs at the same path:
//
//   - RootfsPrivateMount (default): firecracker runs in its own mount
//     namespace where a private tmpfs over Config.DriveDir holds a symlink
//     rootfs.ext4 -> Spec.Rootfs. path_on_host is always
//     <DriveDir>/rootfs.ext4, so any snapshot restores onto any clone, and
//     several restores of one snapshot can run at once. Needs CAP_SYS_ADMIN.
//   - under the jailer: the rootfs is placed in the jail as /rootfs.ext4,
//     the same path in every jail.
//   - RootfsDirect: path_on_host is Spec.Rootfs itself; a snapshot can only
//     be restored with the same rootfs path (hibernate and wake one sandbox),
//     anything else is refused with vm.ErrInvalidSpec.
//
// TAP names and the vsock socket move with network_overrides and
// vsock_override on load (Firecracker 1.12 and 1.16).
package firecracker
