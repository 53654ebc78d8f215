#!/usr/bin/env bash
# Regenerates the protobuf stubs into a scratch copy of the tree and fails
# when they differ from what is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$scratch"
(cd "$scratch" && ./scripts/generate-proto.sh)
status=0
for d in proto envd/internal/gen; do
	if ! diff -r "$d" "$scratch/$d" >/dev/null; then
		echo "generated code in $d is stale; run 'make generate' and commit:" >&2
		diff -r "$d" "$scratch/$d" | head -20 >&2
		status=1
	fi
done
exit $status
