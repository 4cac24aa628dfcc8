# Tunnel (issue 13, L3 DSR): the tunnel package's kernel tests and IPVS TUN
# (IPIP, GUE) across a router to `dsr-agent run` servers, in one boot of the
# boot test's cached VM image (this host's kernel has no ipip/fou/ip_vs).
# Not in TEST_TARGETS, like test-interop. Host packages: mk/boot.packages.
#   make test-tunnel                       agent does the tunnel part (mode: tunnel)
#   make test-tunnel DSR_TUNNEL_MANUAL=1   tunnel part by hand, agent in loopback mode
.PHONY: test-tunnel

## test-tunnel: L3 DSR (IPIP, GUE) behind IPVS TUN across a router, in a VM (root, qemu).
test-tunnel: build | deps-boot
	test/tunnel/run.sh $(BIN)/dsr-agent
