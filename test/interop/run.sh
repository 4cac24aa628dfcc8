#!/usr/bin/env bash
# make test-interop: dsr-agent behind the seed's own director -- the real
# keepalived programming the kernel's IPVS (lb_kind DR) -- in one boot of the
# boot test's cached Debian VM (this host's kernel has no ip_vs; Debian's has).
#
#   test/interop/run.sh [DSR_AGENT_BINARY]     (default: bin/dsr-agent)
#
# Inside the VM, network namespaces: a client, a director running keepalived
# with HTTP_GET checks on each real server's dsr-agent /healthz, and two real
# servers kept by `dsr-agent run`. The checks are in guest/interop.sh and
# docs/interop.md.
#
# Environment (the boot test's, shared):
#   DSR_BOOT_SKIP=1 / DSR_BOOT_REQUIRE=1   skip / make a skip a failure (CI)
#   DSR_BOOT_ACCEL=auto|kvm|tcg            DSR_BOOT_CACHE=DIR (image cache)
#   DSR_INTEROP_TIMEOUT=900                hard limit for the VM run, seconds
#   DSR_INTEROP_KEEP=1                     keep the run directory on success too
# Output: one line per check ("ok"/"not ok"/"skip"); the last line is
# "interop-test: N passed, N failed". Exit 0 all passed, 1 otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
boot="$repo/test/boot"
# shellcheck source=../boot/lib.sh
. "$boot/lib.sh"

BT_NAME=test-interop BT_KEEP_VAR=DSR_INTEROP_KEEP
skip() { bt_skip "$@"; }
bt_vm_prereqs "$repo"
AGENT=${1:-$repo/bin/dsr-agent}
[ -x "$AGENT" ] || skip "no dsr-agent binary at $AGENT (run make build)"
TIMEOUT=${DSR_INTEROP_TIMEOUT:-900}

bt_vm_begin "$boot"
cp "$here/guest/interop.sh" "$payload/phases.sh"
cp "$AGENT" "$payload/dsr-agent"
bt_vm_payload_disk

accel=$(bt_accel "$image" "$run/kvm-probe.log")
t_boot=$(date +%s)
bt_log "booting $(cat "$image/kernel-version") under $accel: keepalived + IPVS director, 2 dsr-agent real servers"
bt_qemu_start "$run" "$image" "$accel" "$TIMEOUT"
bt_follow "$t_boot" 'PASS|FAIL|SKIP'
wait "$qpid" && qrc=0 || qrc=$?
qpid=""
t_end=$(date +%s)

bt_vm_markers
bt_vm_summary "interop test: keepalived/IPVS (lb_kind DR) + dsr-agent in Debian bookworm ($(cat "$image/kernel-version"), $accel)" '^(dsr-agent |Keepalived|inhibit_on_failure:|default \(removal\)|MACs:|rs2.s VIP|probe-view)'
bt_vm_verdict topology no-agent-no-rotation ipvs-both vip-reaches-both arp-only-director neigh-director \
	vip-repaired vip-repair-unnoticed drain-out undrain-back graceful-established graceful-new-elsewhere \
	agent-stopped control-removal-cuts \
	probe-l2-up probe-l2-real-ip-only probe-l2-reject probe-l2-drop probe-l2-vip-deleted probe-l2-arp-flux \
	probe-keepalived-up probe-keepalived-fault probe-keepalived-back
