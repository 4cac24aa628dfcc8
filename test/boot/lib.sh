# Shared helpers for the boot test scripts (sourced, not executed).
# shellcheck shell=bash

bt_log() { printf '[boot-test] %s\n' "$*" >&2; }
bt_die() { printf '[boot-test] ERROR: %s\n' "$*" >&2; exit 1; }

# bt_cache_root: where images are cached. DSR_BOOT_CACHE wins, then
# $XDG_CACHE_HOME/dsr-agent-boot, then /var/cache/dsr-agent-boot.
bt_cache_root() {
	if [ -n "${DSR_BOOT_CACHE:-}" ]; then
		echo "$DSR_BOOT_CACHE"
	elif [ -n "${XDG_CACHE_HOME:-}" ]; then
		echo "$XDG_CACHE_HOME/dsr-agent-boot"
	else
		echo /var/cache/dsr-agent-boot
	fi
}

# bt_image_key: hash of everything that shapes the image, so a change to the
# build script invalidates the cache.
bt_image_key() {
	local dir
	dir=$(dirname "${BASH_SOURCE[0]}")
	sha256sum <"$dir/build-image.sh" | cut -c1-16
}

# bt_mirror: the Debian mirror apt uses on this machine (DSR_BOOT_MIRROR wins).
# Reads deb822 *.sources and one-line *.list files; picks the first "deb"
# entry whose suites include exactly "bookworm".
bt_mirror() {
	if [ -n "${DSR_BOOT_MIRROR:-}" ]; then
		echo "$DSR_BOOT_MIRROR"
		return
	fi
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk -v want="${DSR_BOOT_SUITE:-bookworm}" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uris != "") {
					split(uris, u, " "); print u[1]; found = 1; exit
				}
				types = ""; suites = ""; uris = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			/^Types:/  { sub(/^Types:[ \t]*/, ""); types = $0; next }
			/^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0; next }
			/^URIs:/   { sub(/^URIs:[ \t]*/, ""); uris = $0; next }
			/^deb[ \t]/ {
				i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
				if ($(i+1) == want) { print $i; found = 1; exit }
			}
			END { if (!found) flush() }
		' "$f" | head -n1 | grep . && return
	done
	return 1
}

# bt_accel IMAGE_DIR PROBE_LOG: "kvm" if KVM really boots a kernel here, else
# "tcg". DSR_BOOT_ACCEL=kvm|tcg skips the probe. /dev/kvm can exist and still
# hang qemu at boot, so the probe is a real (tiny) boot with a short timeout:
# a kernel with no root fs panics at once; with panic=-1 and -no-reboot qemu
# exits. With working KVM that takes ~1 s; TCG takes ~5 s.
bt_accel() {
	local want=${DSR_BOOT_ACCEL:-auto}
	case $want in
	kvm | tcg) echo "$want"; return ;;
	auto) ;;
	*) bt_die "DSR_BOOT_ACCEL must be auto, kvm or tcg (is $want)" ;;
	esac
	if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
		bt_log "/dev/kvm not usable: using TCG (software emulation)"
		echo tcg
		return
	fi
	if timeout -k 2 10 qemu-system-x86_64 -accel kvm -nodefaults -no-user-config -display none \
		-m 256 -serial "file:$2" -no-reboot -kernel "$1/vmlinuz" \
		-append 'console=ttyS0 panic=-1 root=/dev/nonexistent' >/dev/null 2>&1 &&
		grep -q 'Kernel panic' "$2"; then
		bt_log "KVM works: using KVM"
		echo kvm
	else
		bt_log "KVM probe did not boot a kernel in 10 s (/dev/kvm exists but qemu -accel kvm hangs here): using TCG (software emulation)"
		echo tcg
	fi
}

