#!/bin/bash
# In-VM side of `make test-fleet` (copied to the payload disk as phases.sh;
# the boot-test image's runner runs it once, on a boot with `boottest=1`): the
# director. This machine's kernel has no ip_vs, the VM's Debian kernel has; so
# the VM is the director and nothing else. Its one NIC is a tap on the host's
# lab bridge (in a network namespace the host's runner made), where the real
# servers (systemd-nspawn containers), the client and the Ansible controller
# are. The host drives the checks; it reads IPVS over SSH with `fleetctl`.
#
#   eth (virtio-net)  10.88.0.2/24 + VIP 10.88.0.100/32: keepalived (checkers
#                     only) programming IPVS, lb_kind DR, HTTP_GET on each real
#                     server's dsr-agent /healthz, inhibit_on_failure
#
# Results go to the host as "@@BT PASS|FAIL name detail", "@@BT METRIC name
# value", "@@BT INFO text", "@@BT READY", "@@BT END" on the virtio port.
set -u
P=/run/boot-test/payload
W=/var/lib/fleet
mkdir -p "$W"
# shellcheck source=../../boot/guest/lib.sh
. "$P/lib.sh"

VIP=10.88.0.100
DIR_IP=10.88.0.2
declare -A RSIP=([rs1]=10.88.0.21 [rs2]=10.88.0.22)
HPORT=8558
info "$(keepalived --version 2>&1 | head -n1) / $(ipvsadm --version 2>&1 | head -n1) / kernel $(uname -r)"

director() {
	modprobe ip_vs && modprobe ip_vs_rr || return 1
	# A drained server (weight 0) must get no new connection. In DR mode IPVS
	# sees only the client's half: after the client's FIN an entry stays in
	# FIN_WAIT (2 min), and by default (conn_reuse_mode 1) a new SYN from the
	# same client port reuses it and goes to the old server, weight 0 or not:
	# a busy client reuses ports within seconds. Measured here: 8 of 2,021
	# requests refused by a drained server being restarted. Bit 2 of
	# conn_reuse_mode reschedules such SYNs; expire_nodest_conn does it for
	# any entry whose server has weight 0.
	sysctl -qw net.ipv4.vs.conn_reuse_mode=3 net.ipv4.vs.expire_nodest_conn=1 || return 1
	local n
	for n in /sys/class/net/*; do [ -e "$n/device" ] && NIC=${n##*/} && break; done
	[ -n "${NIC:-}" ] || { echo "no NIC (the host's tap)"; return 1; }
	ip addr add "$DIR_IP/24" dev "$NIC" && ip addr add "$VIP/32" dev "$NIC" && ip link set "$NIC" up || return 1
	# sshd for the host's checks (fleetctl): its key; no PAM (a login would
	# start a logind session and a systemd --user manager, slow under TCG).
	mkdir -p -m 0700 /root/.ssh
	install -m 0600 "$P/id_ed25519.pub" /root/.ssh/authorized_keys || return 1
	printf 'UsePAM no\nPermitRootLogin prohibit-password\nUseDNS no\n' >/etc/ssh/sshd_config.d/fleet.conf
	systemctl start ssh.service || return 1
	install -m 0755 "$P/fleetctl" /usr/local/sbin/fleetctl
	echo "$NIC $DIR_IP/24 + VIP $VIP/32; conn_reuse_mode $(sysctl -n net.ipv4.vs.conn_reuse_mode), expire_nodest_conn $(sysctl -n net.ipv4.vs.expire_nodest_conn); sshd"
}
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

t_begin=$(now_ms)
ok director "the director's NIC on the lab bridge (tap), ip_vs loaded, sshd" director || finish
kconf >"$W/keepalived.conf"
# -C checkers only (one director, no VRRP), -n foreground, -l log to the console.
keepalived -C -n -l -D -f "$W/keepalived.conf" -p "$W/k.pid" -c "$W/kc.pid" -r "$W/kv.pid" >>"$W/keepalived.log" 2>&1 &
metric director_ready_in_vm_ms $(( $(now_ms) - t_begin ))
emit READY
# The host runs the checks and touches /run/fleet-done at the end (bounded:
# qemu's own timeout ends the VM in any case).
while [ ! -e /run/fleet-done ]; do sleep 1; done
ipvsadm -Ln >"$W/ipvs.txt" 2>&1
while IFS= read -r l; do info "ipvs: $l"; done <"$W/ipvs.txt"
finish
