# Crash consistency (issue 9, point 10): 2,000 VIPs, SIGKILL at seeded random
# points of apply (loopback, arptables), of a mode switch, of a VIP change, of
# remove and of the daemon's start; after
# each kill the kernel itself is checked (no VIP without ARP suppression in
# force), then apply must converge and remove restore the host exactly.
#   make test-crash                          (root) ~1 min on 2 idle cores
#   DSR_CRASH_SEED=N make test-crash         replay the seed a failure printed
#   DSR_CRASH_KILLS=N make test-crash        kills per scenario (default 20)
# Built with the `crash` tag only (like test-e2e), so test-unit/test-root do
# not run it twice; `make lint` does not see tagged files, so vet and
# staticcheck run here with the tag.
.PHONY: test-crash
TEST_TARGETS += test-crash

test-crash: build $(GOBIN_DIR)/staticcheck $(SKIPREPORT)
	$(GO) vet -tags crash ./test/crash/
	$(GOBIN_DIR)/staticcheck -tags crash ./test/crash/
	$(call go_test,test-crash,DSR_AGENT_BIN=$(CURDIR)/$(BIN)/dsr-agent,-tags crash -count=1 -timeout 10m ./test/crash/,-v)
