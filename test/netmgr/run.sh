#!/usr/bin/env bash
# make test-netmgr: NetworkManager and systemd-networkd reconfiguring the links
# dsr-agent uses, while `dsr-agent run` keeps the host converged -- in one boot
# of the boot test's cached Debian VM (NetworkManager 1.42, systemd 252).
#
#   test/netmgr/run.sh [DEB]     (default: the newest dist/*.deb, from make deb)
#
# The guest side (guest/netmgr.sh) installs the .deb, lets each network manager
# in turn manage the LB-facing veth lb0 (and lo), runs their reconfiguring
# actions, and measures per action the longest time the VIP was missing and any
# lapse of ARP suppression while it was present. docs/netmgr.md has the checks.
#
# Environment (the boot test's, shared):
#   DSR_BOOT_SKIP=1 / DSR_BOOT_REQUIRE=1   skip / make a skip a failure (CI)
#   DSR_BOOT_ACCEL=auto|kvm|tcg            DSR_BOOT_CACHE=DIR (image cache)
#   DSR_NETMGR_TIMEOUT=1200                hard limit for the VM run, seconds
#   DSR_NETMGR_KEEP=1                      keep the run directory on success too
# Output: one "ok"/"not ok" line per check, the gaps per action, and last
# "netmgr-test: N passed, N failed". Exit 0 all passed, 1 otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
boot="$repo/test/boot"
# shellcheck source=../boot/lib.sh
. "$boot/lib.sh"

BT_NAME=test-netmgr BT_KEEP_VAR=DSR_NETMGR_KEEP
skip() { bt_skip "$@"; }
bt_vm_prereqs "$repo"
DEB=${1:-${DSR_BOOT_DEB:-$(ls -t "$repo"/dist/*.deb 2>/dev/null | head -n1 || true)}}
[ -n "$DEB" ] && [ -f "$DEB" ] || skip "no .deb to test (run make deb, or pass DEB)"
TIMEOUT=${DSR_NETMGR_TIMEOUT:-1200}

bt_vm_begin "$boot"
cp "$here/guest/netmgr.sh" "$payload/phases.sh"
cp "$DEB" "$payload/dsr-agent.deb"
bt_vm_payload_disk

accel=$(bt_accel "$image" "$run/kvm-probe.log")
t_boot=$(date +%s)
bt_log "booting $(cat "$image/kernel-version") under $accel: NetworkManager, then systemd-networkd, vs dsr-agent run ($(basename "$DEB"))"
bt_qemu_start "$run" "$image" "$accel" "$TIMEOUT"
bt_follow "$t_boot" 'PASS|FAIL'
wait "$qpid" && qrc=0 || qrc=$?
qpid=""
t_end=$(date +%s)

bt_vm_markers
bt_vm_summary "network managers vs dsr-agent run, Debian bookworm ($(cat "$image/kernel-version"), $accel)" '^(dsr-agent |NetworkManager |networkd: |sysctl sampler)'
bt_vm_verdict calibrate-loopback calibrate-arptables nm-lb0-con-up nm-lb0-reapply nm-lb0-bounce nm-restart \
	nm-lo-con-up nm-lo-reapply nm-lo-restart nm-lo-control-agent-stopped \
	nm-arp-lb0-con-up nm-arp-lb0-reapply nm-arp-lb0-bounce nm-arp-restart nm-arp-control-agent-stopped \
	nd-arp-reconfigure nd-arp-reload nd-arp-restart nd-arp-bounce nd-arp-control-agent-stopped \
	nd-lo-reconfigure nd-lb0-reconfigure nd-reload nd-restart nd-lb0-bounce nd-lo-agent-stopped \
	nd-keep-lo-reconfigure nd-keep-restart nd-keep-lo-agent-stopped nd-keep-restart-agent-stopped \
	nd-keep-arp-reconfigure nd-keep-arp-agent-stopped remove
