#!/usr/bin/env bash
# make test-boot: prove dsr-agent survives a reboot, in a real Debian bookworm
# VM with systemd, under qemu (KVM when it works, else TCG).
#
#   test/boot/run.sh [DEB] [RPM]     (defaults: newest dist/*.deb, dist/*.rpm)
#
# Environment:
#   DSR_BOOT_SKIP=1         skip (prints why)
#   DSR_BOOT_REQUIRE=1      a skip is a failure (missing tools, no .deb, ...)
#   DSR_BOOT_ACCEL=auto     auto | kvm | tcg   (auto: probe KVM with a short timeout)
#   DSR_BOOT_MODES="loopback arptables"  modes to test, one VM run each
#   DSR_BOOT_MODE=MODE      test only this mode (loopback | arptables)
#   DSR_BOOT_TIMEOUT=900    hard limit for the whole VM run, seconds
#   DSR_BOOT_KEEP=1         keep the run directory (console log, markers) on success too
#   DSR_BOOT_CACHE=DIR      image cache (default $XDG_CACHE_HOME/dsr-agent-boot or
#                           /var/cache/dsr-agent-boot)
# Output: a summary of every check; the last line is "boot-test: N passed, N failed".
# Exit: 0 all passed (or skipped), 1 a check failed or the VM did not finish.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

BT_NAME=test-boot BT_KEEP_VAR=DSR_BOOT_KEEP
skip() { bt_skip "$@"; }
bt_vm_prereqs "$repo"

DEB=${1:-${DSR_BOOT_DEB:-$(ls -t "$repo"/dist/*.deb 2>/dev/null | head -n1 || true)}}
RPM=${2:-${DSR_BOOT_RPM:-$(ls -t "$repo"/dist/*.rpm 2>/dev/null | head -n1 || true)}}
[ -n "$DEB" ] && [ -f "$DEB" ] || skip "no .deb to test (run make deb, or pass DEB)"
TIMEOUT=${DSR_BOOT_TIMEOUT:-900}

# Several modes: one VM run each (same image), one summary line in the end.
if [ -z "${DSR_BOOT_MODE:-}" ]; then
	read -r -a modes <<<"${DSR_BOOT_MODES:-loopback arptables}"
	if [ "${#modes[@]}" -gt 1 ]; then
		image=$("$here/build-image.sh" | tail -n1) || bt_die "image build failed"
		probe=$(mktemp)
		DSR_BOOT_ACCEL=$(bt_accel "$image" "$probe")
		rm -f "$probe"
		export DSR_BOOT_ACCEL
		tp=0 tf=0 rc=0
		for m in "${modes[@]}"; do
			out=$(mktemp)
			DSR_BOOT_MODE=$m "$0" "$DEB" "$RPM" 2>&1 | tee "$out" || rc=1
			line=$(grep -E '^boot-test: [0-9]+ passed, [0-9]+ failed' "$out" | tail -n1)
			rm -f "$out"
			[ -n "$line" ] || { tf=$((tf + 1)); rc=1; continue; }
			p=${line#boot-test: }; p=${p%% *}
			f=${line#*passed, }; f=${f%% *}
			tp=$((tp + p)) tf=$((tf + f))
		done
		echo
		echo "== boot test, all modes (${modes[*]})"
		echo "boot-test: $tp passed, $tf failed"
		[ "$tf" = 0 ] && [ "$rc" = 0 ]
		exit
	fi
	DSR_BOOT_MODE=${modes[0]}
fi
MODE=$DSR_BOOT_MODE

# --- image, per-run directory, payload ------------------------------------------------
bt_vm_begin "$here"
cp "$here"/guest/* "$payload/"
cp "$DEB" "$payload/"
[ -n "$RPM" ] && [ -f "$RPM" ] && cp "$RPM" "$payload/"
VIP4=192.0.2.10 VIP6=2001:db8::10 OWN4=192.0.2.21 HPORT=8558
sed -e "s/@MODE@/$MODE/; s/@VIP4@/$VIP4/; s/@VIP6@/$VIP6/; s/@OWN4@/$OWN4/g; s/@HPORT@/$HPORT/g" \
	"$here/config.yaml.in" >"$payload/config.yaml"
cat >"$payload/params.env" <<PARAMS
MODE=$MODE
VIP4=$VIP4
VIP6=$VIP6
HEALTH_ADDR=$OWN4:$HPORT
DEB=$(basename "$DEB")
RPM=$([ -n "$RPM" ] && [ -f "$RPM" ] && basename "$RPM")
PARAMS
bt_vm_payload_disk

# --- accelerator -------------------------------------------------------------------
accel=$(bt_accel "$image" "$run/kvm-probe.log")

# --- boot ----------------------------------------------------------------------------
t_boot=$(date +%s)
bt_log "booting $(cat "$image/kernel-version") under $accel (mode $MODE, $(basename "$DEB")${RPM:+, $(basename "$RPM")})"
bt_qemu_start "$run" "$image" "$accel" "$TIMEOUT"
# Follow the phases as they come; the guest powers off after END.
bt_follow "$t_boot" 'PHASE|FAIL'
wait "$qpid" && qrc=0 || qrc=$?
qpid=""
t_end=$(date +%s)

# --- summary ------------------------------------------------------------------------------
bt_vm_markers
bt_vm_summary "boot test: dsr-agent $(basename "$DEB") in Debian bookworm ($(cat "$image/kernel-version"), $accel, mode $MODE)"
bt_vm_verdict ready-reboot1 status-reboot1 health-up arp-before-vip still-drained remove deb-files-gone
