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
#   DSR_FLEET_TIMEOUT=1800                 hard limit for the VM run, seconds
#   DSR_FLEET_KEEP=1                       keep the run directory on success too
#   DSR_FLEET_GUEST=FILE                   run FILE in the VM instead of guest/fleet.sh (debugging)
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
for t in ansible-lint ansible-playbook ssh ssh-keygen python3; do
	command -v "$t" >/dev/null || skip "$t not installed (as root: make deps-fleet)"
done
DEB=${1:-$(ls -t "$repo"/dist/*.deb 2>/dev/null | head -n1 || true)}
[ -n "$DEB" ] && [ -f "$DEB" ] || skip "no .deb to test (run make deb, or pass DEB)"
TIMEOUT=${DSR_FLEET_TIMEOUT:-1800}

bt_vm_begin "$boot"
# ansible-lint on the host (no VM needed); its verdict joins the guest's checks.
t_lint=$(date +%s)
if (cd "$repo/deploy/ansible" && ANSIBLE_NOCOLOR=1 NO_COLOR=1 ansible-lint --nocolor --offline >"$run/ansible-lint.log" 2>&1); then
	lint="@@BT PASS ansible-lint $(NO_COLOR=1 ansible-lint --nocolor --version 2>/dev/null | head -n1 | sed 's/ using.*//'): deploy/ansible clean, production profile ($(( $(date +%s) - t_lint )) s)"
else
	lint="@@BT FAIL ansible-lint deploy/ansible: $(grep -E '^[a-z-]+\[|:[0-9]+' "$run/ansible-lint.log" | head -n 5 | tr '\n' ' ')"
	sed 's/^/  ansible-lint: /' "$run/ansible-lint.log" | tail -n 30
fi

cp "${DSR_FLEET_GUEST:-$here/guest/fleet.sh}" "$payload/phases.sh"
cp "$here/guest/fleetctl" "$here/client.py" "$payload/"
# The controller's SSH: a key for this run, the VM's sshd on a loopback port
# qemu forwards (user network, restrict=on: the VM reaches nothing else), and
# rs1/rs2 through it (ProxyJump); one kept master connection per host.
mkdir -m 0700 "$run/ssh"
ssh-keygen -q -t ed25519 -N '' -C fleet-test -f "$run/ssh/id"
cp "$run/ssh/id.pub" "$payload/id_ed25519.pub"
SSHPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SSHCFG=$run/ssh/config
cat >"$SSHCFG" <<EOF
Host fleet-vm
	HostName 127.0.0.1
	Port $SSHPORT
Host rs1
	HostName 10.88.0.21
Host rs2
	HostName 10.88.0.22
Host rs1 rs2 10.88.0.*
	ProxyJump fleet-vm
Host *
	User root
	IdentityFile $run/ssh/id
	IdentitiesOnly yes
	BatchMode yes
	StrictHostKeyChecking no
	UserKnownHostsFile /dev/null
	LogLevel ERROR
	ControlMaster auto
	ControlPath $run/ssh/cm-%C
	ControlPersist 1800
	ConnectTimeout 120
	ServerAliveInterval 15
EOF
bt_vm_payload_disk

accel=$(bt_accel "$image" "$run/kvm-probe.log")
t_boot=$(date +%s)
bt_log "booting $(cat "$image/kernel-version") under $accel: keepalived + IPVS director, 2 systemd-nspawn hosts; ansible-playbook here, over SSH (127.0.0.1:$SSHPORT)"
# 2 GiB: the two containers' systemd, sshd and dsr-agent besides the lab.
BT_QEMU_MEM=2048 BT_QEMU_NIC="user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:$SSHPORT-10.0.2.15:22" \
	bt_qemu_start "$run" "$image" "$accel" "$TIMEOUT"
# The guest's lab checks as they come, until it says READY (or ends).
seen=0 ready=0
while kill -0 "$qpid" 2>/dev/null; do
	n=$(grep -c '^@@BT ' "$run/markers.log" || true)
	if [ "$n" -gt "$seen" ]; then
		tail -n "+$((seen + 1))" "$run/markers.log" | head -n "$((n - seen))" | grep -E '^@@BT (PASS|FAIL|SKIP)' |
			sed "s/^@@BT /  [$(( $(date +%s) - t_boot ))s] /" | cut -c1-200 || true
		seen=$n
	fi
	grep -q '^@@BT READY' "$run/markers.log" && { ready=1; break; }
	grep -q '^@@BT END' "$run/markers.log" && break
	sleep 1
done
if [ "$ready" = 1 ]; then
	t_ready=$(date +%s)
	set +e # the checks look at every exit status themselves
	# shellcheck source=checks.sh
	. "$here/checks.sh"
	set -e
	bt_log "checks done in $(( $(date +%s) - t_ready )) s; stopping the VM"
	g touch /run/fleet-done || kill "$qpid" 2>/dev/null
fi
wait "$qpid" && qrc=0 || qrc=$?
qpid=""
t_end=$(date +%s)
for cm in "$run"/ssh/cm-*; do [ -S "$cm" ] && ssh -S "$cm" -O exit x >/dev/null 2>&1; done

# One marker file: the guest's, the host's checks, ansible-lint's verdict.
cat "$run/host-markers.log" 2>/dev/null >>"$run/markers.log"
echo "$lint" >>"$run/markers.log"
bt_vm_markers
grep -q '^@@BT .* ansible-lint ' "$markers" || echo "$lint" >>"$markers"
npass=$(grep -c '^@@BT PASS ' "$markers" || true)
nfail=$(grep -c '^@@BT FAIL ' "$markers" || true)
bt_vm_summary "fleet test: ansible-playbook over SSH -> 2 systemd-nspawn hosts (dsr-agent .deb) behind keepalived/IPVS, in Debian bookworm ($(cat "$image/kernel-version"), $accel)" '^(ansible-playbook|bad VIP|rs1 validate)'
bt_vm_verdict ansible-lint topology ssh containers web-service converge-first host-rs1 host-rs2 ipvs-both converge-idempotent \
	rolling-drained rolling-both-back control-no-drain nodrain-both-back badvip-stops badvip-old-config badvip-in-rotation dropin-one-host
