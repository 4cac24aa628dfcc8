#!/bin/bash
# In-VM side of `make test-fleet` (copied to the payload disk as phases.sh;
# the boot-test image's runner runs it once, on a boot with `boottest=1`).
# It builds the lab, says READY, and waits: the host drives the checks over
# SSH (qemu forwards a loopback port of the host to this VM's sshd) and runs
# ansible-playbook itself, at native speed, against the containers through
# this VM (ProxyJump).
#
# One VM, network namespaces on a bridge (br0, 10.88.0.1 in the VM's own
# namespace, the jump host's side):
#   client 10.88.0.10   dir 10.88.0.2 (+ VIP 10.88.0.100/32): keepalived + IPVS (DR)
#   rs1 10.88.0.21, rs2 10.88.0.22: systemd-nspawn containers booted with
#       systemd (an overlay of the VM's root: the same Debian), sshd, and what
#       the role installs: the real dsr-agent package, its unit, the config.
#
# Results go to the host as "@@BT PASS|FAIL|SKIP name detail", "@@BT METRIC
# name value", "@@BT INFO text", "@@BT READY", "@@BT END" on the virtio port.
set -u
P=/run/boot-test/payload
# tmpfs with exec (the initramfs mounts /run noexec): containers' overlays,
# the controller's working copy, logs.
F=/var/lib/fleet
mkdir -p "$F"
mount -t tmpfs -o mode=0755,size=600m fleet "$F"
W=$F/work
mkdir -p "$W"
PORT=/dev/virtio-ports/boottest
for _ in $(seq 50); do [ -e "$PORT" ] && break; sleep 0.1; done

emit() {
	local line="@@BT $*"
	if [ -e "$PORT" ]; then printf '%s\n' "$line" >"$PORT"; fi
	printf '%s\n' "$line" >/dev/console
	printf '%s\n' "$line" >>"$W/markers.log"
}
pass() { emit PASS "$1" "${*:2}"; }
fail() { emit FAIL "$1" "${*:2}"; }
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
	for m in rs1 rs2; do systemctl stop "fleet-$m.service" >/dev/null 2>&1; done
	emit END
	sync
	systemctl --no-block poweroff
	exit 0
}

VIP=10.88.0.100
VIP2=10.88.0.101
CTL_IP=10.88.0.1
DIR_IP=10.88.0.2
CLIENT_IP=10.88.0.10
declare -A RSIP=([rs1]=10.88.0.21 [rs2]=10.88.0.22)
HPORT=8558
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
info "$(systemd-nspawn --version | head -n1) / $(keepalived --version 2>&1 | head -n1) / $(/usr/sbin/sshd -V 2>&1 | head -n1) / kernel $(uname -r)"

# --- topology -----------------------------------------------------------------------------
setup() {
	modprobe ip_vs && modprobe ip_vs_rr || return 1
	ip link add br0 type bridge || return 1
	ip addr add "$CTL_IP/24" dev br0
	ip link set br0 up
	local ns addr
	for ns in client dir rs1 rs2; do
		case $ns in client) addr=$CLIENT_IP ;; dir) addr=$DIR_IP ;; *) addr=${RSIP[$ns]} ;; esac
		ip netns add "$ns" || return 1
		ip link add "v-$ns" type veth peer name eth0 netns "$ns" || return 1
		ip link set "v-$ns" master br0 up
		nsx "$ns" ip link set lo up
		nsx "$ns" ip addr add "$addr/24" dev eth0
		nsx "$ns" ip link set eth0 up
	done
	nsx dir ip addr add "$VIP/32" dev eth0
}

# --- SSH: the host's key, sshd in the VM (the jump host) and in each container ------------------
# Written into the VM's own root before the overlays exist: each container sees
# it through its lower layer. No PAM: a login would start logind sessions and a
# systemd --user manager, seconds each under TCG, for nothing.
ssh_setup() {
	mkdir -p -m 0700 /root/.ssh
	install -m 0600 "$P/id_ed25519.pub" /root/.ssh/authorized_keys || return 1
	printf 'UsePAM no\nPermitRootLogin prohibit-password\nUseDNS no\n' >/etc/ssh/sshd_config.d/fleet.conf
	# The NIC of qemu's user network (restrict=on: it reaches only the host's
	# forwarded loopback port): the address qemu forwards to.
	local n
	for n in /sys/class/net/*; do [ -e "$n/device" ] && NIC=${n##*/} && break; done
	[ -n "${NIC:-}" ] || { echo "no NIC (qemu -nic user)"; return 1; }
	ip addr add 10.0.2.15/24 dev "$NIC" && ip link set "$NIC" up || return 1
	systemctl start ssh.service || return 1
	echo "sshd on $NIC 10.0.2.15:22"
}

