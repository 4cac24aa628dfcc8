# Network-namespace lab (issue 3). Included by the top Makefile.
#   make demo [MODE=loopback|arptables|firewalld] [FAMILY=4|6|46]
#       (root) client, LVS-DR director and 2 real servers configured by
#       `dsr-agent apply`; shows DSR working, then tears it all down.
#   make test-e2e   (root) end-to-end tests, every mode x IPv4/IPv6 (HTTP and
#       DNS with unbound), negative controls (ARP flux, UDP answers from the
#       wrong source), no-ARP-window test. Built with the `e2e` tag only, so the
#       plain `go test ./...` of test-unit/test-root does not run them twice.
#   make lab-sweep  (root) delete namespaces left by killed lab runs.
MODE ?= loopback
FAMILY ?= 4
LAB_BIN := $(BIN)/dsr-lab

.PHONY: demo test-e2e lab-sweep $(LAB_BIN)
TEST_TARGETS += test-e2e
TEST_DEPS += lab

$(LAB_BIN):
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./cmd/dsr-lab

## demo: DSR end to end in network namespaces (root). MODE=, FAMILY= (4, 6, 46).
demo: build $(LAB_BIN) | deps-lab
	$(LAB_BIN) demo --agent $(BIN)/dsr-agent --mode $(MODE) --family $(FAMILY)

## test-e2e: end-to-end tests through the lab (root).
test-e2e: build $(SKIPREPORT)
	$(call go_test,test-e2e,DSR_AGENT_BIN=$(CURDIR)/$(BIN)/dsr-agent,-tags e2e -count=1 -p 1 -timeout 15m ./internal/lab/,-v)

lab-sweep: $(LAB_BIN)
	$(LAB_BIN) sweep
