# Monitoring (issue 18 point 4): the Prometheus rules and Grafana dashboard in
# deploy/, installed by the packages under /usr/share/dsr-agent/. Included by
# the top Makefile.
#   make test-prom   promtool check/test rules, then go test ./deploy/: every
#                    alert has a firing and a silent case and a docs/alerts.md
#                    section, the dashboard's queries parse, and the real
#                    daemon's /metrics (bin/dsr-agent run in a throwaway
#                    network namespace; root) passes promtool check metrics and
#                    has every metric name the rules and the dashboard use.
# go test ./... (test-root) runs the same Go tests with a binary of its own.
PROM_RULES := deploy/prometheus/dsr-agent.rules.yml

.PHONY: test-prom
TEST_TARGETS += test-prom
TEST_DEPS += prom

## test-prom: the alerting rules and dashboard against promtool and the live daemon (root).
test-prom: $(BIN)/dsr-agent $(SKIPREPORT)
	promtool check rules $(PROM_RULES)
	promtool test rules $(PROM_RULES:.yml=.test.yml)
	$(call go_test,test-prom,DSR_AGENT_BIN=$(CURDIR)/$(BIN)/dsr-agent,-count=1 ./deploy/)