# --- real servers: systemd in nspawn containers ---------------------------------------------
# container NAME: an overlay of / (upper on tmpfs), with what differs from the
# VM written into the upper layer before it is mounted: hostname, machine id,
# sshd enabled, the boot-test runner masked (the kernel command line a
# container sees is the VM's: it would run this script again).
container() {
	local m=$1 d=$F/$1
	mkdir -p "$d/upper/etc/systemd/system/multi-user.target.wants" "$d/work" "$d/root"
	echo "$m" >"$d/upper/etc/hostname"
	: >"$d/upper/etc/fstab" # the VM's root device is not the container's
	od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$d/upper/etc/machine-id"
	ln -s /lib/systemd/system/ssh.service "$d/upper/etc/systemd/system/multi-user.target.wants/ssh.service"
	local u
	for u in boot-test-runner.service console-getty.service container-getty@.service systemd-journald-audit.socket; do
		ln -sf /dev/null "$d/upper/etc/systemd/system/$u"
	done
	mount -t overlay "fleet-$m" -o "lowerdir=/,upperdir=$d/upper,workdir=$d/work" "$d/root" || return 1
	# A unit with delegated cgroups (as systemd-nspawn@.service); notify:
	# systemd-run returns when the container's systemd reports it has booted.
	systemd-run --quiet --unit="fleet-$m" --service-type=notify -p Delegate=yes -p KillMode=mixed \
		-p TimeoutStartSec=400 -p StandardOutput=journal -p StandardError=journal \
		systemd-nspawn --quiet --keep-unit --register=no --boot --notify-ready=yes \
		--machine="$m" --directory="$d/root" --network-namespace-path="/run/netns/$m" \
		--console=read-only --link-journal=no
}
boot_containers() {
	local m t0 rc=0
	t0=$(now_ms)
	for m in rs1 rs2; do container "$m" & done
	for m in rs1 rs2; do wait -n || rc=1; done
	metric containers_boot_ms $(( $(now_ms) - t0 ))
	if [ "$rc" != 0 ]; then
		for m in rs1 rs2; do journalctl -u "fleet-$m" --no-pager | tail -n 20 >"$W/fleet-$m.log"; infofile "$W/fleet-$m.log"; done
		return 1
	fi
	# Booted (READY) means multi-user.target, ssh.service with it.
	for m in rs1 rs2; do
		nsx "$m" ss -Hltn 'sport = :22' | grep -q . || { echo "nothing listens on $m:22"; return 1; }
	done
	echo "rs1: $(systemctl show -p ActiveState --value fleet-rs1), rs2: $(systemctl show -p ActiveState --value fleet-rs2); sshd listening in both"
}

# --- the director: keepalived, HTTP_GET on each real server's /healthz ---------------------------
kconf() {
	local m
	cat <<EOF
global_defs {
	router_id fleet-dir
}
virtual_server $VIP 80 {
	delay_loop 1
	lb_algo rr
	lb_kind DR
	protocol TCP
	alpha
EOF
	for m in rs1 rs2; do
		cat <<EOF
	real_server ${RSIP[$m]} 80 {
		weight 1
		inhibit_on_failure
		HTTP_GET {
			url {
				path /healthz
				status_code 200
			}
			connect_ip ${RSIP[$m]}
			connect_port $HPORT
			connect_timeout 2
			retry 1
			delay_before_retry 1
		}
	}
EOF
	done
	echo "}"
}
start_keepalived() {
	kconf >"$W/keepalived.conf"
	ip netns exec dir keepalived -C -n -l -D -f "$W/keepalived.conf" -p "$W/k.pid" -c "$W/kc.pid" -r "$W/kv.pid" \
		>>"$W/keepalived.log" 2>&1 &
}
# ======================================================================================================
t_begin=$(now_ms)
if ! ok topology "client, director, rs1, rs2 namespaces on a bridge; ip_vs loaded" setup; then finish; fi
ok ssh "sshd in the VM for the host's key, reached through qemu's forwarded loopback port" ssh_setup || finish
if ! ok containers "rs1 and rs2: systemd booted in systemd-nspawn (own netns), sshd listening" boot_containers; then finish; fi
start_keepalived
cp "$P/client.py" "$F/client.py"
install -m 0755 "$P/fleetctl" /usr/local/sbin/fleetctl # the host's checks call it over SSH
metric lab_ready_in_vm_ms $(( $(now_ms) - t_begin ))
emit READY
# The host runs the checks; it touches /run/fleet-done when it has finished
# (bounded: qemu's own timeout ends the VM in any case).
while [ ! -e /run/fleet-done ]; do sleep 1; done
finish
