# Telemeter. `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
BIN := $(CURDIR)/bin
BINARIES := telemeter-client telemeter-server authorization-server telemeter-benchmark
GOLANGCI_LINT_VERSION := v2.15.0
FUZZTIME ?= 30s

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build every binary into bin/.
	@mkdir -p $(BIN)
	@for b in $(BINARIES); do \
		if [ -d ./cmd/$$b ]; then $(GO) build -o $(BIN)/$$b ./cmd/$$b || exit 1; fi; \
	done

.PHONY: demo
demo: build ## Run the demo: source Prometheus -> client -> server cluster -> central Prometheus.
	./scripts/demo.sh

.PHONY: test
test: deps vet test-unit test-fuzz test-e2e test-integration bench-smoke ## Run the whole test suite (installs Prometheus when missing).

.PHONY: deps
deps: ## Install what the tests need (Prometheus) when it is missing.
	./scripts/install-prometheus.sh

.PHONY: test-unit
test-unit: ## Unit tests with -race, including every fuzz seed corpus.
	$(GO) test -race -count=1 -timeout 15m ./...

.PHONY: test-e2e
test-e2e: build ## End-to-end tests: real binaries, real Prometheus.
	PATH="$(BIN):$$PATH" TELEMETER_BIN=$(BIN) $(GO) test -tags e2e -count=1 -timeout 30m -v ./test/e2e/... 2>&1 | tee /tmp/telemeter-e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; exit $${PIPESTATUS[0]}

.PHONY: test-integration
test-integration: build ## Self-contained integration check: prints "tests: ok" or the reason it failed.
	./scripts/test-integration.sh

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 30s).
	./scripts/fuzz.sh $(FUZZTIME)

CI_FUZZTIME ?= 20s
.PHONY: test-fuzz
test-fuzz: ## Every fuzz target with the fuzzing engine for CI_FUZZTIME each (default 20s; part of make test).
	./scripts/fuzz.sh $(CI_FUZZTIME)

.PHONY: vet
vet: ## gofmt and go vet (the fast part of lint; part of make test).
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...

.PHONY: lint
lint: vet ## gofmt, go vet and golangci-lint.
	@test -x $(BIN)/golangci-lint || GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	$(BIN)/golangci-lint run ./...

BENCH_SIZE ?= default
.PHONY: bench
bench: ## Workloads W1–W7 against real binaries and the peers, plus micro-benchmarks; rewrites docs/benchmarks.md (BENCH_SIZE=full for full size).
	BENCH_SIZE=$(BENCH_SIZE) ./scripts/bench.sh

.PHONY: bench-smoke
bench-smoke: ## Every benchmark workload at toy size, under a minute; fails if a step produced no number.
	./scripts/bench.sh --smoke

.PHONY: clean
clean: ## Remove build outputs.
	rm -rf $(BIN)/telemeter-* $(BIN)/authorization-server
