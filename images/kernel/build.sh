#!/usr/bin/env bash
# Build the Firecracker guest kernel: an uncompressed ELF vmlinux (PVH) from
# Debian's linux-source-6.1 with microvm.config merged over x86_64_defconfig.
# Everything is built in, so the kernel boots the rootfs directly:
#   boot_args "console=ttyS0 reboot=k panic=1 root=/dev/vda rw init=/usr/local/bin/envd"
#
#   images/kernel/build.sh [--out DIR] [--config-only] [--jobs N]
#
# Output: DIR/kernel/vmlinux-<release> and DIR/kernel/config-<release>
# (DIR defaults to $WRENN_IMAGES_DIR, else images/out). Optional and not in
# CI: a full build takes tens of minutes on a 2-core machine.
# --config-only stops after the merged .config has been checked.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../templates/lib.sh"

out=${WRENN_IMAGES_DIR:-$here/../out}
config_only=
jobs=$(nproc)
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out=$2; shift 2 ;;
	--config-only) config_only=1; shift ;;
	--jobs) jobs=$2; shift 2 ;;
	-h | --help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) wrenn_die "unknown argument $1" ;;
	esac
done

wrenn_apt_install linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev xz-utils
tarball=$(ls /usr/src/linux-source-6.1.tar.* 2>/dev/null | head -n1)
[ -n "$tarball" ] || wrenn_die "linux-source-6.1 tarball not found in /usr/src"

mkdir -p "$out/kernel"
out=$(cd "$out" && pwd)
work=$out/.work/kernel
rm -rf "$work"
mkdir -p "$work"
WRENN_RM_DIRS+=("$work")
wrenn_log "unpacking $tarball"
tar -xf "$tarball" -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)

cd "$src"
make -s x86_64_defconfig
scripts/kconfig/merge_config.sh -m .config "$here/microvm.config" >/dev/null
make -s olddefconfig LOCALVERSION=-wrenn

# Every option of the fragment must have survived dependency resolution.
bad=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*)
		grep -qx "$line" .config || { wrenn_log "config: wanted $line, got: $(grep "^${line%%=*}=\|^# ${line%%=*} is not set" .config || echo unset)"; bad=1; }
		;;
	"# CONFIG_"*" is not set")
		opt=${line#\# }
		opt=${opt%% *}
		if grep -q "^$opt=" .config; then wrenn_log "config: wanted $opt unset, got $(grep "^$opt=" .config)"; bad=1; fi
		;;
	esac
done <"$here/microvm.config"
[ "$bad" -eq 0 ] || wrenn_die "microvm.config options were dropped by olddefconfig (missing dependencies)"

release=$(make -s kernelrelease LOCALVERSION=-wrenn)
cp .config "$out/kernel/config-$release"
wrenn_log "config for $release checked: $out/kernel/config-$release"
[ -z "$config_only" ] || exit 0

wrenn_log "building vmlinux $release with $jobs jobs"
make -s -j"$jobs" vmlinux LOCALVERSION=-wrenn
cp vmlinux "$out/kernel/vmlinux-$release"
wrenn_log "built $out/kernel/vmlinux-$release"
