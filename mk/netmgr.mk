# Network managers (issue 12, part 4): NetworkManager 1.42 and systemd-networkd
# reconfiguring lb0 and lo while `dsr-agent run` (the .deb's unit) keeps the
# host converged, in one boot of the boot test's cached VM image. Measures the
# longest VIP gap and any ARP-suppression lapse per action (docs/netmgr.md).
# Not in TEST_TARGETS (a VM run: 6-8 min under TCG with a cached image). Host packages:
# mk/boot.packages (deps-boot); NetworkManager is in the image, masked.
#   make test-netmgr      deb, reuse/build the image, boot, measure, summary
.PHONY: test-netmgr

## test-netmgr: NetworkManager/networkd vs dsr-agent run, VIP gaps per action, in a VM (root, qemu).
test-netmgr: $(if $(wildcard mk/packaging.mk),deb) | deps-boot
	test/netmgr/run.sh
