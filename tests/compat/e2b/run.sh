#!/usr/bin/env bash
# E2B SDK compatibility test: builds envd, serves it on 127.0.0.1:49983 (the
# address the stock `e2b` SDK uses in debug mode), and runs the node tests in
# this directory against it. Exits non-zero if anything fails.
#
# Usage: tests/compat/e2b/run.sh            (from any directory, as root)
# Env:   E2B_COMPAT_TRACE=1  log every SDK request/response
#        E2B_COMPAT_ENVD_LOG=path  keep envd's log there (default: temp dir,
#                                  printed on failure)
#        E2B_COMPAT_TIMEOUT=secs   overall limit for the node run (default 600)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
addr=127.0.0.1
port=49983

die() { echo "e2b-compat: $*" >&2; exit 1; }

command -v node >/dev/null || die "node is required (Node.js >= 20)"
command -v npm >/dev/null || die "npm is required"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js >= 20 is required, found $(node --version)"
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || die "go is required to build envd"
go_bin="$(command -v go || echo /usr/local/go/bin/go)"
command -v curl >/dev/null || die "curl is required"
# envd switches to the requested OS user for every command; that needs root.
[ "$(id -u)" -eq 0 ] || die "must run as root (envd starts processes as other users)"

# Fail early and clearly if something already listens on the port: the SDK
# would silently talk to it instead of to the envd we build.
if (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; then
	die "$addr:$port is already in use; stop whatever listens there first"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/e2b-compat-run.XXXXXX")"
envd_pid=""
cleanup() {
	local rc=$?
	if [ -n "$envd_pid" ] && kill -0 "$envd_pid" 2>/dev/null; then
		kill -TERM "$envd_pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$envd_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$envd_pid" 2>/dev/null || true
		wait "$envd_pid" 2>/dev/null || true
	fi
	if [ "$rc" -ne 0 ] && [ -f "$envd_log" ]; then
		echo "---- envd log (last 100 lines of $envd_log) ----" >&2
		tail -n 100 "$envd_log" >&2 || true
	fi
	rm -rf "$work"
	exit "$rc"
}
envd_log="${E2B_COMPAT_ENVD_LOG:-$work/envd.log}"
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "e2b-compat: installing the pinned SDK (npm ci)"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci failed"

echo "e2b-compat: building envd"
(cd "$repo/envd" && CGO_ENABLED=0 "$go_bin" build -o "$work/envd" .) || die "envd does not build"

echo "e2b-compat: starting envd on $addr:$port (log: $envd_log)"
"$work/envd" --listen-tcp "$addr:$port" --verbose >"$envd_log" 2>&1 &
envd_pid=$!

for _ in $(seq 100); do
	kill -0 "$envd_pid" 2>/dev/null || die "envd exited during start-up"
	code="$(curl -s -o /dev/null -w '%{http_code}' "http://$addr:$port/health" || true)"
	[ "$code" = 204 ] && break
	sleep 0.1
done
[ "${code:-}" = 204 ] || die "envd did not answer GET /health with 204 (last: ${code:-none})"
# The SDK's debug URL is http://localhost:49983; make sure node resolves that
# to the envd on 127.0.0.1 (and not to an unanswered ::1).
node -e "fetch('http://localhost:$port/health').then(r => process.exit(r.status === 204 ? 0 : 1), () => process.exit(1))" ||
	die "node cannot reach envd at http://localhost:$port (does localhost resolve to 127.0.0.1?)"

echo "e2b-compat: running the SDK tests"
cd "$here"
# The tests' scratch directories go under $work too, so they are removed even
# when node is killed; other users (nobody) must be able to reach them.
mkdir -p "$work/tmp"
chmod 0711 "$work"
chmod 1777 "$work/tmp"
status=0
TMPDIR="$work/tmp" timeout --kill-after=10 "${E2B_COMPAT_TIMEOUT:-600}" \
	node --test --test-force-exit --test-reporter=spec compat.test.mjs files.test.mjs || status=$?
if [ "$status" -ne 0 ]; then
	echo "e2b-compat: FAILED (exit $status)" >&2
	exit "$status"
fi
echo "e2b-compat: all tests passed"
