# Shared helpers for images/build.sh and images/templates/*/build.sh.
# Source it; it defines functions only (plus the WRENN_* defaults a template
# needs when run by hand).
#
# A template script populates a base tree; `wrenn-image build` (see
# internal/imagebuild/template.go) runs it, keeps the tree cached, and then
# adds envd and the accounts and packs it with mkfs.ext4 -d. It sets:
#   WRENN_ROOT          the empty directory to populate
#   WRENN_WORK          a scratch directory (deleted afterwards)
#   WRENN_FINISH_OUT    file for finish options (wrenn_finish_options)
#   WRENN_PACKAGES_OUT  file for "name version" lines recorded in manifest.json
#   WRENN_IMAGE_TOOL    the wrenn-image binary
#   WRENN_BUSYBOX       busybox-static binary
# Optional: WRENN_DEBIAN_MIRROR / WRENN_DEBIAN_SECURITY_MIRROR override the
# mirrors taken from this machine's apt sources.

wrenn_log() { printf '[wrenn-image] %s\n' "$*" >&2; }
wrenn_die() { wrenn_log "error: $*"; exit 1; }

# One EXIT trap for everything: unmount what debootstrap may have left
# mounted, then delete scratch directories this shell created.
WRENN_UMOUNT_DIRS=()
WRENN_RM_DIRS=()
wrenn_cleanup() {
	local d
	for d in ${WRENN_UMOUNT_DIRS[@]+"${WRENN_UMOUNT_DIRS[@]}"}; do wrenn_umount_under "$d"; done
	for d in ${WRENN_RM_DIRS[@]+"${WRENN_RM_DIRS[@]}"}; do
		# Never delete through a mount point.
		if awk -v d="$(realpath -m "$d")" '$5 == d || index($5, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
			wrenn_log "not deleting $d: something is still mounted below it"
		else
			rm -rf "$d"
		fi
	done
}
trap wrenn_cleanup EXIT

# wrenn_apt_install PKG...: install the Debian packages that are missing.
wrenn_apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || wrenn_die "missing packages: ${missing[*]} (run as root, or apt-get install them)"
	wrenn_log "apt-get install ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# wrenn_apt_uri PATTERN: print the first URI in /etc/apt/sources.list{,.d/*}
# (deb822 "URIs:" or one-line "deb" entries) matching the extended regex.
wrenn_apt_uri() {
	local f url
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		url=$(sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' "$f" |
			tr ' ' '\n' | grep -E "$1" | head -n1 || true)
		if [ -n "$url" ]; then
			echo "${url%/}"
			return
		fi
	done
}

# wrenn_debian_mirror: print the Debian mirror apt on this machine uses.
wrenn_debian_mirror() {
	local url=${WRENN_DEBIAN_MIRROR:-}
	[ -n "$url" ] || url=$(wrenn_apt_uri '^(https?|file)://.*/debian/?$')
	[ -n "$url" ] || wrenn_die "no Debian mirror in /etc/apt/sources.list*; set WRENN_DEBIAN_MIRROR"
	echo "$url"
}

# wrenn_debian_security_mirror: print the security mirror apt uses, if any.
wrenn_debian_security_mirror() {
	if [ -n "${WRENN_DEBIAN_SECURITY_MIRROR:-}" ]; then
		echo "$WRENN_DEBIAN_SECURITY_MIRROR"
		return
	fi
	wrenn_apt_uri '^(https?|file)://.*/debian-security/?$'
}

# wrenn_umount_under DIR: unmount everything mounted at or below DIR,
# deepest first (debootstrap mounts /proc and /sys in its target).
wrenn_umount_under() {
	local dir mp
	dir=$(realpath -m "$1")
	awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
		while read -r mp; do
			umount "$mp" 2>/dev/null || umount -l "$mp" || true
		done
}

