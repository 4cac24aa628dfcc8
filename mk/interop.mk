# Interop (issue 12): dsr-agent behind the real keepalived/IPVS director
# (lb_kind DR), in one boot of the boot test's cached VM image. Not in
# TEST_TARGETS: .ci/run calls `make test-interop` after `make test-boot`.
# Host packages: mk/boot.packages (qemu, debootstrap); the guest's keepalived,
# ipvsadm, arping and busybox are in the image (test/boot/build-image.sh).
#   make test-interop     build, reuse/build the image, boot, check, summary
.PHONY: test-interop

## test-interop: keepalived + IPVS (DR) in front of two `dsr-agent run` servers, in a VM (root, qemu).
test-interop: build | deps-boot
	test/interop/run.sh $(BIN)/dsr-agent
