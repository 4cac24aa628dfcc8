#!/usr/bin/env bash
# make test-fleet: the Ansible role of deploy/ansible, run by Debian's
# ansible-playbook over SSH against two real systemd hosts with the real
# package, behind the real keepalived/IPVS director, a client sending
# requests through the VIP.
#
#   test/fleet/run.sh [DEB]      (default: the newest dist/*.deb)
#
# First ansible-lint (Debian's, production profile) on deploy/ansible. Then a
# lab in network namespaces of this run, on one bridge: the controller, the
# client, and the hosts rs1/rs2 (systemd-nspawn containers booted with systemd
# on overlays of the boot test's cached VM image); the director is that VM
# (guest/fleet.sh: keepalived + IPVS, which this kernel lacks) on a tap in the
# bridge. The checks (checks.sh) are listed in docs/fleet.md. Needs root,
# /dev/net/tun, loop devices and what systemd-nspawn needs.
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
DEB=$(realpath "$DEB") # the controller copies it from here
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
cp "$here/guest/fleetctl" "$payload/"
mkdir -m 0700 "$run/ssh"
ssh-keygen -q -t ed25519 -N '' -C fleet-test -f "$run/ssh/id"
cp "$run/ssh/id.pub" "$payload/id_ed25519.pub"
bt_vm_payload_disk