# bt_qemu_start RUN IMAGE ACCEL TIMEOUT: boot the image in the background with
# RUN/root.qcow2 (overlay) and RUN/payload.img (LABEL=BTPAYLOAD, read-only),
# BT_QEMU_MEM MiB of memory (default 1024), BT_QEMU_NIC the -nic argument
# (default none: no network; the fleet test forwards a loopback port to sshd);
# markers on the virtio port "boottest" -> RUN/markers.log, serial console ->
# RUN/console.log. Sets qpid. Used by test/boot and test/interop.
bt_qemu_start() {
	local run=$1 image=$2 accel=$3 timeout=$4
	# qemu64, not max: under TCG, "max" makes the guest pick AVX code paths that
	# are slow to emulate and load kvm modules; "host" aborts on these machines.
	: >"$run/markers.log"
	timeout -k 10 "$timeout" qemu-system-x86_64 \
		-accel "$accel" -cpu qemu64 -smp 2 -m "${BT_QEMU_MEM:-1024}" \
		-nodefaults -no-user-config -display none -monitor none \
		-serial "file:$run/console.log" \
		-kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
		-append "root=/dev/vda rw console=ttyS0 boottest=1 panic=-1 systemd.show_status=auto cryptomgr.notests modprobe.blacklist=pcspkr,floppy,kvm,kvm_intel,kvm_amd,joydev,serio_raw" \
		-drive "file=$run/root.qcow2,if=virtio,format=qcow2,cache=unsafe" \
		-drive "file=$run/payload.img,if=virtio,format=raw,readonly=on" \
		-device virtio-serial-pci \
		-chardev "file,id=bt,path=$run/markers.log" \
		-device virtserialport,chardev=bt,name=boottest \
		-device virtio-rng-pci \
		-nic "${BT_QEMU_NIC:-none}" \
		>"$run/qemu.out" 2>&1 &
	qpid=$!
}

# bt_follow T_BOOT KINDS: while qemu ($qpid) runs, print new marker lines of
# the given kinds (an egrep alternative, e.g. 'PHASE|FAIL') with the elapsed time.
bt_follow() {
	local t_boot=$1 kinds=$2 seen=0 n
	while kill -0 "$qpid" 2>/dev/null; do
		n=$(grep -c '^@@BT ' "$run/markers.log" || true)
		if [ "$n" -gt "$seen" ]; then
			grep '^@@BT ' "$run/markers.log" | tail -n "+$((seen + 1))" | head -n "$((n - seen))" |
				grep -E "^@@BT ($kinds)" | sed "s/^@@BT /  [$(( $(date +%s) - t_boot ))s] /" | cut -c1-200 || true
			seen=$n
		fi
		sleep 1
	done
}

# --- what every VM test runner shares ----------------------------------------------
# A runner sets BT_NAME (e.g. test-interop) and BT_KEEP_VAR (the env variable that
# keeps the run directory on success), then calls bt_vm_prereqs, bt_vm_begin,
# fills "$payload" and calls bt_vm_payload_disk.

# bt_skip MESSAGE: a test that cannot run here; with DSR_BOOT_REQUIRE=1 (CI) that is
# a failure.
bt_skip() {
	echo "$BT_NAME: SKIPPED: $*"
	if [ "${DSR_BOOT_REQUIRE:-0}" = 1 ]; then
		echo "$BT_NAME: DSR_BOOT_REQUIRE=1, so a skip is a failure"
		exit 1
	fi
	exit 0
}

