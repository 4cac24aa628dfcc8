# Daemon and health (issue 4): /healthz vs nginx, RSS with 1,000 VIPs, and the
# drift repair latency Go benchmark. Root (network namespaces), wrk and nginx.
# haproxy (same list) is needed by make test: health's agent-check test.
TEST_DEPS += daemon
.PHONY: bench-daemon
bench-daemon: $(BIN)/dsr-agent | deps-daemon
	daemon/bench/healthz.sh $(BIN)/dsr-agent 10s | tee bench/daemon-last-run.txt
	$(GO) test -run '^$$' -bench DriftRepair -benchtime 200x -count 1 ./daemon/ | tee -a bench/daemon-last-run.txt
