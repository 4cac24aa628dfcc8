#!/bin/bash
# In-VM side of `make test-interop` (copied to the payload disk as phases.sh;
# the boot-test image's runner runs it once, on a boot with `boottest=1`).
#
# One VM, network namespaces on a bridge:
#   client 10.88.0.10   dir 10.88.0.2 (+ VIP 10.88.0.100/32 on eth0)
#   rs1 10.88.0.21, rs2 10.88.0.22: VIP kept on lo by `dsr-agent run`
#       (loopback mode), busybox httpd on :80 and a line server on :7000
# The director is the real thing: keepalived (checkers only) with lb_kind DR
# programming the kernel's IPVS, an HTTP_GET checker on each real server's
# dsr-agent /healthz (delay_loop 1, retry 1, delay_before_retry 1).
#
# Results go to the host as "@@BT PASS|FAIL|SKIP name detail", "@@BT METRIC
# name value", "@@BT INFO text", "@@BT END" on the virtio port "boottest".
# SC2317: functions are called after their definitions (shellcheck 0.9 misreads
# that); SC2016: single-quoted $ are for the inner shells, on purpose.
# shellcheck disable=SC2317,SC2016
set -u
P=/run/boot-test/payload
W=/run/interop
mkdir -p "$W"
BT_MARKERS_LOG=$W/markers.log
# shellcheck source=../../boot/guest/lib.sh
. "$P/lib.sh"

VIP=10.88.0.100
DIR_IP=10.88.0.2
CLIENT_IP=10.88.0.10
declare -A RSIP=([rs1]=10.88.0.21 [rs2]=10.88.0.22)
HPORT=8558
AGENT=/usr/local/bin/dsr-agent
# The payload disk is read-only; /run is noexec: the agent goes to /usr/local/bin.
install -m 0755 "$P/dsr-agent" "$AGENT"
info "dsr-agent $("$AGENT" --version 2>&1 | tr '\n' ' ')"
info "$(keepalived --version 2>&1 | head -n1) / $(ipvsadm --version 2>&1 | head -n1) / kernel $(uname -r)"

# --- topology --------------------------------------------------------------------
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
setup() {
	modprobe ip_vs && modprobe ip_vs_rr || return 1
	ip link add br0 type bridge || return 1
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
	# The director owns the VIP (as keepalived's virtual_ipaddress would put it).
	nsx dir ip addr add "$VIP/32" dev eth0
}
mac() { nsx "$1" cat /sys/class/net/eth0/address; }

