#!/usr/bin/env bash
# Build Wrenn's guest images from Debian packages.
#
#   images/build.sh [--templates minimal,python311,node20] [--out DIR] [--envd FILE] [--force]
#
# Output (default $WRENN_IMAGES_DIR, else images/out):
#   kernel/vmlinuz-<ver>, kernel/initramfs-<ver>.img, kernel/manifest.json
#   templates/<name>/rootfs.ext4, templates/<name>/manifest.json
#
# Installs what it needs with apt-get (as root): busybox-static,
# linux-image-cloud-amd64, e2fsprogs, and debootstrap for the Debian-based
# templates. Builds envd (CGO_ENABLED=0) from ./envd unless --envd is given.
# Every artefact is cached on its inputs; a second run takes seconds.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
source "$here/templates/lib.sh"

templates=${WRENN_TEMPLATES:-minimal}
out=${WRENN_IMAGES_DIR:-$here/out}
envd=${WRENN_ENVD:-}
extra=()
while [ $# -gt 0 ]; do
	case "$1" in
	--templates) templates=$2; shift 2 ;;
	--templates=*) templates=${1#*=}; shift ;;
	--out) out=$2; shift 2 ;;
	--out=*) out=${1#*=}; shift ;;
	--envd) envd=$2; shift 2 ;;
	--envd=*) envd=${1#*=}; shift ;;
	--force) extra+=(-force); shift ;;
	--allow-dynamic-envd) extra+=(-allow-dynamic-envd); shift ;;
	-v) extra+=(-v); shift ;;
	-h | --help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) wrenn_die "unknown argument $1 (see --help)" ;;
	esac
done

pkgs=(busybox-static linux-image-cloud-amd64 e2fsprogs xz-utils)
for t in ${templates//,/ }; do
	[ "$t" = minimal ] || { pkgs+=(debootstrap debian-archive-keyring); break; }
done
wrenn_apt_install "${pkgs[@]}"

mkdir -p "$out/.bin"
out=$(cd "$out" && pwd)
if [ -z "$envd" ]; then
	version=$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo dev)
	wrenn_log "building envd ($version)"
	(cd "$repo/envd" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.commit=$version" -o "$out/.bin/envd" .) ||
		wrenn_die "envd does not build; pass --envd FILE to use another binary"
	envd=$out/.bin/envd
fi
(cd "$repo" && go build -trimpath -o "$out/.bin/wrenn-image" ./images/cmd/wrenn-image)

exec "$out/.bin/wrenn-image" build -images-dir "$here" -out "$out" -envd "$envd" \
	-templates "$templates" ${extra[@]+"${extra[@]}"}
