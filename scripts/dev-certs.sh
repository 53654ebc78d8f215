#!/usr/bin/env bash
# Makes a development CA plus a host-agent server certificate and a
# control-plane client certificate for the agent's mTLS link.
#   scripts/dev-certs.sh [DIR] [extra-host,...]
# An existing CA in DIR is kept, so certificates issued earlier stay valid.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.dev/certs}
hosts=${2:-}
go run ./cmd/host-agent certs -dir "$dir" -hosts "$hosts"