# --- real servers --------------------------------------------------------------------
rs_config() { # rs_config NS: the dsr-agent config of one real server
	cat <<EOF
mode: loopback
interfaces: [eth0]
vips:
  - address: $VIP
    ports:
      - {port: 80}
      - {port: 7000}
health:
  listen: ${RSIP[$1]}:$HPORT
EOF
}
start_services() { # start_services NS: busybox httpd on :80, a line server on :7000
	local ns=$1 d=$W/$1
	mkdir -p "$d/www"
	echo "$ns" >"$d/www/index.html"
	# Each line in gets "NS LINE" back: a client on a long-lived connection
	# can see which server answers it.
	printf '#!/bin/sh\nwhile read -r l; do echo "%s $l"; done\n' "$ns" >"$d/line.sh"
	ip netns exec "$ns" busybox httpd -f -p 80 -h "$d/www" >"$d/httpd.log" 2>&1 &
	# -ll: keep listening, one child per connection; -e: the rest is the program.
	ip netns exec "$ns" busybox nc -ll -p 7000 -e /bin/sh "$d/line.sh" >"$d/nc.log" 2>&1 &
}
declare -A AGENTPID
agent() { # agent NS ARGS...: dsr-agent with this server's config and state dir
	local ns=$1; shift
	nsx "$ns" "$AGENT" --config "$W/$ns/config.yaml" --state-dir "$W/$ns/state" "$@"
}
# Background processes are started with `ip netns exec` itself (not through
# a shell function, which would fork a subshell): ip execs the program, so $!
# is the daemon's own pid and a signal to it reaches the daemon.
start_agent() {
	local ns=$1
	mkdir -p "$W/$ns/state"
	rs_config "$ns" >"$W/$ns/config.yaml"
	ip netns exec "$ns" "$AGENT" --config "$W/$ns/config.yaml" --state-dir "$W/$ns/state" run \
		>>"$W/$ns/agent.log" 2>&1 &
	AGENTPID[$ns]=$!
}
# stop PID SECONDS: SIGTERM (what systemctl stop sends), SIGKILL after SECONDS;
# prints how long the process took to exit, in ms.
stop() {
	local pid=$1 t0
	t0=$(now_ms)
	kill "$pid" 2>/dev/null
	for _ in $(seq $(( $2 * 10 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then
		info "pid $pid ignored SIGTERM for $2 s: SIGKILL"
		kill -9 "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null
	echo $(( $(now_ms) - t0 ))
}
stop_agent() {
	local ns=$1
	metric "agent_sigterm_to_exit_ms_$ns" "$(stop "${AGENTPID[$ns]}" 10)"
	AGENTPID[$ns]=""
}
healthz() { nsx dir curl -s -m 2 -o /dev/null -w '%{http_code}' "http://${RSIP[$1]}:$HPORT/healthz"; }
wait_healthz() { # wait_healthz NS CODE SECONDS
	for _ in $(seq $(( $3 * 5 ))); do [ "$(healthz "$1")" = "$2" ] && return 0; sleep 0.2; done
	echo "healthz of $1 is $(healthz "$1"), want $2"
	return 1
}

# --- the director: keepalived ---------------------------------------------------------------
# kconf VARIANT: inhibit (weight 0 on failure: graceful), remove (keepalived's
# default: a failing server is deleted from IPVS), misc (MISC_CHECK running
# `dsr-agent check`, with inhibit_on_failure).
kconf() {
	local variant=$1 port ns
	cat <<EOF
global_defs {
	router_id interop-dir
	script_user root
}
EOF
	for port in 80 7000; do
		cat <<EOF
virtual_server $VIP $port {
	delay_loop 1
	lb_algo rr
	lb_kind DR
	protocol TCP
	# alpha: servers start as down, so a server in IPVS is one whose check passed.
	alpha
EOF
		for ns in rs1 rs2; do
			echo "	real_server ${RSIP[$ns]} $port {"
			echo "		weight 1"
			[ "$variant" != remove ] && echo "		inhibit_on_failure"
			if [ "$variant" = misc ]; then
				cat <<EOF
		MISC_CHECK {
			misc_path "$AGENT check ${RSIP[$ns]}:$HPORT"
			misc_timeout 3
		}
EOF
			else
				cat <<EOF
		HTTP_GET {
			url {
				path /healthz
				status_code 200
			}
			connect_ip ${RSIP[$ns]}
			connect_port $HPORT
			# 2 s: under TCG on a loaded machine a GET can take over 1 s; a 503 or a
			# refused connection is still seen at once.
			connect_timeout 2
			retry 1
			delay_before_retry 1
		}
EOF
			fi
			echo "	}"
		done
		echo "}"
	done
}
KPID=""
start_keepalived() { # start_keepalived VARIANT
	kconf "$1" >"$W/keepalived-$1.conf"
	# -C checkers only (no VRRP: one director), -n foreground, -l log to the
	# console (Debian's keepalived has no log file support), own pid files.
	ip netns exec dir keepalived -C -n -l -D -f "$W/keepalived-$1.conf" -p "$W/k.pid" -c "$W/kc.pid" -r "$W/kv.pid" \
		>>"$W/keepalived-$1.log" 2>&1 &
	KPID=$!
}
stop_keepalived() {
	[ -n "$KPID" ] || return 0
	stop "$KPID" 10 >/dev/null
	KPID=""
	# keepalived removes its services when it stops; -C makes sure.
	nsx dir ipvsadm -C
}
# weight PORT NS: the IPVS weight of NS's real server in the VIP:PORT service, or "absent".
weight() {
	nsx dir ipvsadm -Ln -t "$VIP:$1" 2>/dev/null |
		awk -v rs="${RSIP[$2]}:$1" '$1 == "->" && $2 == rs { print $4; found = 1 } END { if (!found) print "absent" }'
}
# wait_weight PORT NS WANT SECONDS: prints the wait in ms; fails with the last value
wait_weight() {
	local t0 w
	t0=$(now_ms)
	for _ in $(seq $(( $4 * 10 ))); do
		w=$(weight "$1" "$2")
		[ "$w" = "$3" ] && { echo $(( $(now_ms) - t0 )); return 0; }
		sleep 0.1
	done
	echo "weight of $2 on :$1 is $w after $4 s, want $3"
	return 1
}
ipvs_dump() { nsx dir ipvsadm -Ln >"$W/ipvs.txt" 2>&1; infofile "$W/ipvs.txt" 20; }

# --- clients -------------------------------------------------------------------------------------
# who_http N: N new HTTP requests through the VIP; prints the answering servers, "ERR" for failures.
who_http() {
	for _ in $(seq "$1"); do nsx client curl -s -m 3 "http://$VIP/" || echo ERR; done
}
# who_line N: N new connections to VIP:7000, one line each; prints the answering servers.
who_line() {
	for _ in $(seq "$1"); do
		nsx client timeout 5 bash -c "exec 3<>/dev/tcp/$VIP/7000 && echo hi >&3 && read -r -t 3 r <&3 && echo \"\${r%% *}\"" || echo ERR
	done
}
# A long-lived connection: a client process in the client namespace that
# holds one TCP connection to VIP:7000 and sends a line each time one is
# written to its control fifo; each answer (or TIMEOUT/ERR) goes to NAME.out.
conn_open() { # conn_open NAME
	local n=$1
	rm -f "$W/$n.ctl" "$W/$n.out"
	mkfifo "$W/$n.ctl"
	: >"$W/$n.out"
	ip netns exec client bash -c '
		exec 3<>"/dev/tcp/'"$VIP"'/7000" || { echo "connect -> ERR" >>"$2"; exit 1; }
		while read -r cmd <"$1"; do
			[ "$cmd" = quit ] && exit 0
			if ! echo "$cmd" >&3 2>/dev/null; then echo "$cmd -> ERR write" >>"$2"
			elif read -r -t 3 r <&3; then echo "$cmd -> $r" >>"$2"
			else echo "$cmd -> TIMEOUT" >>"$2"; fi
		done' conn "$W/$n.ctl" "$W/$n.out" >/dev/null 2>&1 &
}
conn_send() { # conn_send NAME LINE: prints the answer ("rs1 LINE"), TIMEOUT or ERR
	local n=$1 line=$2 r
	timeout 2 sh -c 'echo "$1" >"$2"' x "$line" "$W/$n.ctl" || { echo "ERR (client gone)"; return; }
	for _ in $(seq 60); do
		r=$(grep -m1 "^$line -> " "$W/$n.out") && { echo "${r#* -> }"; return; }
		sleep 0.1
	done
	echo "ERR (no result)"
}
conn_close() { timeout 2 sh -c 'echo quit >"$1"' x "$W/$1.ctl"; }
only() { # only WANT LIST...: every item equals WANT
	local want=$1 x; shift
	for x in "$@"; do [ "$x" = "$want" ] || return 1; done
}
other() { [ "$1" = rs1 ] && echo rs2 || echo rs1; }

# ==================================================================================================
t_begin=$(now_ms)
if ! ok topology "client, director, rs1, rs2 namespaces on a bridge; ip_vs loaded" setup; then
	finish
fi

# 1. keepalived first, agents not running: no server may be in rotation.
start_keepalived inhibit
sleep 3
w1=$(weight 80 rs1) w2=$(weight 80 rs2)
if [ "$w1" != 1 ] && [ "$w2" != 1 ]; then
	pass no-agent-no-rotation "without dsr-agent the checks fail: rs1 weight $w1, rs2 weight $w2 on :80"
else
	fail no-agent-no-rotation "a server is in rotation before its agent runs: rs1 $w1, rs2 $w2"
fi

# 2. real servers: services, then `dsr-agent run`.
for ns in rs1 rs2; do start_services "$ns"; done
t0=$(now_ms)
for ns in rs1 rs2; do start_agent "$ns"; done
for ns in rs1 rs2; do
	ok "agent-up-$ns" "dsr-agent run on $ns: /healthz 200 from the director" wait_healthz "$ns" 200 60 ||
		infofile "$W/$ns/agent.log"
done
metric agents_start_to_healthy_ms $(( $(now_ms) - t0 ))
for ns in rs1 rs2; do
	ok "vip-on-lo-$ns" "$VIP/32 on lo of $ns, arp_ignore=1 arp_announce=2" nsx "$ns" sh -c "
		ip -o -4 addr show dev lo | grep -q ' $VIP/32 ' &&
		[ \$(cat /proc/sys/net/ipv4/conf/all/arp_ignore) -ge 1 ] && [ \$(cat /proc/sys/net/ipv4/conf/all/arp_announce) -ge 2 ]"
done

# 3. keepalived's checks pass: both servers, both services, configured weight.
allin=1
for port in 80 7000; do
	for ns in rs1 rs2; do
		if ms=$(wait_weight "$port" "$ns" 1 20); then
			metric "ipvs_in_ms_${ns}_$port" "$ms"
		else
			allin=0; info "$ms"
		fi
	done
done
if [ "$allin" = 1 ]; then
	pass ipvs-both "ipvsadm -Ln lists rs1 and rs2 with weight 1 on $VIP:80 and :7000 (Route = DR)"
	nsx dir ipvsadm -Ln -t "$VIP:80" | grep -q 'Route' || fail ipvs-dr "forwarding method is not Route"
else
	fail ipvs-both "not both servers in IPVS"; ipvs_dump; infofile "$W/keepalived-inhibit.log"
fi
metric ipvs_both_in_after_agents_ms $(( $(now_ms) - t0 ))

# 4. clients reach both through the VIP, and replies bypass the director (DR).
mapfile -t got < <(who_http 12)
n1=$(printf '%s\n' "${got[@]}" | grep -c '^rs1$') n2=$(printf '%s\n' "${got[@]}" | grep -c '^rs2$')
nerr=$(( ${#got[@]} - n1 - n2 ))
if [ "$n1" -gt 0 ] && [ "$n2" -gt 0 ] && [ "$nerr" = 0 ]; then
	pass vip-reaches-both "12 HTTP requests to $VIP: rs1 $n1, rs2 $n2, errors 0"
else
	fail vip-reaches-both "12 HTTP requests to $VIP: rs1 $n1, rs2 $n2, other $nerr (${got[*]})"
fi
stats=$(nsx dir ipvsadm -Ln --stats --exact -t "$VIP:80" | awk '/^TCP/ { print $4, $5 }')
read -r inpkts outpkts <<<"$stats"
if [ "${inpkts:-0}" -gt 0 ] && [ "${outpkts:-x}" = 0 ]; then
	pass dr-replies-bypass "IPVS stats for :80: InPkts $inpkts, OutPkts $outpkts (replies went client-ward from the real servers)"
else
	fail dr-replies-bypass "IPVS stats for :80: InPkts ${inpkts:-?}, OutPkts ${outpkts:-?}"
fi

# 5. ARP: only the director answers for the VIP; the client's neighbour entry is the director's.
dmac=$(mac dir) m1=$(mac rs1) m2=$(mac rs2)
info "MACs: dir $dmac rs1 $m1 rs2 $m2"
# arping -b: keep broadcasting (it would switch to unicast to the first replier).
arp_macs() { nsx client arping -b -c 3 -I eth0 "$1" 2>&1 | grep -o '\[[0-9A-Fa-f:]*\]' | tr -d '[]' | tr 'A-F' 'a-f' | sort -u; }
nsx client ip neigh flush dev eth0
mapfile -t rmacs < <(arp_macs "$VIP")
if [ "${#rmacs[@]}" = 1 ] && [ "${rmacs[0]}" = "$dmac" ]; then
	pass arp-only-director "arping $VIP from the client: replies only from the director ($dmac)"
else
	fail arp-only-director "arping $VIP: replies from [${rmacs[*]}], want only the director $dmac (rs1 $m1, rs2 $m2)"
fi
# Control: the same arping sees a real server when it should answer (its own IP).
mapfile -t cmacs < <(arp_macs "${RSIP[rs1]}")
if [ "${cmacs[*]}" = "$m1" ]; then
	pass arp-control "arping ${RSIP[rs1]} (rs1's own address) is answered by rs1 ($m1): the probe sees real servers"
else
	fail arp-control "arping ${RSIP[rs1]}: replies from [${cmacs[*]}], want $m1"
fi
nsx client ip neigh flush dev eth0
nsx client curl -s -m 3 -o /dev/null "http://$VIP/"
nmac=$(nsx client ip neigh show "$VIP" dev eth0 | awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1) }')
if [ "$nmac" = "$dmac" ]; then
	pass neigh-director "client's neighbour entry for $VIP is the director's MAC ($nmac)"
else
	fail neigh-director "client's neighbour entry for $VIP is '$nmac', want the director's $dmac"
fi

# 6. A VIP deleted by hand is repaired before keepalived notices: sample
# rs1's weight every 0.1 s while the VIP is deleted and repaired.
# The sampler runs in the director's namespace as one process (an `ip netns
# exec` per sample is slow under TCG); the repair time comes from the kernel's
# own address events in rs1 (`ip monitor`, timestamps of the delete and re-add).
: >"$W/samples"
klines=$(wc -l <"$W/keepalived-inhibit.log")
# Each sample: "MS WEIGHT" (ms since the epoch). One process per sample
# (ipvsadm; time and parsing in bash itself): spawning is what is slow under TCG.
ip netns exec dir bash -c '
	ms() { local t=${EPOCHREALTIME/./}; echo "${t:0:-3}"; }
	end=$(( $(ms) + 8000 ))
	re="-> $2:80 +Route +([0-9]+) "
	while [ "$(ms)" -lt "$end" ]; do
		out=$(ipvsadm -Ln -t "$1:80")
		w=absent
		[[ $out =~ $re ]] && w=${BASH_REMATCH[1]}
		echo "$(ms) $w"
	done' sampler "$VIP" "${RSIP[rs1]}" >"$W/samples" 2>&1 &
spid=$!
ip netns exec rs1 ip -ts monitor address >"$W/addrmon" 2>&1 &
mpid=$!
sleep 1
t_del=$(now_ms)
nsx rs1 ip addr del "$VIP/32" dev lo
back=""
for _ in $(seq 50); do
	if nsx rs1 ip -o -4 addr show dev lo | grep -q " $VIP/32 "; then back=1; break; fi
	sleep 0.1
done
wait "$spid"
kill "$mpid" 2>/dev/null; wait "$mpid" 2>/dev/null
nsamp=$(wc -l <"$W/samples") nbad=$(awk '$2 != "1"' "$W/samples" | wc -l)
# Coverage: the largest gap between samples, and how long after the delete
# the last one was taken. keepalived needs a failed GET and a failed retry
# (about 2 s) to act, and an inhibited server stays at weight 0 for at least
# a delay_loop (1 s): samples at most 1 s apart over 4 s after the delete
# would see it.
read -r maxgap tail_ms < <(awk -v d="$t_del" 'NR > 1 && $1 - p > g { g = $1 - p } { p = $1 } END { print g + 0, p - d }' "$W/samples")
# `ip -ts monitor` lines: "[2026-...T22:50:07.374413] Deleted 1: lo inet VIP/32 ..." then
# "[...] 1: lo inet VIP/32 ...": the repair time is the gap between the two
# events (as `ip monitor` received them; under TCG an upper bound).
rep=$(awk -v vip=" $VIP/32 " '
	function t(s,  a) { s = substr($1, 13, 15); split(s, a, ":"); return a[1] * 3600 + a[2] * 60 + a[3] }
	index($0, vip) && / Deleted / { del = t(); next }
	index($0, vip) && del != "" && add == "" { add = t() }
	END { if (del != "" && add != "") printf "%d", (add - del) * 1000 }' "$W/addrmon")
if [ -n "$back" ] && [ -n "$rep" ]; then
	pass vip-repaired "ip addr del $VIP/32 dev lo on rs1: re-added by the agent ${rep} ms later (ip -ts monitor)"
	metric vip_repair_ms "$rep"
else
	fail vip-repaired "the VIP deleted on rs1 was not back within 5 s"
	infofile "$W/addrmon" 10; infofile "$W/rs1/agent.log"
fi
knew=$(tail -n "+$((klines + 1))" "$W/keepalived-inhibit.log" | grep -c "${RSIP[rs1]}")
# Unnoticed: keepalived logged nothing about rs1 (a failed GET, even one
# before its retry, is logged) and rs1 stayed at weight 1 in every sample.
if [ "$nbad" = 0 ] && [ "$knew" = 0 ] && [ "$nsamp" -ge 4 ] && [ "$maxgap" -le 1000 ] && [ "$tail_ms" -ge 4000 ]; then
	pass vip-repair-unnoticed "rs1 weight 1 in all $nsamp ipvsadm samples (largest gap $maxgap ms, last $tail_ms ms after the delete); keepalived logged nothing about rs1"
else
	fail vip-repair-unnoticed "$nsamp samples, $nbad not weight 1 ($(awk '{ print $2 }' "$W/samples" | sort | uniq -c | tr -s ' \n' ' ')), largest gap $maxgap ms (want <= 1000), last $tail_ms ms after the delete (want >= 4000); keepalived log lines about rs1: $knew"
fi
if [ "$knew" != 0 ]; then
	tail -n "+$((klines + 1))" "$W/keepalived-inhibit.log" >"$W/k.tail"; infofile "$W/k.tail" 10
fi

# 7. drain / undrain (inhibit_on_failure: weight 0, then back to 1).
t0=$(now_ms)
agent rs1 drain >"$W/drain.out" 2>&1 || { fail drain-cmd "dsr-agent drain failed"; infofile "$W/drain.out"; }
if ms=$(wait_weight 80 rs1 0 10); then
	pass drain-out "dsr-agent drain on rs1: weight 0 in IPVS after $ms ms (delay_loop 1 s, retry 1)"
	metric drain_to_weight0_ms "$ms"
else
	fail drain-out "$ms"; ipvs_dump
fi
mapfile -t got < <(who_http 6)
if only rs2 "${got[@]}"; then pass drain-new-elsewhere "6 new requests while rs1 drained: all rs2"
else fail drain-new-elsewhere "6 new requests while rs1 drained: ${got[*]}"; fi
t0=$(now_ms)
agent rs1 undrain >"$W/drain.out" 2>&1 || { fail undrain-cmd "dsr-agent undrain failed"; infofile "$W/drain.out"; }
if ms=$(wait_weight 80 rs1 1 10); then
	pass undrain-back "dsr-agent undrain on rs1: weight 1 again after $ms ms"
	metric undrain_to_weight1_ms "$ms"
else
	fail undrain-back "$ms"; ipvs_dump
fi
mapfile -t got < <(who_http 6)
if printf '%s\n' "${got[@]}" | grep -q '^rs1$'; then pass undrain-serves "after undrain rs1 answers again (${got[*]})"
else fail undrain-serves "after undrain: ${got[*]}"; fi

# 8. Graceful drain: an established connection to the drained server keeps
# working while new connections go elsewhere (inhibit_on_failure -> weight 0).
# graceful VARIANT: prints "SERVER FIRST SECOND NEW..." for the report.
graceful() {
	local variant=$1 want_gone=$2 first srv second ms rest
	conn_open "c-$variant"
	first=$(conn_send "c-$variant" one)
	srv=${first%% *}
	if [ "$srv" != rs1 ] && [ "$srv" != rs2 ]; then
		fail "graceful-$variant" "long-lived connection to $VIP:7000 did not work: $first"
		conn_close "c-$variant"
		return
	fi
	agent "$srv" drain >/dev/null 2>&1
	if ! ms=$(wait_weight 7000 "$srv" "$want_gone" 10); then
		fail "graceful-$variant" "drained $srv did not leave :7000: $ms"
		conn_close "c-$variant"; agent "$srv" undrain >/dev/null 2>&1
		return
	fi
	info "$variant: $srv drained, out of IPVS :7000 (weight $want_gone) after $ms ms; ActiveConn $(nsx dir ipvsadm -Ln -t "$VIP:7000" | awk -v rs="${RSIP[$srv]}:7000" '$2 == rs { print $5 }')"
	sleep 1
	second=$(conn_send "c-$variant" two)
	mapfile -t rest < <(who_line 4)
	echo "$srv|$first|$second|${rest[*]}"
	conn_close "c-$variant"
	agent "$srv" undrain >/dev/null 2>&1
	wait_weight 7000 "$srv" 1 10 >/dev/null || info "$variant: $srv did not come back after undrain"
	wait_weight 80 "$srv" 1 10 >/dev/null || true
}
IFS='|' read -r srv first second rest <<<"$(graceful inhibit 0)"
if [ -n "$srv" ]; then
	info "inhibit_on_failure: established conn to $srv: before drain '$first', after drain '$second'; new connections: $rest"
	if [ "$second" = "$srv two" ]; then
		pass graceful-established "inhibit_on_failure: the established connection to drained $srv still answers ('$second')"
	else
		fail graceful-established "inhibit_on_failure: the established connection to drained $srv got '$second'"
	fi
	# shellcheck disable=SC2086
	if only "$(other "$srv")" $rest; then
		pass graceful-new-elsewhere "new connections while $srv drained: all $(other "$srv") ($rest)"
	else
		fail graceful-new-elsewhere "new connections while $srv drained: $rest"
	fi
fi

# 9. A stopped agent takes its server out (and a restarted one brings it back).
stop_agent rs2
if ms=$(wait_weight 80 rs2 0 10); then
	pass agent-stopped "dsr-agent run on rs2 stopped (SIGTERM): weight 0 after $ms ms"
	metric agent_stop_to_weight0_ms "$ms"
else
	fail agent-stopped "$ms"; ipvs_dump
fi
nsx rs2 ip -o -4 addr show dev lo | grep -q " $VIP/32 " &&
	info "rs2's VIP stays on lo while its agent is stopped (stop leaves the host configured)"
start_agent rs2
if ms=$(wait_weight 80 rs2 1 30) && kill -0 "${AGENTPID[rs2]}" 2>/dev/null; then
	pass agent-restarted "dsr-agent run on rs2 started again: weight 1 after $ms ms"
else
	fail agent-restarted "$ms (agent pid ${AGENTPID[rs2]} $(kill -0 "${AGENTPID[rs2]}" 2>/dev/null && echo running || echo exited))"; infofile "$W/rs2/agent.log"
fi

# 10. Negative control: keepalived's default (no inhibit_on_failure) removes a
# failing server from IPVS, and the established connection to it is cut. This
# is why docs/interop.md asks for inhibit_on_failure.
stop_keepalived
start_keepalived remove
okr=1
for ns in rs1 rs2; do wait_weight 7000 "$ns" 1 20 >/dev/null || okr=0; done
if [ "$okr" = 1 ]; then pass remove-config-up "keepalived without inhibit_on_failure: both servers back in IPVS"
else fail remove-config-up "keepalived without inhibit_on_failure: not both servers in IPVS"; ipvs_dump; fi
IFS='|' read -r srv first second rest <<<"$(graceful remove absent)"
if [ -n "$srv" ]; then
	info "default (removal): established conn to $srv: before drain '$first', after drain '$second'; new connections: $rest"
	if [ "$second" != "$srv two" ]; then
		pass control-removal-cuts "negative control: keepalived's default removes drained $srv and its established connection is cut ('$second')"
	else
		fail control-removal-cuts "negative control: with removal the established connection still answered ('$second'); docs/interop.md's reason for inhibit_on_failure does not hold here"
	fi
fi

# 11. MISC_CHECK variant: keepalived runs `dsr-agent check HOST:PORT` (exit 0 up, 1 down).
if "$AGENT" check --help >/dev/null 2>&1; then
	stop_keepalived
	start_keepalived misc
	okm=1
	for ns in rs1 rs2; do wait_weight 80 "$ns" 1 20 >/dev/null || okm=0; done
	if [ "$okm" = 1 ]; then pass misc-up "MISC_CHECK \"dsr-agent check HOST:$HPORT\": both servers in IPVS"
	else fail misc-up "MISC_CHECK: not both servers in IPVS"; ipvs_dump; infofile "$W/keepalived-misc.log"; fi
	agent rs1 drain >/dev/null 2>&1
	if ms=$(wait_weight 80 rs1 0 10); then pass misc-drain "MISC_CHECK: drained rs1 weight 0 after $ms ms"; metric misc_drain_to_weight0_ms "$ms"
	else fail misc-drain "$ms"; fi
	agent rs1 undrain >/dev/null 2>&1
	if ms=$(wait_weight 80 rs1 1 10); then pass misc-undrain "MISC_CHECK: undrained rs1 weight 1 after $ms ms"
	else fail misc-undrain "$ms"; fi
else
	skip misc-check "this dsr-agent has no 'check' command (dsr-agent check --help fails): MISC_CHECK variant not run"
fi

# 12. dsr-agent probe (issue 20) from the director, L2: each fault on rs1 alone
# gives its verdict while rs2 stays up; then keepalived runs the probe as
# MISC_CHECK (misc_dynamic) and takes out exactly rs1. "probe-view" info lines:
# what rs1's own /healthz (agent running) or `dsr-agent status` (agent stopped) said.
if "$AGENT" probe --help >/dev/null 2>&1; then
	stop_keepalived
	declare -A PEXIT=([up]=0 [refused]=10 [unreachable]=11 [timeout]=12 [wrong-source]=13 [mss-too-large]=14 [arp-flux]=15)
	probe_rs() { # probe_rs NS PORT: prints "EXIT VERDICT EXPLANATION"
		local out rc
		out=$(nsx dir "$AGENT" probe "$VIP:$2" --real "${RSIP[$1]}" --timeout 1s 2>&1)
		rc=$?
		echo "$rc ${out%%:*} $out"
	}
	pcheck() { # pcheck NAME WANT PORT: rs1's verdict is WANT (and its exit code), rs2's up
		local r1 r2
		r1=$(probe_rs rs1 "$3")
		r2=$(probe_rs rs2 "$3")
		PV=$(echo "$r1" | cut -d' ' -f2)
		if [ "$PV" = "$2" ] && [ "${r1%% *}" = "${PEXIT[$2]}" ] && [ "${r2%% *}" = 0 ]; then
			pass "$1" "rs1: $(echo "$r1" | cut -d' ' -f3- | cut -c1-160) | rs2: $(echo "$r2" | cut -d' ' -f2)"
		else fail "$1" "want rs1 $2 (exit ${PEXIT[$2]}), rs2 up; rs1: $r1 | rs2: $r2"; fi
	}
	pview() {
		local hz st
		hz=$(healthz rs1)
		agent rs1 status >/dev/null 2>&1
		st=$?
		info "probe-view l2 $1: rs1 probe=$PV healthz=${hz:-none} status-exit=$st"
	}
	pfault_nft() {
		printf 'table inet probefault { chain in { type filter hook input priority 0; ip daddr %s tcp dport 80 %s; }; }\n' "$VIP" "$1" |
			nsx rs1 nft -f - || info "probe: nft $1 on rs1 failed"
	}
	t0=$(now_ms)
	ip netns exec rs1 busybox httpd -f -p "${RSIP[rs1]}:8081" -h "$W/rs1/www" >>"$W/rs1/httpd.log" 2>&1 &
	ip netns exec rs2 busybox httpd -f -p 8081 -h "$W/rs2/www" >>"$W/rs2/httpd.log" 2>&1 &
	pcheck probe-l2-up up 80
	pcheck probe-l2-real-ip-only refused 8081
	pview service-on-real-ip-only
	pfault_nft reject
	pcheck probe-l2-reject unreachable 80
	pview nft-reject
	nsx rs1 nft delete table inet probefault
	pfault_nft drop
	pcheck probe-l2-drop timeout 80
	pview nft-drop
	nsx rs1 nft delete table inet probefault
	stop_agent rs1
	nsx rs1 ip addr del $VIP/32 dev lo
	pcheck probe-l2-vip-deleted timeout 80
	pview "vip-deleted(agent-stopped)"
	nsx rs1 ip addr add $VIP/32 dev lo label lo:dsr0
	ai=$(nsx rs1 cat /proc/sys/net/ipv4/conf/all/arp_ignore)
	ae=$(nsx rs1 cat /proc/sys/net/ipv4/conf/eth0/arp_ignore)
	nsx rs1 sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.eth0.arp_ignore=0
	pcheck probe-l2-arp-flux arp-flux 80
	pview "arp_ignore-0(agent-stopped)"
	nsx rs1 sysctl -qw net.ipv4.conf.all.arp_ignore="$ai" net.ipv4.conf.eth0.arp_ignore="$ae"
	start_agent rs1
	wait_healthz rs1 200 30 >/dev/null
	metric probe_l2_faults_ms $(( $(now_ms) - t0 ))

	# keepalived with the probe as MISC_CHECK (misc_dynamic: 0 up, 1 down).
	kconf misc | sed "s|misc_path \"$AGENT check \([0-9.]*\):$HPORT\"|misc_path \"$AGENT probe $VIP:PORT --real \1 --timeout 1s --misc-dynamic\"\n\t\t\tmisc_dynamic|" |
		awk -v vip="$VIP" '/^virtual_server/ { port = $3 } { gsub(vip ":PORT", vip ":" port); print }' >"$W/keepalived-probe.conf"
	ip netns exec dir keepalived -C -n -l -D -f "$W/keepalived-probe.conf" -p "$W/k.pid" -c "$W/kc.pid" -r "$W/kv.pid" \
		>>"$W/keepalived-probe.log" 2>&1 &
	KPID=$!
	okp=1
	for ns in rs1 rs2; do wait_weight 80 "$ns" 1 20 >/dev/null || okp=0; done
	if [ "$okp" = 1 ]; then pass probe-keepalived-up "MISC_CHECK \"dsr-agent probe $VIP:80 --real RS --misc-dynamic\" (misc_dynamic): both servers weight 1"
	else fail probe-keepalived-up "not both servers weight 1"; ipvs_dump; infofile "$W/keepalived-probe.log"; fi
	pfault_nft reject
	if ms=$(wait_weight 80 rs1 0 15) && [ "$(weight 80 rs2)" = 1 ]; then
		pass probe-keepalived-fault "nft reject on rs1's VIP:80 (its /healthz says $(healthz rs1)): keepalived set rs1 to weight 0 after $ms ms, rs2 stays 1"
	else fail probe-keepalived-fault "$ms; rs2 weight $(weight 80 rs2)"; ipvs_dump; infofile "$W/keepalived-probe.log" 10; fi
	nsx rs1 nft delete table inet probefault
	if ms=$(wait_weight 80 rs1 1 15); then pass probe-keepalived-back "fault removed: rs1 weight 1 again after $ms ms"
	else fail probe-keepalived-back "$ms"; fi
else
	skip probe-l2 "this dsr-agent has no 'probe' command"
fi

stop_keepalived
for ns in rs1 rs2; do [ -n "${AGENTPID[$ns]:-}" ] && stop "${AGENTPID[$ns]}" 10 >/dev/null; done
removed() { agent "$1" remove >/dev/null && ! nsx "$1" ip -o -4 addr show dev lo | grep " $VIP/32 "; }
for ns in rs1 rs2; do ok "remove-$ns" "dsr-agent remove on $ns: exit 0, VIP gone from lo" removed "$ns"; done
metric interop_in_vm_ms $(( $(now_ms) - t_begin ))
finish
