#!/usr/bin/env bash
# Regenerates every Go stub from proto/. The code generators are the versions
# pinned by the `tool` lines in go.mod; protoc comes from Debian's
# protobuf-compiler package. The envd protos are generated twice: once for the
# main module (proto/envd/gen) and once for the envd module
# (envd/internal/gen), because envd must not import the main module.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }

plugins=$(mktemp -d)
trap 'rm -rf "$plugins"' EXIT
go build -o "$plugins/" \
	google.golang.org/protobuf/cmd/protoc-gen-go \
	connectrpc.com/connect/cmd/protoc-gen-connect-go \
	google.golang.org/grpc/cmd/protoc-gen-go-grpc
export PATH="$plugins:$PATH"

main=github.com/wrenn-dev/wrenn-sandbox
envd=github.com/wrenn-dev/envd

rm -rf proto/envd/gen envd/internal/gen
mkdir -p proto/envd/gen envd/internal/gen

# envd protos, main module copy.
protoc -I proto/envd \
	--go_out=. --go_opt=module=$main \
	--connect-go_out=. --connect-go_opt=module=$main \
	proto/envd/process.proto proto/envd/filesystem.proto

# envd protos, envd module copy (import paths rewritten with M options).
protoc -I proto/envd \
	--go_out=envd --go_opt=module=$envd \
	--go_opt=Mprocess.proto=$envd/internal/gen/process\;process \
	--go_opt=Mfilesystem.proto=$envd/internal/gen/filesystem\;filesystem \
	--connect-go_out=envd --connect-go_opt=module=$envd \
	--connect-go_opt=Mprocess.proto=$envd/internal/gen/process\;process \
	--connect-go_opt=Mfilesystem.proto=$envd/internal/gen/filesystem\;filesystem \
	proto/envd/process.proto proto/envd/filesystem.proto

# Host agent protocol (control plane <-> host agent), grpc-go.
if [ -f proto/hostagent/hostagent.proto ]; then
	rm -rf proto/hostagent/gen
	mkdir -p proto/hostagent/gen
	protoc -I proto/hostagent \
		--go_out=. --go_opt=module=$main \
		--go-grpc_out=. --go-grpc_opt=module=$main \
		proto/hostagent/hostagent.proto
fi
