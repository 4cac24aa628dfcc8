#!/bin/bash
# In-VM side of `make test-fleet` (copied to the payload disk as phases.sh;
# the boot-test image's runner runs it once, on a boot with `boottest=1`).
#
# One VM, network namespaces on a bridge (br0, 10.88.0.1 in the VM's own
# namespace: the Ansible controller):
#   client 10.88.0.10   dir 10.88.0.2 (+ VIP 10.88.0.100/32): keepalived + IPVS (DR)
#   rs1 10.88.0.21, rs2 10.88.0.22: systemd-nspawn containers booted with
#       systemd (an overlay of the VM's root: the same Debian), sshd, and what
#       the role installs: the real dsr-agent package, its unit, the config.
# Ansible (Debian's ansible-core) runs the role from deploy/ansible over SSH.
#
# Results go to the host as "@@BT PASS|FAIL|SKIP name detail", "@@BT METRIC
# name value", "@@BT INFO text", "@@BT END" on the virtio port "boottest".
# shellcheck disable=SC2317
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
info "$(ansible-playbook --version 2>&1 | head -n1) / $(systemd-nspawn --version | head -n1) / $(keepalived --version 2>&1 | head -n1) / kernel $(uname -r)"

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

# --- real servers: systemd in nspawn containers ---------------------------------------------
# The controller's key, in the VM's own root before the overlays exist: each
# container sees it through its lower layer.
ssh_key() {
	mkdir -p -m 0700 /root/.ssh
	ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519 <<<y >/dev/null 2>&1 || return 1
	install -m 0600 /root/.ssh/id_ed25519.pub /root/.ssh/authorized_keys
}
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
		-p TimeoutStartSec=240 -p StandardOutput=journal -p StandardError=journal \
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
	[ "$rc" = 0 ] || { for m in rs1 rs2; do journalctl -u "fleet-$m" --no-pager | tail -n 20 >"$W/fleet-$m.log"; infofile "$W/fleet-$m.log"; done; return 1; }
	for m in rs1 rs2; do
		for _ in $(seq 100); do
			ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 -o LogLevel=ERROR \
				"root@${RSIP[$m]}" true 2>/dev/null && break
			sleep 0.3
		done
		rsh "$m" true || { echo "no ssh to $m"; return 1; }
	done
	echo "$(rsh rs1 'systemctl is-system-running; cat /proc/1/comm; hostname') / $(rsh rs2 'systemctl is-system-running; hostname')"
}
rsh() { local m=$1; shift; ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "root@${RSIP[$m]}" "$@"; }

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
weight() {
	nsx dir ipvsadm -Ln -t "$VIP:80" 2>/dev/null |
		awk -v rs="${RSIP[$1]}:80" '$1 == "->" && $2 == rs { print $4; found = 1 } END { if (!found) print "absent" }'
}
wait_weights() { # wait_weights WANT SECONDS: both real servers at weight WANT
	for _ in $(seq $(( $2 * 5 ))); do
		[ "$(weight rs1)" = "$1" ] && [ "$(weight rs2)" = "$1" ] && return 0
		sleep 0.2
	done
	echo "weights after $2 s: rs1 $(weight rs1), rs2 $(weight rs2), want $1"
	return 1
}

# --- Ansible --------------------------------------------------------------------------------------
CTL=$F/ctl
DEB=$CTL/$(basename "$(ls "$P"/*.deb)")
# play NAME ARGS...: ansible-playbook from the test's directory; output to
# $W/NAME.out, the recap lines to $W/NAME.recap; returns its exit status.
play() {
	local name=$1 rc t0
	shift
	t0=$(now_ms)
	(cd "$CTL/test" && ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1 ansible-playbook -e "fleet_deb=$DEB" "$@") >"$W/$name.out" 2>&1
	rc=$?
	metric "play_${name}_ms" $(( $(now_ms) - t0 ))
	sed -n '/^PLAY RECAP/,$p' "$W/$name.out" | grep -E '^(rs[0-9]) +:' >"$W/$name.recap"
	return $rc
}
# recap NAME HOST FIELD: a number from the recap line of HOST ("absent" if none)
recap() {
	awk -v h="$2" -v f="$3" '$1 == h { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) { print kv[2]; found = 1 } } }
		END { if (!found) print "absent" }' "$W/$1.recap"
}
recap_line() { tr -s ' ' <"$W/$1.recap" | cut -d' ' -f1-7 | tr '\n' ';'; }
failed_tasks() { grep -E '^(fatal|failed):' "$W/$1.out" | cut -c1-400 | head -n 3; }

