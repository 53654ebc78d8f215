#!/usr/bin/env bash
# `make dev` / `make dev-down`: the whole platform on one machine, from a
# fresh Debian/Ubuntu box. Everything lives under .dev/ in the checkout:
# a PostgreSQL cluster (initdb/pg_ctl, no Docker), dev certificates, the
# agent's sandboxes and snapshots, logs, pid files and the seeded API keys.
#
# Sandboxes get a private network: by default the agent's host side is a
# network namespace this script creates (wrenn-dev), so sandboxes reach
# each other's host side only, not the internet. Set WRENN_DEV_NETNS= (empty)
# to use this machine's own namespace and give sandboxes internet egress.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dev=$root/.dev
export PATH=/usr/local/go/bin:$PATH

PG_PORT=${WRENN_DEV_PG_PORT:-55432}
CP_ADDR=${WRENN_DEV_CP_ADDR:-127.0.0.1:8000}
AGENT_ADDR=${WRENN_DEV_AGENT_ADDR:-127.0.0.1:50051}
AGENT_METRICS=${WRENN_DEV_AGENT_METRICS:-127.0.0.1:9464}
NETNS=${WRENN_DEV_NETNS-wrenn-dev}
# The cluster is Wrenn's alone, so its default database holds the tables.
DB_URL="postgres://wrenn@127.0.0.1:$PG_PORT/postgres?sslmode=disable"

say() { printf '\033[1;32m==>\033[0m %s\n' "$*"; }
die() { printf 'dev: %s\n' "$*" >&2; exit 1; }

