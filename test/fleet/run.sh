#!/usr/bin/env bash
# make test-fleet: the Ansible role of deploy/ansible, run by Debian's
# ansible-playbook over SSH against two real systemd hosts with the real
# package, behind the real keepalived/IPVS director, a client sending
# requests through the VIP; in one boot of the boot test's cached VM image.
#
#   test/fleet/run.sh [DEB]      (default: the newest dist/*.deb)
#
# Before the VM: ansible-lint (Debian's, production profile) on deploy/ansible.
# Inside the VM (guest/fleet.sh): the hosts are systemd-nspawn containers booted
# with systemd, each in its own network namespace on a bridge with the
# director's and the client's; the checks are listed in docs/fleet.md.
#
# Environment (the boot test's, shared):
#   DSR_BOOT_SKIP=1 / DSR_BOOT_REQUIRE=1   skip / make a skip a failure (CI)
#   DSR_BOOT_ACCEL=auto|kvm|tcg            DSR_BOOT_CACHE=DIR (image cache)
#   DSR_FLEET_TIMEOUT=1200                 hard limit for the VM run, seconds
#   DSR_FLEET_KEEP=1                       keep the run directory on success too
# Output: one line per check ("ok"/"not ok"/"skip"); the last line is
# "fleet-test: N passed, N failed, N skipped". Exit 0 all passed, 1 otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
boot="$repo/test/boot"
# shellcheck source=../boot/lib.sh
. "$boot/lib.sh"

BT_NAME=test-fleet BT_KEEP_VAR=DSR_FLEET_KEEP
skip() { bt_skip "$@"; }
bt_vm_prereqs "$repo"
command -v ansible-lint >/dev/null || skip "ansible-lint not installed (as root: make deps-fleet)"
DEB=${1:-$(ls -t "$repo"/dist/*.deb 2>/dev/null | head -n1 || true)}
[ -n "$DEB" ] && [ -f "$DEB" ] || skip "no .deb to test (run make deb, or pass DEB)"
TIMEOUT=${DSR_FLEET_TIMEOUT:-1200}

bt_vm_begin "$boot"
# ansible-lint on the host (no VM needed); its verdict joins the guest's checks.
t_lint=$(date +%s)
if (cd "$repo/deploy/ansible" && ANSIBLE_NOCOLOR=1 NO_COLOR=1 ansible-lint --nocolor --offline >"$run/ansible-lint.log" 2>&1); then
	lint="@@BT PASS ansible-lint $(ansible-lint --version 2>/dev/null | head -n1 | sed 's/ using.*//'): deploy/ansible clean, production profile ($(( $(date +%s) - t_lint )) s)"
else
	lint="@@BT FAIL ansible-lint deploy/ansible: $(grep -E '^[a-z-]+\[|:[0-9]+' "$run/ansible-lint.log" | head -n 5 | tr '\n' ' ')"
	sed 's/^/  ansible-lint: /' "$run/ansible-lint.log" | tail -n 30
fi

cp "$here/guest/fleet.sh" "$payload/phases.sh"
cp "$here/client.py" "$DEB" "$payload/"
mkdir -p "$payload/deploy" "$payload/test"
cp -r "$repo/deploy/ansible/." "$payload/deploy/"
cp -r "$here/ansible/." "$payload/test/"
bt_vm_payload_disk

accel=$(bt_accel "$image" "$run/kvm-probe.log")
t_boot=$(date +%s)
bt_log "booting $(cat "$image/kernel-version") under $accel: keepalived + IPVS director, 2 systemd-nspawn hosts, ansible-playbook over SSH"
# The two containers' systemd, sshd, dsr-agent and the controller's Python.
BT_QEMU_MEM=2048 bt_qemu_start "$run" "$image" "$accel" "$TIMEOUT"
bt_follow "$t_boot" 'PASS|FAIL|SKIP'
wait "$qpid" && qrc=0 || qrc=$?
qpid=""
t_end=$(date +%s)

echo "$lint" >>"$run/markers.log"
bt_vm_markers
grep -q '^@@BT .* ansible-lint ' "$markers" || echo "$lint" >>"$markers"
npass=$(grep -c '^@@BT PASS ' "$markers" || true)
nfail=$(grep -c '^@@BT FAIL ' "$markers" || true)
bt_vm_summary "fleet test: ansible-playbook over SSH -> 2 systemd-nspawn hosts (dsr-agent .deb) behind keepalived/IPVS, in Debian bookworm ($(cat "$image/kernel-version"), $accel)" '^(ansible-playbook|bad VIP|rs1 validate)'
bt_vm_verdict ansible-lint topology containers web-service converge-first host-rs1 host-rs2 ipvs-both converge-idempotent \
	rolling-drained rolling-both-back control-no-drain nodrain-both-back badvip-stops badvip-old-config badvip-in-rotation dropin-one-host