# --- client ------------------------------------------------------------------------------------------
client_start() { # client_start NAME
	rm -f "$W/$1.stop"
	ip netns exec client python3 "$CTL/client.py" "$VIP" 80 "$W/$1.requests" "$W/$1.stop" \
		--interval 0.02 --min 1000 --max 30000 --max-seconds 900 >"$W/$1.client.log" 2>&1 &
	CLIENT_PID=$!
}
client_stop() { touch "$W/$1.stop"; wait "$CLIENT_PID"; }
# counts NAME FROM_MS TO_MS: "sent failed" of the requests in the window
counts() { awk -v a="$2" -v b="$3" '$1 !~ /^#/ && $1 >= a && $1 <= b { n++; if ($2 == "fail") f++ } END { print n + 0, f + 0 }' "$W/$1.requests"; }
totals() { awk '$1 !~ /^#/ { n++; if ($2 == "fail") f++ } END { print n + 0, f + 0 }' "$W/$1.requests"; }
fail_kinds() { awk '$2 == "fail" { print $3 }' "$W/$1.requests" | sort | uniq -c | tr -s ' \n' ' '; }

# A host's state, for "nothing changed": the config file's hash, the service,
# `dsr-agent status`, and the VIPs on lo.
hoststate() {
	rsh "$1" "sha256sum $2 | cut -c1-16; systemctl is-active dsr-agent; dsr-agent status >/dev/null && echo in-sync || echo drift; ip -o -4 addr show dev lo | awk '\$4 != \"127.0.0.1/8\" { print \$4 }' | sort | tr '\n' ' '"
}

