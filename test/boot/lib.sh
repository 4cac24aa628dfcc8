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
# RUN/root.qcow2 (overlay) and RUN/payload.img (LABEL=BTPAYLOAD, read-only);
# markers on the virtio port "boottest" -> RUN/markers.log, serial console ->
# RUN/console.log. Sets qpid. Used by test/boot and test/interop.
bt_qemu_start() {
	local run=$1 image=$2 accel=$3 timeout=$4
	# qemu64, not max: under TCG, "max" makes the guest pick AVX code paths that
	# are slow to emulate and load kvm modules; "host" aborts on these machines.
	: >"$run/markers.log"
	timeout -k 10 "$timeout" qemu-system-x86_64 \
		-accel "$accel" -cpu qemu64 -smp 2 -m 1024 \
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
		-nic none \
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
