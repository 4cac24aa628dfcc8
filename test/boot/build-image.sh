#!/usr/bin/env bash
# Build (or reuse) the cached Debian bookworm VM image for `make test-boot`.
#
#   test/boot/build-image.sh        -> prints the image directory on stdout
#
# The image directory holds rootfs.img (raw ext4, no partition table),
# vmlinuz and initrd.img. It is keyed by a hash of this script, so editing
# the script rebuilds it; unchanged, reruns take no time. No loop mounts:
# debootstrap into a folder, then `mkfs.ext4 -d`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

SUITE=${DSR_BOOT_SUITE:-bookworm}
IMAGE_SIZE=${DSR_BOOT_IMAGE_SIZE:-2G}
# What the guest needs: systemd as init, udev, the tools dsr-agent and the
# checks use (ip, nft, sysctl, curl), a kernel with its initramfs, and
# Debian's rpm to show the RPM installs too. No network stack beyond that.
# For the interop lab (test/interop, `make test-interop`): the real director
# (keepalived, ipvsadm; the Debian kernel has ip_vs), iputils' arping, and
# busybox for a tiny httpd and a `nc -ll -e` line server on the real servers.
INCLUDE=systemd-sysv,udev,dbus,iproute2,nftables,kmod,procps,curl,rpm,linux-image-amd64,initramfs-tools,zstd,ca-certificates
INCLUDE=$INCLUDE,keepalived,ipvsadm,iputils-arping,busybox
# For the network-manager test (test/netmgr, `make test-netmgr`): NetworkManager
# (bookworm: 1.42.4, the first that manages `lo`). systemd-networkd is part of
# the systemd package already. Both stay masked below; the test unmasks them.
# libpam-systemd: provides logind, which polkitd (a dependency of
# network-manager) needs; debootstrap does not resolve that virtual package.
INCLUDE=$INCLUDE,network-manager,libpam-systemd
# For the fleet test (test/fleet, `make test-fleet`): the real servers are
# systemd-nspawn containers booted with systemd (systemd-container) on an
# overlay of this root, reached over SSH by the host's ansible-playbook; they
# need Python, and python3-apt for the apt module.
INCLUDE=$INCLUDE,systemd-container,openssh-server,python3,python3-apt

[ "$(id -u)" = 0 ] || bt_die "building the image needs root (debootstrap)"
command -v debootstrap >/dev/null || bt_die "debootstrap not installed (apt-get install debootstrap)"
command -v mkfs.ext4 >/dev/null || bt_die "mkfs.ext4 not installed (apt-get install e2fsprogs)"

cache=$(bt_cache_root)
key=$(bt_image_key)
out="$cache/$SUITE-$key"
if [ -f "$out/done" ]; then
	bt_log "image cached: $out"
	echo "$out"
	exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 1800 9 || bt_die "timed out waiting for another image build ($cache/.lock)"
if [ -f "$out/done" ]; then echo "$out"; exit 0; fi

mirror=$(bt_mirror) || bt_die "no Debian '$SUITE' mirror found in /etc/apt/sources.list*; set DSR_BOOT_MIRROR"
work="$cache/build.$$"
root="$work/root"
cleanup() {
	# debootstrap mounts /proc and /sys in the target and may leave them on failure.
	if [ -d "$root" ]; then
		for m in $(awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
			umount -l "$m" 2>/dev/null || true
		done
	fi
	rm -rf --one-file-system "$work"
}
trap cleanup EXIT
mkdir -p "$work"

t0=$(date +%s)
bt_log "debootstrap $SUITE from $mirror (cold build; a few minutes)"
debootstrap --variant=minbase --include="$INCLUDE" --components=main \
	"$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
	tail -n 30 "$work/debootstrap.log" >&2
	bt_die "debootstrap failed"
}
t1=$(date +%s)
bt_log "debootstrap took $((t1 - t0)) s"