# bt_vm_prereqs REPO: the platform and the tools (as root: make deps-boot).
bt_vm_prereqs() {
	local t
	: "${BT_NAME:?a VM test runner sets BT_NAME}" "${BT_KEEP_VAR:?a VM test runner sets BT_KEEP_VAR}"
	[ "${DSR_BOOT_SKIP:-0}" = 1 ] && bt_skip "DSR_BOOT_SKIP=1"
	[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || bt_skip "needs Linux x86_64 (this is $(uname -s)-$(uname -m))"
	[ "$(id -u)" = 0 ] || bt_skip "needs root (debootstrap builds the image)"
	for t in qemu-system-x86_64 qemu-img debootstrap mkfs.ext4 flock timeout; do
		command -v "$t" >/dev/null || bt_skip "$t not installed (as root: make deps-boot, or apt-get install $("$1/mk/install-deps.sh" --list boot | tr '\n' ' '))"
	done
}

# bt_vm_begin BOOT_DIR: the cached image, a run directory with the root overlay and
# a payload directory holding the guest scripts' shared lib.sh, and the cleanup that
# stops qemu and keeps the logs of a failed run. Sets t_start, image, t_image, run,
# payload and qpid.
bt_vm_begin() {
	# shellcheck disable=SC2034 # t_start, t_image: the caller's timings
	t_start=$(date +%s)
	image=$("$1/build-image.sh" | tail -n1) || bt_die "image build failed"
	# shellcheck disable=SC2034
	t_image=$(date +%s)
	run=$(mktemp -d "${TMPDIR:-/tmp}/dsr-${BT_NAME#test-}.XXXXXX")
	qpid=""
	trap bt_vm_cleanup EXIT
	trap 'exit 130' INT TERM
	qemu-img create -q -f qcow2 -F raw -b "$image/rootfs.img" "$run/root.qcow2"
	payload="$run/payload"
	mkdir -p "$payload"
	cp "$1/guest/lib.sh" "$payload/lib.sh"
}

bt_vm_cleanup() {
	local rc=$?
	if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
		kill "$qpid" 2>/dev/null || true
		sleep 1
		kill -9 "$qpid" 2>/dev/null || true
	fi
	if [ "$rc" = 0 ] && [ "${!BT_KEEP_VAR:-0}" != 1 ]; then
		rm -rf "$run"
	else
		echo "$BT_NAME: logs kept in $run (console.log, markers.log)"
	fi
}

# bt_vm_payload_disk: the payload directory as the ext4 disk the guest's runner reads.
bt_vm_payload_disk() {
	local size_mb
	size_mb=$(( $(du -sm "$payload" | cut -f1) + 32 ))
	mkfs.ext4 -q -L BTPAYLOAD -E root_owner=0:0 -d "$payload" "$run/payload.img" "${size_mb}M" >/dev/null 2>&1
}

# bt_vm_markers: the guest's check lines (the virtio port's log, or the console
# when the guest had no port). Sets markers, npass, nfail and nskip.
# shellcheck disable=SC2034 # npass, nfail, nskip: for the caller
bt_vm_markers() {
	markers="$run/markers.log"
	if ! grep -q '^@@BT ' "$markers"; then
		grep -ao '@@BT .*' "$run/console.log" | tr -d '\r' >"$run/markers-console.log" || true
		markers="$run/markers-console.log"
	fi
	npass=$(grep -c '^@@BT PASS ' "$markers" || true)
	nfail=$(grep -c '^@@BT FAIL ' "$markers" || true)
	nskip=$(grep -c '^@@BT SKIP ' "$markers" || true)
}

# bt_vm_summary TITLE [NOTES_RE]: one line per check, the metrics, the guest's INFO
# lines matching NOTES_RE, and the timings (t_start, t_image, t_boot, t_end).
bt_vm_summary() {
	local cold=cached
	[ "$((t_image - t_start))" -gt 30 ] && cold="cold build"
	echo
	echo "== $1"
	awk '/^@@BT (PASS|FAIL|SKIP) / {
		k = ($2 == "PASS") ? "ok" : ($2 == "FAIL") ? "not ok" : "skip"; n = $3
		sub(/^@@BT [A-Z]+ [^ ]+ ?/, ""); printf "%-6s %d - %-30s %s\n", k, ++i, n, $0 }' "$markers" | cut -c1-300
	echo "-- metrics"
	awk '/^@@BT METRIC / { printf "  %-44s %s\n", $3, $4 }' "$markers"
	if [ -n "${2:-}" ]; then
		echo "-- notes"
		grep '^@@BT INFO ' "$markers" | cut -c11-250 | grep -E "$2" | sed 's/^/  /' || true
	fi
	echo "-- times: image $((t_image - t_start)) s ($cold), VM run $((t_end - t_boot)) s, total $((t_end - t_start)) s"
}

# bt_vm_verdict CHECK...: the last line ("NAME: N passed, N failed, N skipped") and
# the exit status. A failure is a failed check, qemu's own failure (qrc), a guest
# that never reached its end, or a named CHECK that never ran: a check that
# silently did not run is a failure.
bt_vm_verdict() {
	local problems=() want p label=${BT_NAME#test-}-test
	[ "$qrc" = 0 ] || problems+=("qemu exited $qrc$([ "$qrc" = 124 ] && echo " (timeout ${TIMEOUT}s)")")
	grep -q '^@@BT END' "$markers" || problems+=("the guest never reached the end")
	for want in "$@"; do
		grep -Eq "^@@BT (PASS|FAIL) $want( |$)" "$markers" || problems+=("check $want never ran")
	done
	if [ "$nfail" != 0 ] || [ "${#problems[@]}" != 0 ]; then
		for p in "${problems[@]}"; do echo "  PROBLEM: $p"; done
		echo "-- guest INFO lines"
		grep '^@@BT INFO ' "$markers" | cut -c11-250 | tail -n 80
		echo "-- last 40 console lines"
		tail -n 40 "$run/console.log" | tr -d '\r' | cut -c1-200
		echo "$label: $npass passed, $((nfail + ${#problems[@]})) failed, $nskip skipped"
		exit 1
	fi
	echo "$label: $npass passed, 0 failed, $nskip skipped"
}
