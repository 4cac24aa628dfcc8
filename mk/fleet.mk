# Fleet (issue 18): the Ansible role in deploy/ansible, proven by Debian's
# ansible-playbook over SSH against two real systemd hosts (systemd-nspawn
# containers, the real .deb) behind the real keepalived/IPVS director, in one
# boot of the boot test's cached VM image. Not in TEST_TARGETS, like
# test-interop: .ci/run calls `make test-fleet`. Host packages:
# mk/boot.packages (qemu, debootstrap) and mk/fleet.packages (ansible-lint).
#   make test-fleet          lint, build the .deb, reuse/build the image, boot, check
#   make lint-ansible        only ansible-lint on deploy/ansible
.PHONY: test-fleet lint-ansible

## test-fleet: ansible-lint; the role converges, rolls (drain) and refuses bad configs on 2 hosts behind keepalived, in a VM (root, qemu).
test-fleet: deb | deps-boot deps-fleet
	test/fleet/run.sh

## lint-ansible: ansible-lint (production profile) on the role and playbooks.
lint-ansible: | deps-fleet
	cd deploy/ansible && ansible-lint --offline