# --- the lab, on this machine, in network namespaces of this run ------------------------------------
# A bridge in its own namespace joins: the controller (ansible-playbook, 10.88.0.1),
# the client (10.88.0.10), the real servers rs1 (10.88.0.21) and rs2 (10.88.0.22) --
# systemd-nspawn containers booted with systemd on overlays of the VM image's root
# (the same Debian, sshd, Python) -- and the director VM's tap (10.88.0.2 + the VIP).
# The VM runs only the director (this kernel has no ip_vs); everything else runs
# at native speed (under TCG a single Ansible task took 10-60 s in the VM).
L=fl$$
TAP=${L}t
LAN=$L-lan
declare -A NSIP=([ctl]=10.88.0.1 [client]=10.88.0.10 [rs1]=10.88.0.21 [rs2]=10.88.0.22)
declare -A NSPID=()
lab_cleanup() {
	local m p
	for m in rs1 rs2; do
		p=${NSPID[$m]:-}
		[ -n "$p" ] || continue
		kill "$p" 2>/dev/null # systemd-nspawn: SIGTERM powers the container off
		for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null || true
	done
	for m in rs1 rs2; do mountpoint -q "$run/$m/root" && umount "$run/$m/root"; done
	mountpoint -q "$run/lower" && umount "$run/lower"
	ip link del "$TAP" 2>/dev/null || true
	for m in ctl client lan; do ip netns del "$L-$m" 2>/dev/null || true; done
	return 0
}
fleet_cleanup() {
	local rc=$?
	set +e # every step is tried, whatever the one before did
	for cm in "$run"/ssh/cm-*; do [ -S "$cm" ] && ip netns exec "$L-ctl" ssh -S "$cm" -O exit x >/dev/null 2>&1; done
	lab_cleanup
	(exit "$rc")
	bt_vm_cleanup
}
trap fleet_cleanup EXIT
lab() {
	local ns m d u
	ip netns add "$LAN" && ip -n "$LAN" link add br0 type bridge && ip -n "$LAN" link set br0 up || return 1
	for ns in ctl client; do
		ip netns add "$L-$ns" || return 1
		ip -n "$LAN" link add "v-$ns" type veth peer name eth0 netns "$L-$ns" || return 1
		ip -n "$LAN" link set "v-$ns" master br0 up
		ip -n "$L-$ns" link set lo up
		ip -n "$L-$ns" addr add "${NSIP[$ns]}/24" dev eth0
		ip -n "$L-$ns" link set eth0 up
	done
	# The image's root, read-only, as the containers' lower layer.
	mkdir -p "$run/lower"
	mount -o ro,loop,noload "$image/rootfs.img" "$run/lower" || { echo "cannot loop-mount $image/rootfs.img"; return 1; }
	for m in rs1 rs2; do
		d=$run/$m
		mkdir -p "$d/upper/etc/systemd/system/multi-user.target.wants" "$d/upper/etc/ssh/sshd_config.d" \
			"$d/upper/root/.ssh" "$d/work" "$d/root"
		echo "$m" >"$d/upper/etc/hostname"
		: >"$d/upper/etc/fstab" # the VM's root device is not the container's
		od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$d/upper/etc/machine-id"
		ln -s /lib/systemd/system/ssh.service "$d/upper/etc/systemd/system/multi-user.target.wants/ssh.service"
		# The image's boot-test runner would run its phases; a getty is not needed.
		for u in boot-test-runner.service console-getty.service container-getty@.service; do
			ln -s /dev/null "$d/upper/etc/systemd/system/$u"
		done
		chmod 0700 "$d/upper/root" "$d/upper/root/.ssh"
		install -m 0600 "$run/ssh/id.pub" "$d/upper/root/.ssh/authorized_keys"
		printf 'UsePAM no\nPermitRootLogin prohibit-password\nUseDNS no\n' >"$d/upper/etc/ssh/sshd_config.d/fleet.conf"
		# Its NIC (host0, the container's end of the veth nspawn puts on the
		# lab bridge) configured at boot, as a host's network config would.
		cat >"$d/upper/etc/systemd/system/fleet-net.service" <<EOF
[Unit]
Description=fleet test: the LB-facing NIC
Before=network-pre.target ssh.service dsr-agent.service
Wants=network-pre.target
[Service]
Type=oneshot
RemainAfterExit=yes
# Seen once: systemd in the container failed to attach a unit this early to
# its cgroup (ENOENT); try again rather than boot a host without its NIC.
Restart=on-failure
RestartSec=1
ExecStartPre=-/sbin/ip addr flush dev host0
ExecStart=/sbin/ip addr add ${NSIP[$m]}/24 dev host0
ExecStart=/sbin/ip link set host0 up
[Install]
WantedBy=multi-user.target
EOF
		ln -s /etc/systemd/system/fleet-net.service "$d/upper/etc/systemd/system/multi-user.target.wants/fleet-net.service"
		mount -t overlay "$L-$m" -o "lowerdir=$run/lower,upperdir=$d/upper,workdir=$d/work" "$d/root" || return 1
		# --private-network (not a prepared namespace): the container keeps
		# CAP_NET_ADMIN and a writable /proc/sys/net, as a real host's root has;
		# run in the lab's namespace (nsenter: ip netns exec would remount /sys
		# and hide the cgroup tree), nspawn puts its veth on the lab bridge.
		setsid nsenter --net="/run/netns/$LAN" systemd-nspawn --quiet --keep-unit --register=no --boot --machine="$L-$m" \
			--hostname="$m" --directory="$d/root" --private-network --network-bridge=br0 \
			--console=read-only --link-journal=no >"$run/$m-console.log" 2>&1 </dev/null &
		NSPID[$m]=$!
	done
	# The director's tap: created here, opened by qemu, then moved into the lab.
	ip tuntap add dev "$TAP" mode tap || return 1
	echo "bridge in $LAN; ctl, client namespaces; containers started (pids ${NSPID[rs1]} ${NSPID[rs2]})"
}
t_lab=$(date +%s)
lab >"$run/lab.log" 2>&1 || { cat "$run/lab.log"; bt_die "cannot build the lab"; }

accel=$(bt_accel "$image" "$run/kvm-probe.log")
t_boot=$(date +%s)
bt_log "booting $(cat "$image/kernel-version") under $accel: the keepalived/IPVS director; rs1, rs2 (systemd-nspawn), client and ansible-playbook here in namespaces"
BT_QEMU_NIC="tap,ifname=$TAP,script=no,downscript=no,model=virtio-net-pci" bt_qemu_start "$run" "$image" "$accel" "$TIMEOUT"
for _ in $(seq 100); do ip tuntap show 2>/dev/null | grep -q "^$TAP:.*Attached" && break; sleep 0.1; done
ip link set "$TAP" netns "$LAN" && ip -n "$LAN" link set "$TAP" master br0 up || bt_die "cannot move $TAP into the lab"