# wrenn_debootstrap DIR SUITE: a minbase Debian tree in DIR from this
# machine's mirror, with apt pointed at SUITE, SUITE-updates and
# SUITE-security. No image is mounted; debootstrap itself mounts /proc and
# /sys in DIR while it runs, and the EXIT trap unmounts them on failure.
wrenn_debootstrap() {
	local dir=$1 suite=$2 mirror security
	[ "$(id -u)" -eq 0 ] || wrenn_die "debootstrap needs root"
	mirror=$(wrenn_debian_mirror)
	security=$(wrenn_debian_security_mirror)
	wrenn_log "debootstrap $suite from $mirror"
	mkdir -p "$dir"
	WRENN_UMOUNT_DIRS+=("$dir")
	debootstrap --variant=minbase --components=main \
		--keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
		"$suite" "$dir" "$mirror" >&2
	wrenn_umount_under "$dir"
	{
		printf 'deb %s %s main\n' "$mirror" "$suite" "$mirror" "$suite-updates"
		[ -z "$security" ] || printf 'deb %s %s main\n' "$security" "$suite-security"
	} >"$dir/etc/apt/sources.list"
}

# wrenn_chroot_apt DIR PKG...: bring the tree up to date (updates and
# security) and install PKG... with apt inside it. apt resolves what
# debootstrap's own resolver cannot (alternatives, virtual packages). No
# mounts: nothing here needs /proc, and services are never started.
wrenn_chroot_apt() {
	local dir=$1 rc=0
	shift
	printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
	chmod 0755 "$dir/usr/sbin/policy-rc.d"
	cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
	local env=(env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin)
	local apt=(apt-get -y -qq -o Dpkg::Use-Pty=0 -o APT::Keep-Downloaded-Packages=false)
	{
		chroot "$dir" "${env[@]}" "${apt[@]}" update &&
			chroot "$dir" "${env[@]}" "${apt[@]}" -o Dpkg::Options::=--force-confold dist-upgrade &&
			chroot "$dir" "${env[@]}" "${apt[@]}" --no-install-recommends install "$@"
	} >&2 || rc=$?
	rm -f "$dir/usr/sbin/policy-rc.d"
	[ "$rc" -eq 0 ] || wrenn_die "apt-get in $dir failed ($rc)"
}

# wrenn_debian_cleanup DIR: drop caches and per-build state from a debootstrap
# tree so the image is smaller and every sandbox gets fresh identities.
wrenn_debian_cleanup() {
	local dir=$1
	rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin \
		"$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log "$dir"/var/log/apt/* \
		"$dir"/tmp/* "$dir"/var/tmp/* "$dir"/root/.cache
	: >"$dir/etc/machine-id"
	rm -f "$dir/var/lib/dbus/machine-id"
}

# wrenn_sudoers DIR: passwordless sudo for the sandbox user, as in E2B's images.
wrenn_sudoers() {
	local dir=$1
	mkdir -p "$dir/etc/sudoers.d"
	printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\n' >"$dir/etc/sudoers.d/wrenn-user"
	chmod 0440 "$dir/etc/sudoers.d/wrenn-user"
}

# wrenn_record_packages DIR PKG...: append "name version" of packages
# installed in the tree to $WRENN_PACKAGES_OUT (shown in manifest.json).
wrenn_record_packages() {
	local dir=$1
	shift
	dpkg-query --admindir="$dir/var/lib/dpkg" -W -f='${Package} ${Version}\n' "$@" >>"$WRENN_PACKAGES_OUT"
}

# wrenn_finish_options KEY=VALUE...: what the Go side should do with the
# tree: size_mib (image size), shell (the sandbox user's login shell),
# user_groups (comma-separated extra groups).
wrenn_finish_options() {
	printf '%s\n' "$@" >"$WRENN_FINISH_OUT"
}

# wrenn_template_env: check that the script runs under `wrenn-image build`.
wrenn_template_env() {
	local v
	for v in WRENN_ROOT WRENN_WORK WRENN_FINISH_OUT WRENN_PACKAGES_OUT WRENN_IMAGE_TOOL WRENN_BUSYBOX; do
		[ -n "${!v:-}" ] || wrenn_die "$v is not set: run templates through images/build.sh --templates NAME"
	done
}
