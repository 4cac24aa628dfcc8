# firewalld (issue 12, part 3): the firewalld/ package asks a running
# firewalld over D-Bus whether the VIP, health and agent-check ports are let
# in, and whether redirected traffic is accepted (firewalld mode).
#   make test-firewalld   (root) a real firewalld (Debian's 1.3) started with
#       --nofork on a private D-Bus system bus, in a throwaway network
#       namespace, with private copies of /etc/firewalld and
#       /usr/lib/firewalld (--system-config, --default-config): the host's
#       firewall, bus and /etc/firewalld are never touched (the test checks).
#       ~5 s.
# Built with the `firewalld` tag only (like test-e2e and test-crash), so
# test-unit/test-root do not run it twice; `make lint` does not see tagged
# files, so vet and staticcheck run here with the tag. The pure tests
# (Findings, zone rules, the service XML) run untagged in test-unit.
.PHONY: test-firewalld
TEST_TARGETS += test-firewalld
TEST_DEPS += firewalld

## test-firewalld: the firewalld checks against a real firewalld in a network namespace (root).
test-firewalld: $(GOBIN_DIR)/staticcheck $(SKIPREPORT) | deps-firewalld
	$(GO) vet -tags firewalld ./firewalld/
	$(GOBIN_DIR)/staticcheck -tags firewalld ./firewalld/
	$(call go_test,test-firewalld,,-tags firewalld -count=1 -timeout 5m ./firewalld/,-v)