# --- configure the guest -----------------------------------------------------
echo dsr-boot >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdsr-boot\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
printf '/dev/vda\t/\text4\trw,errors=remount-ro\t0\t1\n' >"$root/etc/fstab"
chroot "$root" passwd -d root >/dev/null # console login for debugging by hand
# Keep the journal across reboots so the test can read earlier boots.
mkdir -p "$root/var/log/journal"
# Nothing in the guest talks to a network; drop units that only slow a boot.
# keepalived and ipvsadm are only started by the interop test, in namespaces.
# The network managers are only started by the netmgr test (it unmasks them):
# masked, they cannot touch the boot and interop tests' addresses.
for u in getty@tty1.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
	e2scrub_reap.service fstrim.timer systemd-timesyncd.service keepalived.service ipvsadm.service \
	NetworkManager.service NetworkManager-wait-online.service NetworkManager-dispatcher.service \
	systemd-networkd.service systemd-networkd.socket systemd-networkd-wait-online.service; do
	ln -sf /dev/null "$root/etc/systemd/system/$u"
done

# sshd is for the fleet test's containers only (it enables it in each one's
# overlay): the VM itself listens on nothing.
systemctl --root="$root" disable ssh.service >/dev/null 2>&1 || bt_die "cannot disable ssh.service"

# The runner: on a boot with `boottest=1` on the kernel command line, mount the
# per-run payload disk (LABEL=BTPAYLOAD, read-only) and run its phases.sh.
# Everything test-specific lives on that disk, so changing the test does not
# rebuild the image.
install -m 0755 /dev/stdin "$root/usr/local/sbin/boot-test-runner" <<'RUNNER'
#!/bin/sh
set -u
dev=/dev/disk/by-label/BTPAYLOAD
i=0
while [ ! -e "$dev" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -e "$dev" ] || dev=/dev/vdb
mkdir -p /run/boot-test/payload
mountpoint -q /run/boot-test/payload || mount -o ro "$dev" /run/boot-test/payload || {
	echo "@@BT FAIL runner cannot mount payload disk $dev" >/dev/console
	exit 1
}
exec /bin/bash /run/boot-test/payload/phases.sh
RUNNER
cat >"$root/etc/systemd/system/boot-test-runner.service" <<'UNIT'
[Unit]
Description=dsr-agent boot test phases
ConditionKernelCommandLine=boottest=1
After=multi-user.target dsr-agent.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/boot-test-runner
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=15min

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/boot-test-runner.service \
	"$root/etc/systemd/system/multi-user.target.wants/boot-test-runner.service"

# Smaller image: no package lists or archives (the guest has no network).
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
mkdir -p "$root/var/lib/apt/lists/partial"
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*

# --- kernel, initramfs, filesystem --------------------------------------------
# A small initramfs (only what mounts a virtio-blk ext4 root): MODULES=most
# makes a ~30 MB one that takes seconds to unpack under TCG, on every boot.
printf 'MODULES=list\nCOMPRESS=zstd\n' >"$root/etc/initramfs-tools/conf.d/boot-test"
printf 'virtio_pci\nvirtio_blk\nvirtio_console\next4\ncrc32c_generic\n' >>"$root/etc/initramfs-tools/modules"
mount -t proc proc "$root/proc"
chroot "$root" update-initramfs -u -k all >"$work/initramfs.log" 2>&1 || {
	umount "$root/proc"; cat "$work/initramfs.log" >&2; bt_die "update-initramfs failed"
}
umount "$root/proc"
vmlinuz=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -n1)
[ -f "$vmlinuz" ] && [ -f "$initrd" ] || bt_die "no kernel/initrd in the rootfs"
cp "$vmlinuz" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
basename "$vmlinuz" | sed 's/^vmlinuz-//' >"$work/kernel-version"

mkfs.ext4 -q -L btroot -E root_owner=0:0 -d "$root" "$work/rootfs.img" "$IMAGE_SIZE" ||
	bt_die "mkfs.ext4 -d failed"
t2=$(date +%s)
bt_log "image built in $((t2 - t0)) s (debootstrap $((t1 - t0)) s)"
echo "$((t2 - t0))" >"$work/build-seconds"

rm -rf --one-file-system "$root"
mkdir -p "$out"
mv "$work/vmlinuz" "$work/initrd.img" "$work/rootfs.img" "$work/kernel-version" "$work/build-seconds" "$out/"
touch "$out/done"
# Drop images built from older versions of this script.
for old in "$cache/$SUITE"-*; do
	[ "$old" = "$out" ] || rm -rf --one-file-system "$old"
done
echo "$out"
