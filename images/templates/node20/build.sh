#!/usr/bin/env bash
# Template "node20": Node.js 20 from Debian packages only.
#
# Debian 12 (bookworm) ships nodejs 18, and Debian has no Node 20 backport
# for it, so this template is based on Debian 13 (trixie), whose nodejs is
# 20.19. The script checks the major version and fails rather than ship a
# "node20" image with another Node. Same extras and sandbox user as
# python311.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
wrenn_template_env

SUITE=trixie
SIZE_MIB=2048
PACKAGES=(nodejs npm ca-certificates sudo procps iproute2 curl git less)
root=$WRENN_ROOT

wrenn_debootstrap "$root" "$SUITE"
wrenn_chroot_apt "$root" "${PACKAGES[@]}"
version=$(chroot "$root" node --version)
case "$version" in
v20.*) ;;
*) wrenn_die "$SUITE gives node $version, not 20.x" ;;
esac
chroot "$root" npm --version >/dev/null || wrenn_die "npm does not run"
wrenn_sudoers "$root"
wrenn_debian_cleanup "$root"
wrenn_record_packages "$root" nodejs npm base-files
wrenn_finish_options size_mib="$SIZE_MIB" shell=/bin/bash user_groups=sudo
