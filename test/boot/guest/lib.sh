# shellcheck shell=bash
# What every VM test's guest script (phases.sh on the payload disk) shares:
# the wait for the virtio port, and the markers the host's runner reads:
# "@@BT KIND name detail" on the port "boottest" and the console, and
# appended to $BT_MARKERS_LOG when the script sets it. bt_vm_begin (and the
# boot test's run.sh) put this file on the payload disk; a guest script
# sources it as `. "$P/lib.sh"` and then defines what it does differently
# (the boot test: check, infofile, finish; netmgr: finish).
PORT=/dev/virtio-ports/boottest
for _ in $(seq 50); do [ -e "$PORT" ] && break; sleep 0.1; done

emit() {
	local line="@@BT $*"
	if [ -e "$PORT" ]; then printf '%s\n' "$line" >"$PORT"; fi
	printf '%s\n' "$line" >/dev/console
	if [ -n "${BT_MARKERS_LOG:-}" ]; then printf '%s\n' "$line" >>"$BT_MARKERS_LOG"; fi
}
pass() { emit PASS "$1" "${*:2}"; }
fail() { emit FAIL "$1" "${*:2}"; }
skip() { emit SKIP "$1" "${*:2}"; }
info() { emit INFO "$*"; }
metric() { emit METRIC "$1" "$2"; }
ok() { # ok NAME DETAIL COND...: pass if the command succeeds, else fail with its output
	local name=$1 detail=$2
	shift 2
	local out
	if out=$("$@" 2>&1); then pass "$name" "$detail${out:+ ($(echo "$out" | tr '\n' ' ' | cut -c1-200))}"
	else fail "$name" "$detail: $(echo "$out" | tr '\n' ' ' | cut -c1-300)"; return 1; fi
}
infofile() { tail -n "${2:-30}" "$1" 2>/dev/null | while IFS= read -r l; do info "$(basename "$1"): $l"; done; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
finish() {
	emit END
	sync
	systemctl --no-block poweroff
	exit 0
}
