# Boot test (issue 6): the real package in a Debian bookworm VM under qemu,
# across reboots. Included by the top Makefile. Not in TEST_TARGETS: .ci/run
# calls `make test-boot` itself. Apt packages: mk/boot.packages (installed
# by the deps-boot prerequisite).
#   make test-boot            build/reuse the cached image, boot, check, summary
#   make test-boot-image      only build (or reuse) the cached image
#   make test-boot-clean      drop the cached image
.PHONY: test-boot test-boot-image test-boot-clean

## test-boot: install the .deb (and .rpm) in a VM, reboot twice, check (root, qemu).
test-boot: $(if $(wildcard mk/packaging.mk),deb rpm) | deps-boot
	test/boot/run.sh

test-boot-image: | deps-boot
	test/boot/build-image.sh

test-boot-clean:
	. test/boot/lib.sh && rm -rf --one-file-system "$$(bt_cache_root)"
