# Fuzzing (issue 9): config and state parsing. A short run in `make test`;
# a crasher is written by `go test` to agent/testdata/fuzz/<Target>/ — commit
# it, and it runs as a regular test case from then on.
#   make test-fuzz FUZZTIME=10m   for a longer run
FUZZTIME ?= 10s
.PHONY: test-fuzz
TEST_TARGETS += test-fuzz

## test-fuzz: FuzzParseConfig and FuzzParseState for FUZZTIME each.
test-fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) ./agent/
	$(GO) test -run '^$$' -fuzz '^FuzzParseState$$' -fuzztime $(FUZZTIME) ./agent/