# The real servers: booted when sshd listens and systemd says so.
SSHCFG=$run/ssh/config
{
	echo "Host fleet-vm"; echo "	HostName 10.88.0.2"
	echo "Host rs1"; echo "	HostName 10.88.0.21"
	echo "Host rs2"; echo "	HostName 10.88.0.22"
	cat <<EOF
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
	ConnectTimeout 30
EOF
} >"$SSHCFG"
ctl() { ip netns exec "$L-ctl" "$@"; }
hostup() {
	local m=$1 s end=$(( $(date +%s) + 90 ))
	while [ "$(date +%s)" -lt "$end" ]; do
		s=$(ctl ssh -F "$SSHCFG" -o ConnectTimeout=2 "$m" 'systemctl is-system-running --wait || true; hostname; readlink /proc/1/exe' 2>&1) &&
			{ echo "$s" | tr '\n' ' '; return 0; }
		kill -0 "${NSPID[$m]}" 2>/dev/null || { echo "systemd-nspawn exited: $(tail -n 5 "$run/$m-console.log" | tr '\n' ' ')"; return 1; }
		sleep 0.2
	done
	echo "no SSH to $m after 90 s: $(grep -a -i 'fail' "$run/$m-console.log" | tail -n 5 | tr '\n' ' ')"
	return 1
}
containers=""
for m in rs1 rs2; do
	if out=$(hostup "$m"); then containers="$containers$m: $out; "
	else echo "@@BT FAIL container-$m $out" >>"$run/host-pre.log"; fi
done
[ -n "$containers" ] && echo "@@BT PASS containers systemd booted in systemd-nspawn, own netns, sshd answers in $(( $(date +%s) - t_lab )) s: $containers" >>"$run/host-pre.log"
[ -f "$run/host-pre.log" ] && sed "s/^@@BT /  [$(( $(date +%s) - t_boot ))s] /" "$run/host-pre.log" | cut -c1-200

# The director: its lab checks as they come, until it says READY (or ends).
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
if [ "$ready" = 1 ] && grep -q '^@@BT PASS containers' "$run/host-pre.log"; then
	t_ready=$(date +%s)
	set +e # the checks look at every exit status themselves
	# shellcheck source=checks.sh
	. "$here/checks.sh"
	set -e
	bt_log "checks done in $(( $(date +%s) - t_ready )) s; stopping the VM"
fi
g touch /run/fleet-done 2>/dev/null || kill "$qpid" 2>/dev/null || true
wait "$qpid" && qrc=0 || qrc=$?
qpid=""
t_end=$(date +%s)

# One marker file: the guest's, the host's checks, ansible-lint's verdict.
cat "$run/host-pre.log" "$run/host-markers.log" 2>/dev/null >>"$run/markers.log"
echo "$lint" >>"$run/markers.log"
bt_vm_markers
grep -q '^@@BT .* ansible-lint ' "$markers" || { cat "$run/host-pre.log" "$run/host-markers.log" 2>/dev/null; echo "$lint"; } >>"$markers"
npass=$(grep -c '^@@BT PASS ' "$markers" || true)
nfail=$(grep -c '^@@BT FAIL ' "$markers" || true)
bt_vm_summary "fleet test: ansible-playbook over SSH -> rs1, rs2 (systemd-nspawn, dsr-agent .deb) behind keepalived/IPVS in a VM (Debian bookworm $(cat "$image/kernel-version"), $accel)" '^(ansible-playbook|bad VIP|rs1 validate|Keepalived|ipvs: )'
bt_vm_verdict ansible-lint director containers web-service converge-first host-rs1 host-rs2 ipvs-both converge-idempotent \
	rolling-drained rolling-both-back control-no-drain nodrain-both-back badvip-stops badvip-old-config badvip-in-rotation dropin-one-host
