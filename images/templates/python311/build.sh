#!/usr/bin/env bash
# Template "python311": Debian 12 (bookworm) minbase with Debian's Python 3.11
# (python3, pip, venv), plus the basics a sandbox user expects (sudo, curl,
# git, procps, iproute2), envd, and the sandbox user with passwordless sudo.
# debootstrap writes into a directory, apt in a chroot adds the packages and
# the updates; wrenn-image adds envd and packs it with mkfs.ext4 -d: no
# image mount.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
wrenn_template_env

SUITE=bookworm
SIZE_MIB=2048
PACKAGES=(python3 python3-pip python3-venv ca-certificates sudo procps iproute2 curl git less)
root=$WRENN_ROOT

wrenn_debootstrap "$root" "$SUITE"
wrenn_chroot_apt "$root" "${PACKAGES[@]}"
version=$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$version" = 3.11 ] || wrenn_die "$SUITE gives python $version, not 3.11"
ln -sf python3 "$root/usr/bin/python"
wrenn_sudoers "$root"
wrenn_debian_cleanup "$root"
wrenn_record_packages "$root" python3.11 python3-pip base-files
wrenn_finish_options size_mib="$SIZE_MIB" shell=/bin/bash user_groups=sudo
