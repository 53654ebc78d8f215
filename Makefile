# Wrenn Sandbox. `make help` lists the targets.

GOBIN      := $(CURDIR)/bin
ENVD_DIR   := envd
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS    := -s -w -X main.commit=$(VERSION)
GO         ?= go
TEST_FLAGS ?= -count=1

.DEFAULT_GOAL := help

# ---------------------------------------------------------------- build
.PHONY: build build-agent build-envd build-fake-fc

build: build-agent build-envd build-fake-fc ## Build every binary into bin/

build-agent: ## Build the host agent (bin/wrenn-agent)
	$(GO) build -trimpath -ldflags="$(LDFLAGS)" -o $(GOBIN)/wrenn-agent ./cmd/host-agent

build-fake-fc: ## Build the fake Firecracker used by the firecracker driver's tests
	$(GO) build -trimpath -o $(GOBIN)/fake-firecracker ./cmd/fake-firecracker

build-envd: ## Build the static envd guest agent (fails unless statically linked)
	cd $(ENVD_DIR) && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 \
		$(GO) build -trimpath -ldflags="$(LDFLAGS)" -o $(GOBIN)/envd .
	@file $(GOBIN)/envd | grep -q "statically linked" || \
		(echo "ERROR: envd is not statically linked" >&2; exit 1)

# ---------------------------------------------------------------- codegen
.PHONY: generate proto check-generated

generate: proto ## Regenerate all generated code

proto: ## Regenerate Go stubs from proto/ with the pinned generators
	./scripts/generate-proto.sh

check-generated: ## Fail when committed generated code differs from a fresh `make generate`
	./scripts/check-generated.sh

# ---------------------------------------------------------------- quality
.PHONY: fmt vet test test-envd test-compat test-main bench

fmt: ## gofmt every module
	gofmt -w $$(git ls-files '*.go' | grep -v '/gen/')

vet: ## go vet every module
	$(GO) vet ./...
	cd $(ENVD_DIR) && $(GO) vet ./...

test: check-generated vet test-main test-envd test-compat ## Every test, starting what each needs (run as root)

test-main: ## Tests of the main module
	$(GO) test -race $(TEST_FLAGS) ./...

test-envd: ## envd unit tests and its end-to-end suite on loopback
	cd $(ENVD_DIR) && $(GO) test -race $(TEST_FLAGS) ./...

test-compat: ## The stock e2b npm SDK against envd on 127.0.0.1:49983
	./tests/compat/e2b/run.sh

bench: ## Benchmarks (numbers go to docs/benchmarks.md)
	cd $(ENVD_DIR) && $(GO) test -run '^$$' -bench . -benchtime 3x ./...

# ---------------------------------------------------------------- dev
.PHONY: dev dev-down

dev: ## Everything up locally (PostgreSQL, agent, control plane); prints keys and a curl line
	./scripts/dev.sh up

dev-down: ## Stop what `make dev` started (sandboxes destroyed, state kept in .dev/)
	./scripts/dev.sh down

# ---------------------------------------------------------------- images
.PHONY: images
TEMPLATES ?= minimal,python311,node20

images: ## Build the guest kernel/initramfs and rootfs templates into images/out (cached)
	./images/build.sh --templates $(TEMPLATES)

# ---------------------------------------------------------------- misc
.PHONY: clean help

clean: ## Remove build output
	rm -rf bin/

help: ## This list
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN{FS=":.*## "}{printf "  make %-18s %s\n", $$1, $$2}'