# ======================================================================================================
t_begin=$(now_ms)
if ! ok topology "client, director, rs1, rs2 namespaces on a bridge; ip_vs loaded" setup; then finish; fi
mkdir -p "$CTL/test" "$CTL/deploy"
cp -r "$P/deploy/." "$CTL/deploy/"
cp -r "$P/test/." "$CTL/test/"
cp "$P/client.py" "$P"/*.deb "$CTL/"
chmod -R go-w "$CTL" # ansible ignores an ansible.cfg in a world-writable directory
ok ssh-key "the controller's SSH key authorized in the image root (the containers' lower layer)" ssh_key || finish
if ! ok containers "rs1 and rs2: systemd booted in systemd-nspawn (own netns), sshd answers" boot_containers; then finish; fi
start_keepalived

# (a) first run converges both hosts; the second changes nothing.
if play web web.yml; then pass web-service "web.service (python3 http.server :80) on rs1 and rs2: $(recap_line web)"
else fail web-service "web.yml failed: $(failed_tasks web)"; infofile "$W/web.out" 20; finish; fi
if play converge1 ../deploy/playbooks/site.yml; then
	c1=$(recap converge1 rs1 changed) c2=$(recap converge1 rs2 changed)
	if [ "$c1" -gt 0 ] && [ "$c2" -gt 0 ]; then
		pass converge-first "site.yml: both hosts converged from scratch (package, config, service): $(recap_line converge1)"
	else
		fail converge-first "site.yml: changed rs1 $c1, rs2 $c2 (want > 0 on both): $(recap_line converge1)"
	fi
else
	fail converge-first "site.yml failed: $(failed_tasks converge1)"; infofile "$W/converge1.out" 40
fi
for m in rs1 rs2; do
	ok "host-$m" "$m: dsr-agent.service active, status in sync, $VIP on lo, healthz 200 from the director" sh -c "
		s=\$(ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@${RSIP[$m]} \
			'systemctl is-active dsr-agent; dsr-agent status >/dev/null && echo in-sync; ip -o -4 addr show dev lo | grep -c \" $VIP/32 \"; dpkg-query -W -f=\"\\\${Version}\" dsr-agent')
		echo \$s | tr '\n' ' '
		[ \"\$(echo \"\$s\" | sed -n 1p)\" = active ] && [ \"\$(echo \"\$s\" | sed -n 2p)\" = in-sync ] && [ \"\$(echo \"\$s\" | sed -n 3p)\" = 1 ] &&
		[ \"\$(ip netns exec dir curl -s -m 3 -o /dev/null -w '%{http_code}' http://${RSIP[$m]}:$HPORT/healthz)\" = 200 ]"
done
ok ipvs-both "keepalived: rs1 and rs2 at weight 1 on $VIP:80" wait_weights 1 30
if play converge2 ../deploy/playbooks/site.yml; then
	c1=$(recap converge2 rs1 changed) c2=$(recap converge2 rs2 changed)
	if [ "$c1" = 0 ] && [ "$c2" = 0 ]; then
		pass converge-idempotent "second site.yml run: changed=0 on both ($(recap_line converge2))"
	else
		fail converge-idempotent "second site.yml run: changed rs1 $c1, rs2 $c2: $(grep -E '^changed:' "$W/converge2.out" | head -n 5 | tr '\n' ' ')"
	fi
else
	fail converge-idempotent "second site.yml run failed: $(failed_tasks converge2)"
fi

# (b) rolling restart of the web service through the maintenance flow, with a
# client sending requests through the VIP the whole time; then the same
# restart without the drain step (negative control).
rolling() { # rolling NAME ARGS...
	local name=$1 t0 t1 rc
	shift
	client_start "$name"
	sleep 2 # requests flowing before the first host is touched
	t0=$(now_ms)
	play "$name" ../deploy/playbooks/rolling.yml -e "rolling_tasks=$CTL/test/tasks/restart-web.yml" "$@"
	rc=$?
	t1=$(now_ms)
	sleep 2
	client_stop "$name"
	read -r n f <<<"$(counts "$name" "$t0" "$t1")"
	read -r tn tf <<<"$(totals "$name")"
	echo "$rc $n $f $tn $tf $(( t1 - t0 ))"
}
read -r rc n f tn tf dur <<<"$(rolling rolling)"
drains=$(grep -oE '(rs[0-9]) drained in [0-9:.]+' "$W/rolling.out" | awk '{ split($4, t, ":"); printf "%s %.2f s; ", $1, t[1] * 3600 + t[2] * 60 + t[3] }')
for m in rs1 rs2; do
	d=$(grep -oE "$m drained in [0-9:.]+" "$W/rolling.out" | awk '{ split($4, t, ":"); printf "%d", (t[1] * 3600 + t[2] * 60 + t[3]) * 1000 }')
	[ -n "$d" ] && metric "drain_wait_ms_$m" "$d"
done
metric rolling_requests "$tn"
metric rolling_requests_during_play "$n"
metric rolling_failed "$tf"
metric rolling_play_ms "$dur"
restarts=$(grep -c 'Restart the web service' "$W/rolling.out")
if [ "$rc" = 0 ] && [ "$tf" = 0 ] && [ "$n" -ge 1000 ] && [ "$(recap rolling rs1 failed)" = 0 ] && [ "$(recap rolling rs2 failed)" = 0 ]; then
	pass rolling-drained "rolling restart of web.service on rs1 then rs2 (drain --wait, restart, checks up, undrain; serial 1): $tf of $tn requests failed ($n during the $dur ms play); drain: $drains"
else
	fail rolling-drained "rolling restart with drain: play exit $rc, $tf of $tn requests failed ($f of $n during the play; want 0 of >= 1000): $(fail_kinds rolling) $(failed_tasks rolling)"
	infofile "$W/rolling.out" 30
fi
ok rolling-both-back "after the rolling restart both hosts back at weight 1" wait_weights 1 20
read -r rc n f tn tf dur <<<"$(rolling nodrain -e dsr_agent_maintenance_drain=false)"
metric nodrain_requests "$tn"
metric nodrain_failed "$tf"
if [ "$rc" = 0 ] && [ "$tf" -gt 0 ]; then
	pass control-no-drain "negative control, the same rolling restart without the drain: $tf of $tn requests failed ($(fail_kinds nodrain))"
else
	fail control-no-drain "negative control without the drain: play exit $rc, $tf of $tn requests failed (want > 0): the test cannot tell a drain from none"
fi
ok nodrain-both-back "after the negative control both hosts back at weight 1" wait_weights 1 30

# (c) a template with an invalid VIP stops the rollout at the first host,
# the old config still running on every host.
before1=$(hoststate rs1 /etc/dsr-agent/config.yaml) before2=$(hoststate rs2 /etc/dsr-agent/config.yaml)
play badvip ../deploy/playbooks/site.yml -e fleet_vip=10.88.0.300
rc=$?
after1=$(hoststate rs1 /etc/dsr-agent/config.yaml) after2=$(hoststate rs2 /etc/dsr-agent/config.yaml)
info "bad VIP run: $(failed_tasks badvip | head -n 1)"
rs2tasks=$(grep -c '\[rs2\]' "$W/badvip.out")
if [ "$rc" != 0 ] && [ "$(recap badvip rs1 failed)" = 1 ] && [ "$rs2tasks" = 0 ] &&
	grep -q 'Template config.yaml' "$W/badvip.out" && grep -q '10.88.0.300' "$W/badvip.out"; then
	pass badvip-stops "fleet_vip=10.88.0.300: validate refused the template on rs1, the play stopped there (exit $rc; rs2 untouched: $rs2tasks task lines; $(recap_line badvip))"
else
	fail badvip-stops "fleet_vip=10.88.0.300: exit $rc, recap $(recap_line badvip), rs2 task lines $rs2tasks: $(failed_tasks badvip)"
	infofile "$W/badvip.out" 30
fi
if [ "$before1" = "$after1" ] && [ "$before2" = "$after2" ] && [[ $after1 == *"active in-sync $VIP/32"* ]] && [[ $after2 == *"active in-sync $VIP/32"* ]]; then
	pass badvip-old-config "both hosts still run the old config: rs1 [$after1], rs2 [$after2]"
else
	fail badvip-old-config "before/after: rs1 [$before1] -> [$after1], rs2 [$before2] -> [$after2]"
fi
ok badvip-in-rotation "both hosts still at weight 1" wait_weights 1 5

# (d) a drop-in added to one host (its host_vars) changes only that host.
mkdir -p "$CTL/test/inventory/host_vars"
cat >"$CTL/test/inventory/host_vars/rs1.yml" <<EOF
---
dsr_agent_dropins:
  50-second-vip:
    vips:
      - address: $VIP2
        ports:
          - port: 80
EOF
before2=$(hoststate rs2 /etc/dsr-agent/config.yaml)
if play dropin ../deploy/playbooks/site.yml; then
	c1=$(recap dropin rs1 changed) c2=$(recap dropin rs2 changed)
	after1=$(hoststate rs1 /etc/dsr-agent/config.d/50-second-vip.yaml) after2=$(hoststate rs2 /etc/dsr-agent/config.yaml)
	if [ "$c1" -gt 0 ] && [ "$c2" = 0 ] && [[ $after1 == *" $VIP2/32"* ]] && [ "$before2" = "$after2" ]; then
		pass dropin-one-host "drop-in 50-second-vip in rs1's host_vars: rs1 changed $c1 and has $VIP2 on lo [$after1]; rs2 changed 0, unchanged [$after2]"
	else
		fail dropin-one-host "drop-in on rs1: changed rs1 $c1, rs2 $c2; rs1 [$after1]; rs2 [$before2] -> [$after2]"
	fi
	info "rs1 validate --print: $(rsh rs1 'dsr-agent validate --print 2>&1 | grep -n -A1 -i "101" | head -n 4' | tr '\n' ' ')"
else
	fail dropin-one-host "site.yml with rs1's drop-in failed: $(failed_tasks dropin)"; infofile "$W/dropin.out" 30
fi

metric fleet_in_vm_ms $(( $(now_ms) - t_begin ))
finish
