#!/bin/sh
# Wrenn initramfs /init (busybox sh). Loads the virtio modules Debian's cloud
# kernel keeps as modules, mounts the root disk and replaces itself with the
# rootfs's init (envd) through switch_root, passing its arguments on.
#
# Kernel command line keys read here:
#   root=/dev/vda        root block device (default /dev/vda)
#   rootfstype=ext4      filesystem type (default ext4)
#   rootflags=...        extra mount options
#   ro | rw              mount mode (default rw)
#   init=/path           program to run in the rootfs (default /usr/local/bin/envd)
#   wrenn.rootwait=N     seconds to wait for the root device (default 10)
#   wrenn.shell          drop to a shell on the console instead of failing
#   quiet                no progress lines
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev

root=/dev/vda
fstype=ext4
flags=
mode=rw
init=/usr/local/bin/envd
rootwait=10
shell=
quiet=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	root=*) root="${arg#root=}" ;;
	rootfstype=*) fstype="${arg#rootfstype=}" ;;
	rootflags=*) flags="${arg#rootflags=}" ;;
	ro) mode=ro ;;
	rw) mode=rw ;;
	init=*) init="${arg#init=}" ;;
	wrenn.rootwait=*) rootwait="${arg#wrenn.rootwait=}" ;;
	wrenn.shell) shell=1 ;;
	quiet) quiet=1 ;;
	esac
done

say() { [ -n "$quiet" ] || echo "wrenn-init: $*"; }

fail() {
	echo "wrenn-init: $*"
	if [ -n "$shell" ]; then
		exec sh
	fi
	# PID 1 exiting panics the kernel; with panic=N the VM reboots, which a
	# microVM started with -no-reboot (or Firecracker with reboot=k) turns
	# into an exit.
	exit 1
}

if [ -f /lib/modules/load.order ]; then
	while read -r mod; do
		[ -n "$mod" ] || continue
		out=$(insmod "/lib/modules/$mod" 2>&1) || case "$out" in
			*"File exists"*) ;;
			*) echo "wrenn-init: insmod $mod: $out" ;;
			esac
	done </lib/modules/load.order
fi

# The root device node appears once virtio_blk has probed; wait in 10 ms steps.
tries=$((rootwait * 100))
while [ ! -b "$root" ]; do
	tries=$((tries - 1))
	[ "$tries" -gt 0 ] || fail "root device $root did not appear"
	usleep 10000
done

mkdir -p /newroot
mount -t "$fstype" -o "$mode${flags:+,$flags}" "$root" /newroot || fail "mount $root ($fstype) failed"
[ -x "/newroot$init" ] || fail "$init is not an executable in the root filesystem"

for d in dev proc sys; do
	mkdir -p "/newroot/$d" 2>/dev/null
	mount --move "/$d" "/newroot/$d" || fail "move /$d failed"
done

say "switching to $root, running $init"
exec switch_root /newroot "$init" "$@"
