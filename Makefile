# dsr-agent build and test entry points. Area-specific targets live in mk/*.mk
# (lab/demo, packaging, boot test) and add themselves to TEST_TARGETS.
SHELL := /bin/bash
# sudo's secure_path drops /usr/local/go/bin (where go.dev's tarball goes), so
# `sudo make demo` would not find go on PATH: fall back to it.
# Scripts run by make find the same go through PATH.
ifndef GO
GO := $(shell command -v go 2>/dev/null || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || echo go)
endif
ifneq ($(filter /%,$(GO)),)
export PATH := $(patsubst %/,%,$(dir $(GO))):$(PATH)
endif
BIN := bin
# The version is the VERSION file (MAJOR.MINOR.PATCH; every build embeds it,
# see version.go); the commit is stamped here because go build's own VCS stamp
# is off on some machines (GOFLAGS=-buildvcs=false) and in git worktrees.
# A build outside git may pass COMMIT=SHA.
VERSION := $(shell cat VERSION)
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)$(shell [ -n "$$(git status --porcelain 2>/dev/null)" ] && echo -dirty)
LDFLAGS := -s -w $(if $(COMMIT),-X github.com/dsr-agent/dsr-agent.commit=$(COMMIT))
STATICCHECK_VERSION := v0.7.0
GOBIN_DIR := $(CURDIR)/$(BIN)/tools

# Each mk/*.mk appends the test targets it owns, and the package lists
# (mk/AREA.packages) those targets need to TEST_DEPS.
TEST_TARGETS := test-unit test-root
TEST_DEPS :=

# Every go test of a test target goes through internal/skipreport: it prints
# what go test prints and, at the end, each skipped test with its reason, and
# records them in $(SKIPS_DIR)/TARGET.json for `make test`'s summary. With
# DSR_AGENT_STRICT_SKIPS=1 (CI) a skip that mk/skips.allowed does not list
# fails the target (-short runs, where tests skip by design, are only counted).
#   $(call go_test,TARGET,ENV,GO TEST ARGS,SKIPREPORT FLAGS)
SKIPREPORT := $(BIN)/skipreport
SKIPS_DIR := $(BIN)/skips
SKIPS_ALLOWED := mk/skips.allowed
go_test = set -o pipefail; $(2) $(GO) test -json $(3) | $(SKIPREPORT) -name $(1) -allow $(SKIPS_ALLOWED) -record $(SKIPS_DIR)/$(1).json $(4)

$(SKIPREPORT): $(wildcard internal/skipreport/*.go)
	CGO_ENABLED=0 $(GO) build -o $@ ./internal/skipreport

.PHONY: all build test test-unit test-root lint bench demo clean
all: build

build: $(BIN)/dsr-agent

$(BIN)/dsr-agent: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/dsr-agent
FORCE:

-include mk/*.mk

## deps: install every Debian package any target needs (mk/*.packages; root),
## and download the Go modules. Fast when all is there. Targets below install
## their own area's packages (deps-AREA) first, so this is optional.
.PHONY: deps deps-test
deps:
	mk/install-deps.sh --all
	$(GO) mod download

deps-test:
	mk/install-deps.sh $(TEST_DEPS)

deps-%:
	mk/install-deps.sh $*

# Every test target installs the packages of `make test` first (order-only,
# so it also holds under make -j). As non-root that is only a warning.
lint $(sort test-root $(TEST_TARGETS)): | deps-test

## test: everything CI runs (unit, real-kernel, end-to-end, packaging), then
## every skipped test with its reason.
test: lint $(TEST_TARGETS) $(SKIPREPORT)
	@echo "=== skipped tests (mk/skips.allowed lists those CI accepts)"
	@$(SKIPREPORT) -summary -allow $(SKIPS_ALLOWED) $(foreach t,$(TEST_TARGETS),$(SKIPS_DIR)/$(t).json)

## test-unit: fast tests of pure logic, no root needed.
test-unit: $(SKIPREPORT)
	$(call go_test,test-unit,,-count=1 -short ./...,-short)

## test-root: real-kernel tests, each in its own network namespace (root).
test-root: $(SKIPREPORT)
	$(call go_test,test-root,,-count=1 -p 1 -timeout 20m ./...)

## lint: gofmt, go vet, staticcheck.
lint: $(GOBIN_DIR)/staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@# go.mod must say what the code imports (direct modules not // indirect).
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GOBIN_DIR)/staticcheck ./...

$(GOBIN_DIR)/staticcheck:
	GOBIN=$(GOBIN_DIR) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

## bench: Go benchmarks (root: they use network namespaces): apply (VIPs and
## AnyIP prefixes, with the kernel's own `ip -batch` floor), the anyip surface
## alone, and the director's probe on one core.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x -count 5 -timeout 60m ./agent/ | tee bench/last-run.txt
	$(GO) test -run '^$$' -bench . -benchtime 30x -count 5 ./anyip/ | tee -a bench/last-run.txt
	$(GO) test -run '^$$' -bench Probe -benchtime 1000x -count 3 -cpu 1 ./probe/ | tee -a bench/last-run.txt

clean:
	rm -rf $(BIN)