pg_bin() {
	if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
	ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

as_pg() { # run a PostgreSQL tool as the unprivileged postgres user when root
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

wait_for() { # wait_for DESCRIPTION SECONDS COMMAND...
	local what=$1 secs=$2; shift 2
	for _ in $(seq $((secs * 5))); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	die "$what did not come up; see the logs in $dev"
}

stop_pidfile() {
	local f=$1
	[ -f "$f" ] || return 0
	local pid; pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

up() {
	[ "$(id -u)" -eq 0 ] || die "run as root (the host agent creates VMs, namespaces and cgroups): sudo make dev"
	say "installing what is missing"
	./scripts/install-deps.sh
	command -v go >/dev/null || die "Go 1.26+ is required in /usr/local/go"
	id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres

	say "building"
	make -s build-envd build-agent
	go build -o bin/wrenn-cp ./cmd/control-plane

	say "building the minimal image (cached after the first run)"
	./images/build.sh --templates minimal >"$dev.images.log" 2>&1 || { cat "$dev.images.log" >&2; die "image build failed"; }
	mkdir -p "$dev"; mv "$dev.images.log" "$dev/images.log"

	say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
	local bin; bin=$(pg_bin); [ -n "$bin" ] || die "PostgreSQL server binaries not found"
	mkdir -p "$dev/pg"
	chown postgres: "$dev/pg"
	if [ ! -f "$dev/pg/data/PG_VERSION" ]; then
		as_pg "$bin/initdb" -D "$dev/pg/data" -U wrenn -A trust -E UTF8 >"$dev/pg/initdb.log"
	fi
	if ! as_pg "$bin/pg_ctl" -D "$dev/pg/data" status >/dev/null 2>&1; then
		as_pg "$bin/pg_ctl" -D "$dev/pg/data" -l "$dev/pg/server.log" -w start \
			-o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $dev/pg" >/dev/null
	fi

	say "migrating"
	DATABASE_URL=$DB_URL bin/wrenn-cp migrate up >/dev/null

	say "certificates"
	[ -f "$dev/certs/ca.pem" ] || ./scripts/dev-certs.sh "$dev/certs" >/dev/null

	if [ -n "$NETNS" ] && ! ip netns list | grep -qw "$NETNS"; then
		ip netns add "$NETNS"
		ip -n "$NETNS" link set lo up
	fi

	say "starting the host agent on $AGENT_ADDR"
	stop_pidfile "$dev/agent.pid"
	mkdir -p "$dev/sandboxes" "$dev/snapshots" "$dev/template-snapshots"
	env AGENT_LISTEN_ADDR="$AGENT_ADDR" AGENT_METRICS_ADDR="$AGENT_METRICS" \
		AGENT_TLS_CA="$dev/certs/ca.pem" AGENT_TLS_CERT="$dev/certs/server.pem" AGENT_TLS_KEY="$dev/certs/server-key.pem" \
		AGENT_IMAGES_PATH="$root/images/out" AGENT_SANDBOXES_PATH="$dev/sandboxes" \
		AGENT_SNAPSHOTS_PATH="$dev/snapshots" AGENT_TEMPLATE_CACHE_PATH="$dev/template-snapshots" \
		AGENT_NETWORK_HOST_NS="$NETNS" \
		setsid bin/wrenn-agent >"$dev/agent.log" 2>&1 &
	echo $! >"$dev/agent.pid"
	wait_for "the host agent" 120 curl -sf "http://$AGENT_METRICS/healthz"

	say "seeding API keys"
	if [ ! -f "$dev/keys.env" ]; then
		local admin user
		admin=$(DATABASE_URL=$DB_URL bin/wrenn-cp keys create --owner admin --admin --name dev-admin | grep -o 'wrn_[A-Za-z0-9]*' | head -1)
		user=$(DATABASE_URL=$DB_URL bin/wrenn-cp keys create --owner dev --name dev-user | grep -o 'wrn_[A-Za-z0-9]*' | head -1)
		[ -n "$admin" ] && [ -n "$user" ] || die "could not seed API keys"
		printf 'WRENN_ADMIN_KEY=%s\nWRENN_API_KEY=%s\n' "$admin" "$user" >"$dev/keys.env"
		chmod 600 "$dev/keys.env"
	fi
	# shellcheck disable=SC1091
	. "$dev/keys.env"

	say "starting the control plane on $CP_ADDR"
	stop_pidfile "$dev/cp.pid"
	env DATABASE_URL="$DB_URL" CP_LISTEN_ADDR="$CP_ADDR" CP_AGENT_ENDPOINTS="$AGENT_ADDR" \
		CP_TLS_CA="$dev/certs/ca.pem" CP_TLS_CERT="$dev/certs/client.pem" CP_TLS_KEY="$dev/certs/client-key.pem" \
		CP_SCHEDULER=single_host setsid bin/wrenn-cp serve >"$dev/cp.log" 2>&1 &
	echo $! >"$dev/cp.pid"
	wait_for "the control plane" 60 curl -sf -H "X-API-Key: $WRENN_API_KEY" "http://$CP_ADDR/v1/sandboxes"
	wait_for "the agent's registration" 60 sh -c \
		"curl -sf -H 'X-API-Key: $WRENN_ADMIN_KEY' http://$CP_ADDR/v1/hosts | grep -q healthy"

	cat <<MSG

Wrenn is up. Logs and state are in .dev/ (stop everything with: make dev-down)
  API:        http://$CP_ADDR/v1   (OpenAPI: docs/openapi.yaml)
  admin key:  $WRENN_ADMIN_KEY
  user key:   $WRENN_API_KEY

Create a sandbox and run echo hello in it:

  ID=\$(curl -s -H "X-API-Key: $WRENN_API_KEY" -d '{"template":"minimal","memory_mb":256}' http://$CP_ADDR/v1/sandboxes | grep -o 'sb-[0-9a-f]*' | head -1) && curl -s -H "X-API-Key: $WRENN_API_KEY" -d '{"cmd":"echo","args":["hello"]}' http://$CP_ADDR/v1/sandboxes/\$ID/exec

MSG
}

down() {
	if [ -f "$dev/keys.env" ] && [ -f "$dev/cp.pid" ] && kill -0 "$(cat "$dev/cp.pid")" 2>/dev/null; then
		# shellcheck disable=SC1091
		. "$dev/keys.env"
		say "destroying sandboxes"
		for id in $(curl -s -H "X-API-Key: $WRENN_API_KEY" "http://$CP_ADDR/v1/sandboxes?limit=100" | grep -o '"id":"sb-[0-9a-f]*"' | cut -d'"' -f4); do
			curl -s -X DELETE -H "X-API-Key: $WRENN_API_KEY" "http://$CP_ADDR/v1/sandboxes/$id" >/dev/null || true
		done
	fi
	say "stopping the control plane and the host agent"
	stop_pidfile "$dev/cp.pid"
	stop_pidfile "$dev/agent.pid"
	# Template VMs and any sandbox the API did not know about: only VMMs
	# whose run directory is under .dev/ are ours.
	for pid in $(pgrep -f "qemu-system.*$dev/" || true); do kill "$pid" 2>/dev/null || true; done
	say "stopping PostgreSQL"
	local bin; bin=$(pg_bin)
	if [ -n "$bin" ] && [ -f "$dev/pg/data/PG_VERSION" ]; then
		as_pg "$bin/pg_ctl" -D "$dev/pg/data" -m fast stop >/dev/null 2>&1 || true
	fi
	if [ -n "$NETNS" ] && ip netns list | grep -qw "$NETNS"; then
		ip netns del "$NETNS" || true
	fi
	# The agent's parent cgroup, once its sandboxes are gone (rmdir only
	# removes an empty group).
	for d in /sys/fs/cgroup/*/wrenn /sys/fs/cgroup/wrenn; do
		[ -d "$d" ] && rmdir "$d" 2>/dev/null || true
	done
	say "stopped (state kept in .dev/; rm -rf .dev for a clean slate)"
}

case "${1:-up}" in
up) up ;;
down) down ;;
*) die "usage: scripts/dev.sh up|down" ;;
esac
