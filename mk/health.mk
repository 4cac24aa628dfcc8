# Health checks (issue 11 part 4): the tls, dns and exec checks are proven
# against Debian's nginx, unbound and redis in throwaway network namespaces by
# health/daemons_test.go, which runs in test-root (`go test ./...`, root), so
# make test installs mk/health.packages first.
TEST_DEPS += health
