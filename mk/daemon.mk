# Daemon and health (issues 4 and 9): /healthz vs nginx, RSS with 1,000 VIPs,
# and the Go benchmarks: drift repair latency, sysctl reset -> repaired
# latency, idle CPU, and legitimate /healthz and repair latency during a
# 20,000-connection flood from outside allowed_sources. Root (network
# namespaces), wrk and nginx. Medians: -count 3.
# haproxy (same list) is needed by make test: health's agent-check test.
TEST_DEPS += daemon
.PHONY: bench-daemon
bench-daemon: $(BIN)/dsr-agent | deps-daemon
	daemon/bench/healthz.sh $(BIN)/dsr-agent 10s | tee bench/daemon-last-run.txt
	$(GO) test -run '^$$' -bench DriftRepair -benchtime 200x -count 1 ./daemon/ | tee -a bench/daemon-last-run.txt
	$(GO) test -run '^$$' -bench SysctlRepair -benchtime 100x -count 3 ./daemon/ | tee -a bench/daemon-last-run.txt
	$(GO) test -run '^$$' -bench 'IdleCPU|Flood' -benchtime 1x -count 3 -timeout 30m ./daemon/ | tee -a bench/daemon-last-run.txt
