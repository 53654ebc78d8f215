#!/usr/bin/env bash
# Installs, through the system package manager, every tool Wrenn's build,
# tests and `make dev` use. Safe to run again: it installs only what is
# missing. Needs root (or sudo).
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# command -> Debian package
declare -A need=(
	[protoc]=protobuf-compiler
	[file]=file
	[make]=make
	[node]=nodejs
	[npm]=npm
	[qemu-system-x86_64]=qemu-system-x86
	[busybox]=busybox-static
	[mkfs.ext4]=e2fsprogs
	[debootstrap]=debootstrap
	[ip]=iproute2
	[nft]=nftables
	[xz]=xz-utils
	[mkfs.xfs]=xfsprogs
	[debugfs]=e2fsprogs
	[curl]=curl
)
missing=()
for cmd in "${!need[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# PostgreSQL server binaries (tests and `make dev` run a throwaway cluster).
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# The guest kernel for the QEMU driver.
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || missing+=(linux-image-cloud-amd64)

if [ ${#missing[@]} -gt 0 ]; then
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	echo "Go 1.26+ is required (https://go.dev/dl); install it to /usr/local/go" >&2
	exit 1
fi
