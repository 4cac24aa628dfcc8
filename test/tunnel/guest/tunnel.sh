#!/bin/bash
# In-VM side of `make test-tunnel` (copied to the payload disk as phases.sh).
#
# 1. tunnel.test (the tunnel package's kernel tests) with DSR_TUNNEL_REQUIRE=1.
# 2. L3 DSR across a router, network namespaces:
#      client 10.77.1.10 -- router (10.77.1.1 / 10.77.2.1 / 10.77.3.1, forwarding)
#      director 10.77.2.2, VIP 10.77.2.100/32 on eth0, IPVS lb_kind TUN (ipvsadm -i)
#      rs1 10.77.3.21, rs2 10.77.3.22: another subnet; VIP on lo, tunl0 up,
#      busybox httpd :80, `dsr-agent run` (health :8558, agent-check :3333)
#    IPv6 beside it on the same cables: client fd77:1::10, router fd77:1::1 /
#    fd77:2::1 / fd77:3::1 (r-s1), fd77:3::2 (r-s2), director fd77:2::2 with
#    VIP6 fd77:2::100/128, rs1 fd77:3::21, rs2 fd77:3::22; IPVS [VIP6]:80 with
#    -i to the servers' IPv6 addresses (IPv6 in IPv6, then GUE over IPv6); the
#    agents' config has both VIPs (VIP6 on lo, ip6tnl0 up, ip -6 fou, ip6 clamp).
#    MANUAL=1 (DSR_TUNNEL_MANUAL): the agent runs in loopback mode (VIP on lo,
#    arp sysctls, health) and this script does the tunnel part by hand:
#    tunl0 up, fou port, rp_filter, the MSS clamp. Otherwise the agent runs
#    with mode: tunnel and must do all of it.
# Markers: "@@BT PASS|FAIL|SKIP name detail", "@@BT METRIC", "@@BT INFO", "@@BT END".
# SC2086: the addresses and ports are constants of this script.
# shellcheck disable=SC2317,SC2016,SC2086
set -u
P=/run/boot-test/payload
W=/run/tunnel
mkdir -p "$W"
# shellcheck source=../../boot/guest/lib.sh
. "$P/lib.sh"
check() { ok "$@"; } # this script's name for ok

MANUAL=$(cat "$P/manual" 2>/dev/null || echo 0)
MSS=1400
GUEPORT=6080
VIP=10.77.2.100
DIR_IP=10.77.2.2
CLIENT_IP=10.77.1.10
# Client ports for requests that must be new to the director: below the
# kernel's ephemeral range, so no earlier connection used them.
FRESHPORT=20000
declare -A RSIP=([rs1]=10.77.3.21 [rs2]=10.77.3.22)
VIP6=fd77:2::100
DIR_IP6=fd77:2::2
CLIENT_IP6=fd77:1::10
declare -A RSIP6=([rs1]=fd77:3::21 [rs2]=fd77:3::22)
AGENT=/usr/local/bin/dsr-agent
install -m 0755 "$P/dsr-agent" "$AGENT"
install -m 0755 "$P/tunnel.test" /usr/local/bin/tunnel.test
install -m 0755 "$P/agent.test" /usr/local/bin/agent.test
info "mode: $([ "$MANUAL" = 1 ] && echo "MANUAL (tunnel steps by hand, agent in loopback mode)" || echo "agent (mode: tunnel)")"
info "kernel $(uname -r); $(ipvsadm --version 2>&1 | head -n1); dsr-agent $("$AGENT" --version 2>&1 | head -n1)"
t_begin=$(now_ms)

# --- 1. the tunnel package's kernel tests ----------------------------------------
t0=$(now_ms)
( cd /tmp && DSR_TUNNEL_REQUIRE=1 DSR_AGENT_REQUIRE_ROOT=1 /usr/local/bin/tunnel.test -test.v -test.count=1 -test.timeout 120s ) >"$W/gotest.log" 2>&1
gorc=$?
# The agent's mode tunnel tests (each in its own namespace, like the rest).
( cd /tmp && DSR_TUNNEL_REQUIRE=1 DSR_AGENT_REQUIRE_ROOT=1 /usr/local/bin/agent.test -test.v -test.count=1 -test.timeout 180s -test.run 'Tunnel' ) >>"$W/gotest.log" 2>&1 || gorc=$?
metric go_tests_ms $(( $(now_ms) - t0 ))
gomsg() { # the log lines of one test (they come before its --- FAIL line)
	awk -v n="$1" '$0 == "=== RUN   " n { on = 1; next } on && /^(=== RUN|--- |PASS|FAIL)/ { on = 0 } on' "$W/gotest.log"
}
while read -r verdict name secs; do
	case $verdict in
	PASS) pass "go-$name" "tunnel.test $name $secs" ;;
	FAIL) fail "go-$name" "tunnel.test $name $secs: $(gomsg "$name" | tr -s ' \n' ' ' | cut -c1-400)" ;;
	SKIP) fail "go-$name" "tunnel.test $name skipped, and DSR_TUNNEL_REQUIRE=1: $(grep -A1 -- "--- SKIP: $name" "$W/gotest.log" | tail -n1)" ;;
	esac
done < <(sed -n 's/^--- \(PASS\|FAIL\|SKIP\): \([^ ]*\) \(.*\)$/\1 \2 \3/p' "$W/gotest.log")
grep -o 'METRIC [a-z_]* [0-9]*.*' "$W/gotest.log" | while read -r _ n v rest; do metric "$n" "$v"; info "fou poll: $n $v $rest"; done
grep -E 'ip link del tunl0:' "$W/gotest.log" | head -n1 | sed 's/^ *//' | while read -r l; do info "$l"; done
[ "$gorc" = 0 ] || { fail go-tests "tunnel.test exited $gorc"; infofile "$W/gotest.log" 20; }

# Apply from clean, mode tunnel beside loopback in the same run (bench/RESULTS.md).
if [ "$MANUAL" != 1 ]; then
	( cd /tmp && DSR_TUNNEL_REQUIRE=1 /usr/local/bin/agent.test -test.run '^$' -test.bench ApplyFromCleanTunnel -test.benchtime 5x -test.count 3 ) >"$W/bench.log" 2>&1
	grep '^BenchmarkApplyFromCleanTunnel' "$W/bench.log" | while read -r name _ ns _; do
		info "bench: $name $ns ns/op"
	done
fi

# --- 2. topology -------------------------------------------------------------------
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
link() { # link NS1 DEV1 ADDR1 NS2 DEV2 ADDR2: a veth cable
	ip link add "$2" netns "$1" type veth peer name "$5" netns "$4" || return 1
	nsx "$1" ip addr add "$3" dev "$2" && nsx "$1" ip link set "$2" up &&
		nsx "$4" ip addr add "$6" dev "$5" && nsx "$4" ip link set "$5" up
}
setup() {
	modprobe ip_vs && modprobe ip_vs_rr || return 1
	local ns
	for ns in client router dir rs1 rs2; do
		ip netns add "$ns" && nsx "$ns" ip link set lo up || return 1
	done
	link client eth0 $CLIENT_IP/24 router r-c 10.77.1.1/24 &&
		link dir eth0 $DIR_IP/24 router r-d 10.77.2.1/24 &&
		link rs1 eth0 ${RSIP[rs1]}/24 router r-s1 10.77.3.1/24 &&
		link rs2 eth0 ${RSIP[rs2]}/24 router r-s2 10.77.3.2/24 || return 1
	# Two router ports in 10.77.3.0/24 (one per server cable): host routes.
	nsx router ip route del 10.77.3.0/24 dev r-s2 2>/dev/null
	nsx router ip route replace ${RSIP[rs1]}/32 dev r-s1
	nsx router ip route replace ${RSIP[rs2]}/32 dev r-s2
	nsx router sysctl -qw net.ipv4.ip_forward=1
	nsx dir sysctl -qw net.ipv4.ip_forward=1
	# The router forwards replies sourced from the VIP out of a server port: it
	# must not filter them by reverse path (a real edge would allow the VIP).
	local d
	for d in all default r-c r-d r-s1 r-s2; do nsx router sysctl -qw "net.ipv4.conf.$d.rp_filter=0"; done
	nsx client ip route add default via 10.77.1.1
	nsx dir ip route add default via 10.77.2.1
	nsx rs1 ip route add default via 10.77.3.1
	nsx rs2 ip route add default via 10.77.3.2
	nsx dir ip addr add $VIP/32 dev eth0
	# IPv6 on the same cables (nodad: no 1-2 s of tentative addresses). The
	# router's two ports in fd77:3::/64 get no prefix route: host routes.
	# shellcheck disable=SC2086 # $4: more words for ip addr add
	addr6() { nsx "$1" ip -6 addr add "$3" dev "$2" nodad ${4:-}; }
	addr6 client eth0 $CLIENT_IP6/64 && addr6 router r-c fd77:1::1/64 &&
		addr6 dir eth0 $DIR_IP6/64 && addr6 router r-d fd77:2::1/64 &&
		addr6 rs1 eth0 ${RSIP6[rs1]}/64 && addr6 router r-s1 fd77:3::1/64 noprefixroute &&
		addr6 rs2 eth0 ${RSIP6[rs2]}/64 && addr6 router r-s2 fd77:3::2/64 noprefixroute || return 1
	nsx router ip -6 route replace ${RSIP6[rs1]}/128 dev r-s1 &&
		nsx router ip -6 route replace ${RSIP6[rs2]}/128 dev r-s2 || return 1
	nsx router sysctl -qw net.ipv6.conf.all.forwarding=1
	nsx dir sysctl -qw net.ipv6.conf.all.forwarding=1
	nsx client ip -6 route add default via fd77:1::1 &&
		nsx dir ip -6 route add default via fd77:2::1 &&
		nsx rs1 ip -6 route add default via fd77:3::1 &&
		nsx rs2 ip -6 route add default via fd77:3::2 || return 1
	# The VIP deprecated (preferred_lft 0): still an address the director
	# receives on, but never a source it picks. Otherwise source selection
	# may choose it as the outer source of the tunnelled packets (the VIP and
	# fd77:2::2 tie on every rule), and the real server's ip6tnl0 drops a
	# packet whose outer source is one of its own addresses
	# (ip6_tnl_rcv_ctl): the VIP is, on lo.
	addr6 dir eth0 $VIP6/128 || return 1
	local src_pref
	src_pref=$(nsx dir ip -6 route get ${RSIP6[rs1]} | grep -o 'src [^ ]*')
	nsx dir ip -6 addr change $VIP6/128 dev eth0 nodad preferred_lft 0 || return 1
	info "director: source toward ${RSIP6[rs1]} with the VIP preferred: $src_pref; deprecated: $(nsx dir ip -6 route get ${RSIP6[rs1]} | grep -o 'src [^ ]*')"
	# Counters: replies from the VIP crossing the router from a server port,
	# and (must stay 0) any VIP-sourced packet the director sees.
	nsx router nft -f - <<EOF || return 1
table ip watch {
	chain fw {
		type filter hook forward priority 0
		iifname "r-s*" ip saddr $VIP tcp sport 80 counter
	}
}
table ip6 watch {
	chain fw {
		type filter hook forward priority 0
		iifname "r-s*" ip6 saddr $VIP6 tcp sport 80 counter
	}
}
EOF
	nsx dir nft -f - <<EOF || return 1
table ip watch {
	chain pre {
		type filter hook prerouting priority -300
		ip saddr $VIP tcp sport 80 counter
	}
	chain out {
		type filter hook output priority -300
		ip saddr $VIP tcp sport 80 counter
	}
}
table ip6 watch {
	chain pre {
		type filter hook prerouting priority -300
		ip6 saddr $VIP6 tcp sport 80 counter
	}
	chain out {
		type filter hook output priority -300
		ip6 saddr $VIP6 tcp sport 80 counter
	}
}
EOF
	# The client counts SYN-ACKs from the VIP, and those carrying MSS $MSS.
	nsx client nft -f - <<EOF || return 1
table ip watch {
	chain in {
		type filter hook input priority 0
		ip saddr $VIP tcp flags & (syn | ack) == syn | ack counter
		ip saddr $VIP tcp flags & (syn | ack) == syn | ack tcp option maxseg size $MSS counter
	}
}
table ip6 watch {
	chain in {
		type filter hook input priority 0
		ip6 saddr $VIP6 tcp flags & (syn | ack) == syn | ack counter
		ip6 saddr $VIP6 tcp flags & (syn | ack) == syn | ack tcp option maxseg size $MSS counter
	}
}
EOF
	for ns in rs1 rs2; do
		nsx "$ns" nft -f - <<EOF || return 1
table ip watch {
	chain in {
		type filter hook input priority -300
		ip protocol 4 counter
		udp dport $GUEPORT counter
	}
}
table ip6 watch {
	chain in {
		type filter hook input priority -300
		meta l4proto 41 counter
		udp dport $GUEPORT counter
	}
}
EOF
	done
}
check topology "client - router - director; real servers in another subnet (10.77.3.0/24, fd77:3::/64); ip_vs loaded" setup || finish
nft_counters() { nsx "$1" nft list table ${2:-ip} watch | grep -o 'packets [0-9]*' | awk '{ print $2 }' | tr '\n' ' '; }
nft_counters6() { nft_counters "$1" ip6; }

# --- director: IPVS, tunnel forwarding -------------------------------------------------
director() { # director ipip|gue
	local extra=""
	[ "$1" = gue ] && extra="--tun-type gue --tun-port $GUEPORT"
	nsx dir ipvsadm -C
	nsx dir ipvsadm -A -t $VIP:80 -s rr || return 1
	local ns
	for ns in rs1 rs2; do
		# shellcheck disable=SC2086
		nsx dir ipvsadm -a -t $VIP:80 -r "${RSIP[$ns]}" -i -w 1 $extra || return 1
	done
	# IPv6: [VIP6]:80 to the servers' IPv6 addresses, same forwarding.
	DIRECTOR6_ERR=""
	if ! DIRECTOR6_ERR=$(nsx dir ipvsadm -A -t "[$VIP6]:80" -s rr 2>&1); then
		DIRECTOR6_ERR="ipvsadm -A -t [$VIP6]:80: $DIRECTOR6_ERR"
	else
		DIRECTOR6_ERR=""
		for ns in rs1 rs2; do
			# shellcheck disable=SC2086
			out=$(nsx dir ipvsadm -a -t "[$VIP6]:80" -r "${RSIP6[$ns]}" -i -w 1 $extra 2>&1) ||
				DIRECTOR6_ERR="$DIRECTOR6_ERR ipvsadm -a -t [$VIP6]:80 -r ${RSIP6[$ns]} -i $extra: $out;"
		done
	fi
	nsx dir ipvsadm -Ln >"$W/ipvs-$1.txt"
	[ -z "$DIRECTOR6_ERR" ] || info "director $1 IPv6: $DIRECTOR6_ERR"
}

# --- real servers ------------------------------------------------------------------
rs_config() { # rs_config NS ENCAP
	if [ "$MANUAL" = 1 ]; then
		echo "mode: loopback"
	else
		echo "mode: tunnel"
		echo "tunnel: {encap: $2, port: $GUEPORT, mss: $MSS}"
	fi
	cat <<EOF
interfaces: [eth0]
vips:
  - address: $VIP
    ports: [{port: 80}]
  - address: $VIP6
    ports: [{port: 80}]
health:
  listen: ${RSIP[$1]}:8558
  agent_check: {listen: ${RSIP[$1]}:3333}
EOF
}
declare -A AGENTPID
start_agent() { # start_agent NS ENCAP
	local ns=$1
	mkdir -p "$W/$ns/state"
	rs_config "$ns" "$2" >"$W/$ns/config.yaml"
	ip netns exec "$ns" "$AGENT" --config "$W/$ns/config.yaml" --state-dir "$W/$ns/state" run >>"$W/$ns/agent.log" 2>&1 &
	AGENTPID[$ns]=$!
}
stop_agent() {
	local pid=${AGENTPID[$1]:-}
	[ -n "$pid" ] || return 0
	kill "$pid" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	AGENTPID[$1]=""
}
agent() { local ns=$1; shift; nsx "$ns" "$AGENT" --config "$W/$ns/config.yaml" --state-dir "$W/$ns/state" "$@"; }
# manual_tunnel NS ENCAP: the agent's tunnel job, by hand.
manual_tunnel() {
	local ns=$1
	modprobe ipip && modprobe ip6_tunnel && modprobe fou || return 1
	nsx "$ns" ip link set tunl0 up
	nsx "$ns" ip link set ip6tnl0 up
	# max(all, tunl0) must be 0: tunl0 has no address, and for a device
	# without one the kernel drops in loose mode (2) too (see the rp-* checks).
	nsx "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.tunl0.rp_filter=0
	if [ "$2" = gue ]; then
		nsx "$ns" ip fou show | grep -Eq "^port $GUEPORT gue *$" || nsx "$ns" ip fou add port $GUEPORT gue || return 1
		nsx "$ns" ip fou show | grep -Eq "^port $GUEPORT gue -6" || nsx "$ns" ip -6 fou add port $GUEPORT gue || return 1
	fi
	nsx "$ns" nft -f - <<EOF
table ip dsrmss {
	chain out {
		type filter hook output priority mangle
		ip saddr $VIP tcp flags & (syn | ack) == syn | ack tcp option maxseg size > $MSS tcp option maxseg size set $MSS
	}
}
table ip6 dsrmss {
	chain out {
		type filter hook output priority mangle
		ip6 saddr $VIP6 tcp flags & (syn | ack) == syn | ack tcp option maxseg size > $MSS tcp option maxseg size set $MSS
	}
}
EOF
}
start_services() {
	local ns=$1
	mkdir -p "$W/$ns/www"
	echo "$ns" >"$W/$ns/www/index.html"
	head -c 300000 /dev/urandom | base64 >"$W/$ns/www/big.txt"
	ip netns exec "$ns" busybox httpd -f -p 80 -h "$W/$ns/www" >"$W/$ns/httpd.log" 2>&1 &
}
healthz() { nsx dir curl -s -m 3 -o /dev/null -w '%{http_code}' "http://${RSIP[$1]}:8558/healthz"; }
wait_healthz() { # NS CODE SECONDS (gives up at once when the agent has exited)
	local pid
	for _ in $(seq $(( $3 * 5 ))); do
		[ "$(healthz "$1")" = "$2" ] && return 0
		pid=${AGENTPID[$1]:-}
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			echo "dsr-agent run on $1 exited: $(tail -n 3 "$W/$1/agent.log" | tr '\n' ' ')"; return 1
		fi
		sleep 0.2
	done
	echo "healthz of $1 is $(healthz "$1"), want $2"; nsx dir curl -s -m 3 "http://${RSIP[$1]}:8558/healthz"; return 1
}
agentcheck() { nsx dir timeout 3 bash -c "exec 3<>/dev/tcp/${RSIP[$1]}/3333 && read -r l <&3 && echo \"\$l\""; }
who() { # who N: N requests to the VIP; prints the answering server or ERR
	for _ in $(seq "$1"); do nsx client curl -s -m 3 "http://$VIP/" || echo ERR; done
}
whop() { # whop N [CURL-ARG...]: N requests to the VIP; prints "SERVER CLIENT-PORT" (or "ERR -") per request
	local n=$1 o
	shift
	for _ in $(seq "$n"); do
		o=$(nsx client curl -s -m 3 -w ' %{local_port}' "$@" "http://$VIP/" | tr -d '\n') || o="ERR -"
		echo "$o"
	done
}
who6() { # who6 N [TIMEOUT]: the same to [VIP6]
	for _ in $(seq "$1"); do nsx client curl -s -m "${2:-3}" -g "http://[$VIP6]/" || echo ERR; done
}
tally() { # tally WHO-OUTPUT...: "rs1 N rs2 N err N"
	local a=0 b=0 e=0 x
	for x in "$@"; do case $x in rs1) a=$((a + 1)) ;; rs2) b=$((b + 1)) ;; *) e=$((e + 1)) ;; esac; done
	echo "rs1 $a rs2 $b err $e"
}
both_no_err() { [[ $1 =~ ^rs1\ [1-9][0-9]*\ rs2\ [1-9][0-9]*\ err\ 0$ ]]; }
diag6() { # diag6: where IPv6 requests to [VIP6] got lost (info lines, on failure)
	local ns
	for ns in rs1 router; do
		info "$ns nstat: $(nsx $ns nstat -az 2>/dev/null | awk '$1 ~ /^(Ip6|Tcp|Icmp6)/ && $2 != 0 { printf "%s=%s ", $1, $2 }' | cut -c1-600)"
	done
	info "rs1 ip6tnl0: $(nsx rs1 ip -s -d link show ip6tnl0 2>&1 | tr -s ' \n' ' ' | cut -c1-500)"
	info "rs1 ip6tnl0 disable_ipv6=$(nsx rs1 cat /proc/sys/net/ipv6/conf/ip6tnl0/disable_ipv6 2>&1) forwarding=$(nsx rs1 cat /proc/sys/net/ipv6/conf/all/forwarding)"
	info "rs1 listen: $(nsx rs1 ss -ltnH 2>&1 | tr -s ' \n' ' ')"
	info "rs1 addr6: $(nsx rs1 ip -6 -o addr 2>&1 | awk '{ print $2, $4 }' | tr '\n' ' ')"
	info "rs1 route6: $(nsx rs1 ip -6 route show table all 2>&1 | grep -v '^multicast\|ff00::' | tr '\n' ';' | cut -c1-400)"
	info "rs1 neigh6: $(nsx rs1 ip -6 neigh 2>&1 | tr '\n' ';') router neigh6: $(nsx router ip -6 neigh 2>&1 | tr '\n' ';' | cut -c1-300)"
	info "rs1 clamp: $(nsx rs1 nft list table ip6 dsr-agent 2>&1 | grep -o 'counter packets [0-9]*' | tr '\n' ' ')"
	info "router route6: $(nsx router ip -6 route 2>&1 | tr '\n' ';' | cut -c1-400)"
	info "rs1 ping6 client: $(nsx rs1 ping -6 -c1 -W2 $CLIENT_IP6 2>&1 | tr '\n' ' ' | cut -c1-200)"
	info "rs1 ping6 client from the VIP: $(nsx rs1 ping -6 -c1 -W2 -I $VIP6 $CLIENT_IP6 2>&1 | tr '\n' ' ' | cut -c1-200)"
	info "dir route get ${RSIP6[rs1]}: $(nsx dir ip -6 route get ${RSIP6[rs1]} 2>&1 | tr '\n' ' ')"
}
cnt6() { nft_counters6 "$1" | awk -v i="$2" '{ print $i + 0 }'; } # cnt6 NS N: the Nth ip6 counter
# v6_round ipip|gue: the IPv6 checks of one encapsulation, through the
# director's [VIP6]:80 service. The rs counters are (next header 41, udp GUE).
v6_round() {
	local enc=$1 n=${1}6 idx=1 other=2 what="IPv6-in-IPv6 (next header 41)" otherwhat="GUE"
	[ "$enc" = gue ] && { idx=2 other=1 what="GUE over IPv6 (udp $GUEPORT)" otherwhat="bare IPv6-in-IPv6"; }
	if [ -n "$DIRECTOR6_ERR" ]; then
		local c
		for c in vip encap bypass mss; do fail "$n-$c" "the director has no IPv6 $enc service: $DIRECTOR6_ERR"; done
		return 1
	fi
	local e0 o0 r0 s0 m0 e1 o1 r1 s1 m1 got t stats dcount
	e0=$(cnt6 rs1 $idx) o0=$(cnt6 rs1 $other) r0=$(cnt6 router 1) s0=$(cnt6 client 1) m0=$(cnt6 client 2)
	mapfile -t got < <(who6 10)
	t=$(tally "${got[@]}")
	e1=$(cnt6 rs1 $idx) o1=$(cnt6 rs1 $other) r1=$(cnt6 router 1) s1=$(cnt6 client 1) m1=$(cnt6 client 2)
	if both_no_err "$t"; then pass "$n-vip" "10 HTTP requests to [$VIP6] through $what: $t"
	else fail "$n-vip" "10 requests to [$VIP6] through $what: $t (${got[*]})"; infofile "$W/ipvs-$enc.txt"; diag6; fi
	if [ $(( e1 - e0 )) -gt 0 ] && [ "$o1" = "$o0" ]; then
		pass "$n-encap" "rs1 received $(( e1 - e0 )) $what packets, no $otherwhat"
	else fail "$n-encap" "rs1: $what packets +$(( e1 - e0 )), $otherwhat +$(( o1 - o0 ))"; fi
	dcount=$(nft_counters6 dir)
	stats=$(nsx dir ipvsadm -Ln --stats --exact -t "[$VIP6]:80" | awk '/^TCP/ { print $4, $5 }')
	if [ $(( r1 - r0 )) -gt 0 ] && [ "$dcount" = "0 0 " ] && [ "${stats#* }" = 0 ]; then
		pass "$n-bypass" "replies from [$VIP6]:80 routed rs -> router -> client ($(( r1 - r0 )) packets); director saw none (ip6 counters $dcount; IPVS InPkts/OutPkts $stats)"
	else fail "$n-bypass" "router forwarded $(( r1 - r0 )) IPv6 replies; director ip6 counters '$dcount'; IPVS stats '$stats'"; fi
	if [ $(( s1 - s0 )) -gt 0 ] && [ $(( s1 - s0 )) = $(( m1 - m0 )) ]; then
		pass "$n-mss" "all $(( s1 - s0 )) SYN-ACKs from [$VIP6] carried MSS $MSS (ip6 clamp)"
	else
		fail "$n-mss" "SYN-ACKs from [$VIP6]: $(( s1 - s0 )), with MSS $MSS: $(( m1 - m0 ))"
		local ns; for ns in rs1 rs2; do info "$ns ip6 tables: $(nsx $ns nft list ruleset 2>&1 | grep -A12 '^table ip6' | tr -s '\t\n' '  ' | cut -c1-220)"; done
	fi
}

for ns in rs1 rs2; do start_services "$ns"; done
director ipip || fail director-ipip "ipvsadm failed"
t0=$(now_ms)
for ns in rs1 rs2; do
	[ "$MANUAL" = 1 ] && { manual_tunnel "$ns" ipip || fail "manual-$ns" "manual tunnel setup failed"; }
	start_agent "$ns" ipip
done
for ns in rs1 rs2; do
	check "agent-up-$ns" "dsr-agent run on $ns: /healthz 200 from the director" wait_healthz "$ns" 200 60 || infofile "$W/$ns/agent.log"
done
metric agents_start_to_healthy_ms $(( $(now_ms) - t0 ))
if ! kill -0 "${AGENTPID[rs1]}" 2>/dev/null && ! kill -0 "${AGENTPID[rs2]}" 2>/dev/null; then
	fail agents-running "no dsr-agent is running (does this binary know mode: tunnel? DSR_TUNNEL_MANUAL=1 runs the scenario without it); the remaining checks are not run"
	finish
fi
for ns in rs1 rs2; do
	# By hand: the VIP on lo and rp_filter 0. The agent: the VIP on tunl0
	# (loose rp_filter needs an address there), max(all, tunl0) not strict.
	vipdev=tunl0
	[ "$MANUAL" = 1 ] && vipdev=lo
	check "rs-setup-$ns" "$ns: tunl0 up, VIP on $vipdev, arp_ignore/announce, effective rp_filter on tunl0 not strict" nsx "$ns" bash -c "
		ip -o link show tunl0 | grep -q ',UP' || { echo tunl0 down; exit 1; }
		ip -o -4 addr show dev $vipdev | grep -q ' $VIP/32 ' || { echo no VIP on $vipdev; exit 1; }
		a=\$(cat /proc/sys/net/ipv4/conf/all/rp_filter) t=\$(cat /proc/sys/net/ipv4/conf/tunl0/rp_filter)
		m=\$(( a > t ? a : t )); echo rp_filter all=\$a tunl0=\$t max=\$m
		[ \$m != 1 ] && [ \$(cat /proc/sys/net/ipv4/conf/all/arp_ignore) -ge 1 ]"
	check "rs6-setup-$ns" "$ns: ip6tnl0 up, $VIP6/128 on lo, an ip6 MSS clamp table" nsx "$ns" bash -c "
		for _ in \$(seq 50); do ip -o link show ip6tnl0 2>/dev/null | grep -q ',UP' && break; sleep 0.1; done
		ip -o link show ip6tnl0 | grep -q ',UP' || { echo ip6tnl0 not up: \$(ip -o link show ip6tnl0 2>&1); exit 1; }
		ip -o -6 addr show dev lo | grep -q ' $VIP6/128 ' || { echo no $VIP6/128 on lo: \$(ip -o -6 addr show dev lo); exit 1; }
		t=\$(nft list tables | grep '^table ip6 ' | grep -v ' watch\$') || { echo no ip6 table besides watch: \$(nft list tables); exit 1; }
		echo \$t: \$(nft list table \${t#table } | grep -o 'maxseg size set [0-9]*' | sort -u)"
done

# --- IPIP ---------------------------------------------------------------------------
mapfile -t got < <(who 10)
t=$(tally "${got[@]}")
if both_no_err "$t"; then pass ipip-vip "10 HTTP requests to $VIP through IPIP: $t"
else fail ipip-vip "10 requests through IPIP: $t (${got[*]})"; infofile "$W/ipvs-ipip.txt"; fi
read -r ip1 _ < <(nft_counters rs1)
if [ "${ip1:-0}" -gt 0 ]; then pass ipip-encap "rs1 received $ip1 IPIP (proto 4) packets"
else fail ipip-encap "rs1 received no IPIP packets"; fi
read -r rfwd < <(nft_counters router)
dcount=$(nft_counters dir)
stats=$(nsx dir ipvsadm -Ln --stats --exact -t "$VIP:80" | awk '/^TCP/ { print $4, $5 }')
if [ "${rfwd:-0}" -gt 0 ] && [ "$dcount" = "0 0 " ] && [ "${stats#* }" = 0 ]; then
	pass ipip-bypass "replies from $VIP:80 routed rs -> router -> client ($rfwd packets); director saw none (counters $dcount; IPVS InPkts/OutPkts $stats)"
else fail ipip-bypass "router forwarded ${rfwd:-?} replies; director counters '$dcount'; IPVS stats $stats"; fi
read -r syn synmss < <(nft_counters client)
if [ "${syn:-0}" -gt 0 ] && [ "$syn" = "$synmss" ]; then pass ipip-mss "all $syn SYN-ACKs from $VIP carried MSS $MSS"
else fail ipip-mss "SYN-ACKs from $VIP: $syn, with MSS $MSS: $synmss"; fi
big=$(nsx client curl -s -m 20 "http://$VIP/big.txt" | wc -c)
want=$(wc -c <"$W/rs1/www/big.txt")
if [ "$big" = "$want" ]; then pass ipip-bulk "a ${want}-byte download through the VIP is complete"
else fail ipip-bulk "downloaded $big of $want bytes"; fi

# --- IPv6: IPv6 in IPv6 (ip6tnl0) ---------------------------------------------------------
v6_round ipip
# Negative control: the VIP preferred again on the director, so the service
# (made anew: IPVS caches the route and source per real server) wraps with
# the VIP as outer source; the servers hold the VIP, and ip6tnl0 drops a
# packet from one of its own addresses (ip6_tnl_rcv_ctl) before counting it.
rx6() { echo $(( $(nsx rs1 cat /sys/class/net/ip6tnl0/statistics/rx_packets) + $(nsx rs2 cat /sys/class/net/ip6tnl0/statistics/rx_packets) )); }
nsx dir ip -6 addr change $VIP6/128 dev eth0 nodad preferred_lft forever
director ipip >/dev/null
src=$(nsx dir ip -6 route get ${RSIP6[rs1]} | grep -o 'src [^ ]*')
in0=$(cnt6 rs1 1) in0b=$(cnt6 rs2 1) rx0=$(rx6)
mapfile -t got < <(who6 1 2)
in1=$(cnt6 rs1 1) in1b=$(cnt6 rs2 1) rx1=$(rx6)
t=$(tally "${got[@]}") arrived=$(( in1 - in0 + in1b - in0b )) rx=$(( rx1 - rx0 ))
if [ "$src" = "src $VIP6" ] && [ "$t" = "rs1 0 rs2 0 err 1" ] && [ "$arrived" -gt 0 ] && [ "$rx" = 0 ]; then
	pass ipip6-vip-source-drops "director's VIP preferred ($src toward the servers): $arrived IPv6-in-IPv6 packets arrived, ip6tnl0 took none, the request failed; deprecated (preferred_lft 0) it is not picked"
else fail ipip6-vip-source-drops "director's VIP preferred ($src): request $t, $arrived packets arrived, ip6tnl0 rx +$rx (want: fails, arrived > 0, rx +0)"; fi
nsx dir ip -6 addr change $VIP6/128 dev eth0 nodad preferred_lft 0
director ipip >/dev/null

# --- health, drain, agent-check ---------------------------------------------------------
acis() { # acis NS PATTERN: the agent-check line matches PATTERN
	local l
	l=$(agentcheck "$1")
	echo "agent-check said '$l'"
	# shellcheck disable=SC2053 # PATTERN is a glob on purpose
	[[ $l == $2 ]]
}
check agentcheck-up "agent-check on rs1" acis rs1 'up*'
agent rs1 drain >"$W/drain.out" 2>&1
check drain-healthz "dsr-agent drain on rs1: /healthz 503" wait_healthz rs1 503 10
check drain-agentcheck "agent-check on rs1 after drain" acis rs1 '*drain*'
agent rs1 undrain >>"$W/drain.out" 2>&1
check undrain-healthz "dsr-agent undrain on rs1: /healthz 200" wait_healthz rs1 200 10

# --- repair (agent mode) ------------------------------------------------------------------
if [ "$MANUAL" = 1 ]; then
	skip tunl0-repaired "MANUAL=1: the agent does not own tunl0"
else
	t0=$(now_ms)
	nsx rs1 ip link set tunl0 down
	back=""
	for _ in $(seq 500); do nsx rs1 ip -o link show tunl0 | grep -q ',UP' && { back=1; break; }; sleep 0.01; done
	if [ -n "$back" ]; then
		metric tunl0_repair_ms $(( $(now_ms) - t0 ))
		pass tunl0-repaired "ip link set tunl0 down on rs1: the agent set it up again in $(( $(now_ms) - t0 )) ms"
	else fail tunl0-repaired "tunl0 still down 5 s after ip link set tunl0 down"; infofile "$W/rs1/agent.log" 10; fi
fi

# --- GUE -------------------------------------------------------------------------------------
for ns in rs1 rs2; do nsx "$ns" ip fou del port $GUEPORT 2>/dev/null; nsx "$ns" ip -6 fou del port $GUEPORT 2>/dev/null; done
director gue || fail director-gue "ipvsadm --tun-type gue failed (ipvsadm $(ipvsadm --version 2>&1 | head -n1))"
mapfile -t got < <(who 2)
t=$(tally "${got[@]}")
if [ "$t" = "rs1 0 rs2 0 err 2" ]; then pass gue-needs-port "director on GUE, real servers without a fou port: requests fail ($t)"
else fail gue-needs-port "director on GUE, no fou port on the servers, yet: $t"; fi
if [ -n "$DIRECTOR6_ERR" ]; then fail gue6-needs-port "the director has no IPv6 GUE service: $DIRECTOR6_ERR"
else
	mapfile -t got < <(who6 2 2)
	t=$(tally "${got[@]}")
	if [ "$t" = "rs1 0 rs2 0 err 2" ]; then pass gue6-needs-port "director on GUE for [$VIP6], real servers without an IPv6 fou port: requests fail ($t)"
	else fail gue6-needs-port "director on GUE for [$VIP6], no IPv6 fou port on the servers, yet: $t"; fi
fi
for ns in rs1 rs2; do
	if [ "$MANUAL" = 1 ]; then manual_tunnel "$ns" gue || fail "manual-gue-$ns" "ip fou add failed"
	else stop_agent "$ns"; start_agent "$ns" gue; fi
done
for ns in rs1 rs2; do
	check "gue-port-$ns" "$ns: ip fou show lists port $GUEPORT gue (IPv4)" bash -c "
		for _ in \$(seq 100); do ip netns exec $ns ip fou show | grep -Eq '^port $GUEPORT gue *\$' && exit 0; sleep 0.1; done
		ip netns exec $ns ip fou show; exit 1"
	check "gue6-port-$ns" "$ns: ip fou show lists port $GUEPORT gue -6" bash -c "
		for _ in \$(seq 100); do ip netns exec $ns ip fou show | grep -Eq '^port $GUEPORT gue -6' && exit 0; sleep 0.1; done
		ip netns exec $ns ip fou show; exit 1"
done
wait_healthz rs1 200 30 >/dev/null; wait_healthz rs2 200 30 >/dev/null
read -r syn0 synmss0 < <(nft_counters client)
mapfile -t got < <(who 10)
t=$(tally "${got[@]}")
if both_no_err "$t"; then pass gue-vip "10 HTTP requests to $VIP through GUE (udp $GUEPORT): $t"
else fail gue-vip "10 requests through GUE: $t (${got[*]})"; infofile "$W/ipvs-gue.txt"; fi
read -r _ gue1 < <(nft_counters rs1)
if [ "${gue1:-0}" -gt 0 ]; then pass gue-encap "rs1 received $gue1 packets to udp $GUEPORT"
else fail gue-encap "rs1 received nothing on udp $GUEPORT"; fi
read -r syn synmss < <(nft_counters client)
syn=$(( syn - syn0 )) synmss=$(( synmss - synmss0 ))
if [ "${syn:-0}" -gt 0 ] && [ "$syn" = "$synmss" ]; then pass gue-mss "all $syn SYN-ACKs from $VIP carried MSS $MSS"
else fail gue-mss "SYN-ACKs from $VIP: $syn, with MSS $MSS: $synmss"; fi

# --- IPv6: GUE over IPv6 (ip -6 fou, then ip6tnl0) ------------------------------------------
v6_round gue

# --- GUE port repair (agent mode): fou sends no notifications, the agent polls ---------------
if [ "$MANUAL" != 1 ]; then
	t0=$(now_ms)
	nsx rs2 ip fou del port $GUEPORT
	back=""
	for _ in $(seq 500); do nsx rs2 ip fou show | grep -Eq "^port $GUEPORT gue *$" && { back=1; break; }; sleep 0.01; done
	if [ -n "$back" ]; then
		ms=$(( $(now_ms) - t0 ))
		metric fou_repair_ms $ms
		pass fou-repaired "ip fou del port $GUEPORT on rs2: the agent added it again in $ms ms (1 s poll)"
	else fail fou-repaired "GUE port $GUEPORT still missing on rs2 5 s after ip fou del"; infofile "$W/rs2/agent.log" 10; fi
fi

# --- rp_filter: the kernel uses max(all, tunl0) -------------------------------------------------
# All requests to rs1 (rs2 weight 0); rs1's agent stopped so it does not repair.
stop_agent rs1
nsx dir ipvsadm -e -t $VIP:80 -r "${RSIP[rs2]}" -i -w 0 --tun-type gue --tun-port $GUEPORT
rpf() { nsx rs1 nstat -az TcpExtIPReversePathFilter | awk '/IPReversePathFilter/ { print $2 }'; }
rp_try() { # rp_try ALL TUNL0: prints "ANSWER drops"
	nsx rs1 sysctl -qw net.ipv4.conf.all.rp_filter="$1" net.ipv4.conf.tunl0.rp_filter="$2"
	local before after r
	before=$(rpf)
	r=$(nsx client curl -s -m 2 "http://$VIP/" || echo ERR)
	after=$(rpf)
	echo "$r $(( after - before ))"
}
rp_case() { # rp_case NAME ALL TUNL0 WANT(answer|drop) WHY
	local r d what=dropped
	[ "$4" = answer ] && what="rs1 answers"
	read -r r d <<<"$(rp_try "$2" "$3")"
	if { [ "$4" = answer ] && [ "$r" = rs1 ]; } || { [ "$4" = drop ] && [ "$r" = ERR ] && [ "$d" -gt 0 ]; }; then
		pass "$1" "rp_filter all=$2 tunl0=$3: $what; TcpExtIPReversePathFilter +$d ($5)"
	else
		fail "$1" "rp_filter all=$2 tunl0=$3: got '$r', reverse-path drops +$d, want $4 ($5)"
	fi
}
if [ "$MANUAL" = 1 ]; then
	rp_case rp-off-answers 0 0 answer "what dsr-agent must leave"
	rp_case rp-loose-tunl0-drops 0 2 drop "loose is not enough: tunl0 has no address, and __fib_validate_source drops for a device without one unless rp_filter is 0"
	rp_case rp-all-loose-drops 2 0 drop "max(all, tunl0) = 2: the all value counts (systemd's 50-default.conf sets all=2)"
	rp_case rp-all-strict-drops 1 0 drop "max(all, tunl0) = 1 (RHEL's default all=1)"
	rp_case rp-strict-tunl0-drops 0 1 drop "strict on tunl0"
	# Loose works once tunl0 has an address (the VIP as well, as some guides do).
	nsx rs1 ip addr add $VIP/32 dev tunl0
	rp_case rp-loose-with-address-answers 0 2 answer "with $VIP/32 on tunl0 the loose check passes"
	nsx rs1 ip addr del $VIP/32 dev tunl0
else
	# The agent put the VIP on tunl0; here all is 0, so max(all, tunl0) is
	# already not strict and it wrote no rp_filter (agent.test's
	# TestTunnelModeKernel proves it writes tunl0=2 under a strict all).
	# These cases show the kernel's verdict on the values involved.
	agent_all=$(nsx rs1 cat /proc/sys/net/ipv4/conf/all/rp_filter)
	agent_tunl0=$(nsx rs1 cat /proc/sys/net/ipv4/conf/tunl0/rp_filter)
	rp_case rp-agent-answers "$agent_all" "$agent_tunl0" answer "as dsr-agent left it"
	rp_case rp-rhel-default-drops 1 0 drop "negative control: dsr-agent's rp_filter step undone, RHEL's all=1: max = strict"
	rp_case rp-agent-step-answers 1 2 answer "dsr-agent's step alone (tunl0=2) under a strict all"
	# The VIP on lo instead (the loopback-mode way): tunl0 has no address.
	nsx rs1 ip addr add $VIP/32 dev lo
	nsx rs1 ip addr del $VIP/32 dev tunl0
	rp_case rp-loose-without-address-drops 0 2 drop "why the VIP sits on tunl0: with it on lo, __fib_validate_source drops on address-less tunl0 unless rp_filter is 0"
	nsx rs1 ip addr add $VIP/32 dev tunl0 label tunl0:dsr0
	nsx rs1 ip addr del $VIP/32 dev lo
	nsx rs1 sysctl -qw net.ipv4.conf.all.rp_filter="$agent_all" net.ipv4.conf.tunl0.rp_filter="$agent_tunl0"
	start_agent rs1 gue
	wait_healthz rs1 200 30 >/dev/null
fi
if [ "$MANUAL" = 1 ]; then
	read -r r d <<<"$(rp_try 0 0)"
	[ "$r" = rs1 ] || fail rp-restore "rp_filter all=0 tunl0=0: rs1 did not answer again ($r)"
	# rs1's agent (loopback mode) back for keepalived's /healthz checks.
	start_agent rs1 gue
	wait_healthz rs1 200 30 >/dev/null
fi
nsx dir ipvsadm -e -t $VIP:80 -r "${RSIP[rs2]}" -i -w 1 --tun-type gue --tun-port $GUEPORT

# --- keepalived: the seed's director for real, lb_kind TUN with GUE ----------------------------
# keepalived (checkers only) programs IPVS with lvs_method TUN type gue and
# checks each server's dsr-agent /healthz; inhibit_on_failure makes a drained
# server weight 0 (established connections finish), as in the DR interop test.
nsx dir ipvsadm -C
cat >"$W/keepalived.conf" <<EOF
global_defs {
	router_id tunnel-dir
}
virtual_server $VIP 80 {
	delay_loop 1
	lb_algo rr
	lvs_method TUN type gue port $GUEPORT
	protocol TCP
	alpha
EOF
for ns in rs1 rs2; do
	cat >>"$W/keepalived.conf" <<EOF
	real_server ${RSIP[$ns]} 80 {
		weight 1
		inhibit_on_failure
		HTTP_GET {
			url {
				path /healthz
				status_code 200
			}
			connect_port 8558
			connect_timeout 2
			retry 1
			delay_before_retry 1
		}
	}
EOF
done
echo "}" >>"$W/keepalived.conf"
ip netns exec dir keepalived -C -n -l -D -f "$W/keepalived.conf" -p "$W/k.pid" -c "$W/kc.pid" -r "$W/kv.pid" >>"$W/keepalived.log" 2>&1 &
KPID=$!
kweight() { # kweight NS: the IPVS weight keepalived gave NS, or "absent"
	nsx dir ipvsadm -Ln -t "$VIP:80" 2>/dev/null |
		awk -v rs="${RSIP[$1]}:80" '$1 == "->" && $2 == rs { print $4; f = 1 } END { if (!f) print "absent" }'
}
wait_kweight() { # wait_kweight NS WEIGHT SECONDS
	local i
	for i in $(seq $(( $3 * 5 ))); do [ "$(kweight "$1")" = "$2" ] && return 0; sleep 0.2; done
	echo "weight of $1 is $(kweight "$1"), want $2"; nsx dir ipvsadm -Ln; return 1
}
if wait_kweight rs1 1 30 >"$W/kw.out" && wait_kweight rs2 1 30 >>"$W/kw.out"; then
	pass keepalived-up "keepalived lvs_method TUN type gue: both servers' /healthz checks pass, weight 1"
else fail keepalived-up "$(tr '\n' ' ' <"$W/kw.out")"; infofile "$W/keepalived.log" 10; fi
read -r ipip0 gue0 < <(nft_counters rs1)
mapfile -t vipreq < <(whop 10)
mapfile -t got < <(printf '%s\n' "${vipreq[@]}" | awk '{ print $1 }')
t=$(tally "${got[@]}")
read -r ipip1 gue1 < <(nft_counters rs1)
if both_no_err "$t"; then pass keepalived-vip "10 requests through keepalived's TUN/GUE service: $t"
else fail keepalived-vip "10 requests through keepalived's service: $t"; fi
if [ $(( gue1 - gue0 )) -gt 0 ] && [ "$ipip1" = "$ipip0" ]; then
	pass keepalived-gue "keepalived's IPVS wrapped them in GUE: rs1 got $(( gue1 - gue0 )) packets on udp $GUEPORT, no bare IPIP"
else fail keepalived-gue "rs1: GUE packets +$(( gue1 - gue0 )), IPIP +$(( ipip1 - ipip0 )) (want GUE only)"; infofile "$W/keepalived.log" 10; fi
klines=$(wc -l <"$W/keepalived.log")
agent rs1 drain >>"$W/drain.out" 2>&1
if wait_kweight rs1 0 30 >"$W/kw.out"; then pass keepalived-drain "dsr-agent drain on rs1: keepalived set its weight to 0"
else fail keepalived-drain "$(tr '\n' ' ' <"$W/kw.out")"; fi
# Weight 0 keeps a server out of the scheduler, nothing more: IPVS schedules
# only a SYN that matches no connection entry. In TUN (and DR) mode the
# director sees the client's packets only, so every finished request leaves an
# entry in FIN_WAIT for 2 minutes (SYN_RECV for 1 when the server never
# answered), and with the default conn_reuse_mode=1 a new SYN on such a tuple
# is not rescheduled (only TIME_WAIT/CLOSE are; FIN_WAIT needs bit 2): it goes
# to the old server, weight 0 or not. The client's kernel picks its ports
# from a fresh random base every 10 s (the port hash is resalted), so a burst
# can land on a port an earlier request of this script used, e.g. one of the
# rp checks' connections to rs1 a minute ago. So the drained check sends new
# connections, from client ports below ip_local_port_range (32768-60999) that
# no request before used: what IPVS promises for those is the scheduler's rr
# over the servers with weight > 0. keepalived-reuse shows the other case.
mapfile -t drreq < <(for i in $(seq 6); do whop 1 --local-port $(( FRESHPORT + i )); done)
mapfile -t got < <(printf '%s\n' "${drreq[@]}" | awk '{ print $1 }')
t=$(tally "${got[@]}")
w=$(kweight rs1)
enabled=$(tail -n "+$(( klines + 1 ))" "$W/keepalived.log" | grep -c "Enabling service \[${RSIP[rs1]}\]")
if [ "$t" = "rs1 0 rs2 6 err 0" ] && [ "$w" = 0 ] && [ "$enabled" = 0 ]; then
	pass keepalived-drained "while rs1 is drained every new connection (client ports $(( FRESHPORT + 1 ))-$(( FRESHPORT + 6 ))) goes to rs2: $t; weight still 0"
else
	fail keepalived-drained "while rs1 is drained: $t (server:port ${drreq[*]}); rs1 weight now $w, keepalived enabled rs1 $enabled times since the drain"
	nsx dir ipvsadm -Lnc >"$W/conns.txt"; infofile "$W/conns.txt" 40; infofile "$W/keepalived.log" 15
fi
# The case IPVS does not promise: a SYN from the client port of one of the
# requests rs1 answered before the drain (its entry is in FIN_WAIT) follows
# the entry to rs1, weight 0 notwithstanding.
rport=$(printf '%s\n' "${vipreq[@]}" | awk '$1 == "rs1" { p = $2 } END { print p }')
entry=$(nsx dir ipvsadm -Lnc | awk -v c="$CLIENT_IP:$rport" '$4 == c { print $3, $6 }')
read -r r _ < <(whop 1 --local-port "$rport")
if [ "$r" = rs1 ] && [ "${entry#* }" = "${RSIP[rs1]}:80" ]; then
	pass keepalived-reuse "a new connection from client port $rport (an entry '$entry' from before the drain) went to rs1 at weight 0: IPVS reuses the entry (conn_reuse_mode=1, TUN sees no replies)"
else fail keepalived-reuse "client port $rport (entry '$entry', conn_reuse_mode $(nsx dir cat /proc/sys/net/ipv4/vs/conn_reuse_mode)): answered by $r, want rs1"; fi
# The director-side remedy (docs/tunnel.md): expire_nodest_conn=1 reschedules
# a SYN whose entry points at a weight-0 server.
rport=$(printf '%s\n' "${vipreq[@]}" | awk '$1 == "rs1" { p = $2; exit } END { print p }')
entry=$(nsx dir ipvsadm -Lnc | awk -v c="$CLIENT_IP:$rport" '$4 == c { print $3, $6 }')
nsx dir sysctl -qw net.ipv4.vs.expire_nodest_conn=1
read -r r _ < <(whop 1 --local-port "$rport")
nsx dir sysctl -qw net.ipv4.vs.expire_nodest_conn=0
if [ "$r" = rs2 ] && [ "${entry#* }" = "${RSIP[rs1]}:80" ]; then
	pass keepalived-reuse-expire "with expire_nodest_conn=1 the same from client port $rport (entry '$entry') went to rs2"
else fail keepalived-reuse-expire "expire_nodest_conn=1, client port $rport (entry '$entry'): answered by $r, want rs2"; fi
agent rs1 undrain >>"$W/drain.out" 2>&1
if wait_kweight rs1 1 30 >"$W/kw.out"; then pass keepalived-undrain "dsr-agent undrain on rs1: weight 1 again"
else fail keepalived-undrain "$(tr '\n' ' ' <"$W/kw.out")"; fi
kill "$KPID" 2>/dev/null; wait "$KPID" 2>/dev/null
nsx dir ipvsadm -C

# --- probe (issue 20): the director's view through IPIP and GUE ------------------------------
# `dsr-agent probe` on the director sends a client's SYN to VIP:PORT inside
# IPIP / GUE to one real server and names the fault; each fault is injected on
# rs1 alone and rs2 must stay up. Then keepalived uses it as MISC_CHECK
# (misc_dynamic, weight from the agent-check) and takes out exactly rs1.
# The "probe-view" info lines record what rs1's own /healthz (agent running)
# or `dsr-agent status` (agent stopped) said during each fault (docs/probe.md).
probe_rs() { # probe_rs NS TARGET ENCAP [ARG...]: prints "EXIT VERDICT EXPLANATION"
	local ns=$1 target=$2 enc=$3 real out rc
	shift 3
	real=${RSIP[$ns]}
	[[ $target == \[* ]] && real=${RSIP6[$ns]}
	out=$(nsx dir "$AGENT" probe "$target" --real "$real" --encap "$enc" --timeout 1s "$@" 2>&1)
	rc=$?
	echo "$rc ${out%%:*} $out"
}
declare -A PEXIT=([up]=0 [refused]=10 [unreachable]=11 [timeout]=12 [wrong-source]=13 [mss-too-large]=14 [arp-flux]=15)
pcheck() { # pcheck NAME WANT TARGET ENCAP: rs1's verdict is WANT (with its exit code), rs2's up (exit 0)
	local name=$1 want=$2 r1 r2
	r1=$(probe_rs rs1 "$3" "$4")
	r2=$(probe_rs rs2 "$3" "$4")
	PV=$(echo "$r1" | cut -d' ' -f2)
	if [ "$PV" = "$want" ] && [ "${r1%% *}" = "${PEXIT[$want]}" ] && [ "${r2%% *}" = 0 ]; then
		pass "$name" "rs1: $(echo "$r1" | cut -d' ' -f3- | cut -c1-160) | rs2: $(echo "$r2" | cut -d' ' -f2)"
	else fail "$name" "want rs1 $want (exit ${PEXIT[$want]}), rs2 up (exit 0); rs1: $r1 | rs2: $r2"; fi
}
pview() { # pview FAULT: what rs1's own view said
	local hz st
	hz=$(healthz rs1)
	agent rs1 status >/dev/null 2>&1
	st=$?
	info "probe-view $1: rs1 probe=$PV healthz=${hz:-none} status-exit=$st"
}
pfault_nft() { # pfault_nft VERDICT: rs1's input hook rejects or drops VIP:80
	printf 'table inet probefault { chain in { type filter hook input priority 0; ip daddr %s tcp dport 80 %s; }; }\n' "$VIP" "$1" |
		nsx rs1 nft -f - || info "probe: nft $1 on rs1 failed"
}
pfaults() { # pfaults NAME ENCAP TARGET: every fault on rs1 through one encapsulation
	local n=$1 enc=$2 tg=$3 rp
	pcheck "probe-$n-up" up "$tg" "$enc"
	pcheck "probe-$n-real-ip-only" refused "${tg%:*}:8081" "$enc"
	pview "$n service-on-real-ip-only"
	pfault_nft reject
	pcheck "probe-$n-reject" unreachable "$tg" "$enc"
	pview "$n nft-reject"
	nsx rs1 nft delete table inet probefault
	pfault_nft drop
	pcheck "probe-$n-drop" timeout "$tg" "$enc"
	pview "$n nft-drop"
	nsx rs1 nft delete table inet probefault
	stop_agent rs1
	nsx rs1 ip addr del $VIP/32 dev tunl0
	pcheck "probe-$n-vip-deleted" timeout "$tg" "$enc"
	pview "$n vip-deleted(agent-stopped)"
	nsx rs1 ip addr add $VIP/32 dev tunl0 label tunl0:dsr0
	rp=$(nsx rs1 cat /proc/sys/net/ipv4/conf/tunl0/rp_filter)
	nsx rs1 sysctl -qw net.ipv4.conf.tunl0.rp_filter=1
	pcheck "probe-$n-rp-strict" timeout "$tg" "$enc"
	pview "$n rp_filter-strict-tunl0(agent-stopped)"
	nsx rs1 sysctl -qw net.ipv4.conf.tunl0.rp_filter="$rp"
	nsx rs1 nft list table ip dsr-agent >"$W/clamp.nft"
	nsx rs1 nft delete table ip dsr-agent
	pcheck "probe-$n-mss" mss-too-large "$tg" "$enc"
	pview "$n mss-not-clamped(agent-stopped)"
	nsx rs1 nft -f "$W/clamp.nft"
	start_agent rs1 gue
	wait_healthz rs1 200 30 >/dev/null
}
if [ "$MANUAL" = 1 ]; then
	skip probe-l3 "MANUAL=1: the probe checks use the agent's tunnel mode"
else
	t0=$(now_ms)
	ip netns exec rs1 busybox httpd -f -p "${RSIP[rs1]}:8081" -h "$W/rs1/www" >>"$W/rs1/httpd.log" 2>&1 &
	ip netns exec rs2 busybox httpd -f -p 8081 -h "$W/rs2/www" >>"$W/rs2/httpd.log" 2>&1 &
	pfaults ipip ipip "$VIP:80"
	pfaults gue "gue:$GUEPORT" "$VIP:80"
	# IPv6: both servers healthy. The agents clamp to the config's mss ($MSS);
	# a full segment fits IPv6-in-IPv6 (1500 - 40 - 60 = 1400) but not GUE over
	# IPv6 (1500 - 52 - 60 = 1388): there the probe must say mss-too-large for both.
	for enc in ipip "gue:$GUEPORT"; do
		n=ipip6 max=1400
		[ "$enc" = ipip ] || n=gue6 max=1388
		want=up
		[ "$MSS" -gt "$max" ] && want=mss-too-large
		r1=$(probe_rs rs1 "[$VIP6]:80" "$enc")
		r2=$(probe_rs rs2 "[$VIP6]:80" "$enc")
		if [ "${r1%% *}" = "${PEXIT[$want]}" ] && [ "${r2%% *}" = "${PEXIT[$want]}" ]; then pass "probe-$n" "[$VIP6]:80 via IPv6 $enc, both $want: rs1 $(echo "$r1" | cut -d' ' -f3- | cut -c1-200)"
		else fail "probe-$n" "want both $want (mss $MSS, path max $max); rs1: $r1 | rs2: $r2"; fi
	done
	metric probe_faults_ms $(( $(now_ms) - t0 ))

	# keepalived with the probe as MISC_CHECK, weights from the agent-check.
	{
		printf 'global_defs {\n\trouter_id probe-dir\n}\nvirtual_server %s 80 {\n\tdelay_loop 1\n\tlb_algo rr\n' "$VIP"
		printf '\tlvs_method TUN type gue port %s\n\tprotocol TCP\n' "$GUEPORT"
		for ns in rs1 rs2; do
			printf '\treal_server %s 80 {\n\t\tweight 1\n\t\tinhibit_on_failure\n\t\tMISC_CHECK {\n' "${RSIP[$ns]}"
			printf '\t\t\tmisc_path "%s probe %s:80 --real %s --encap gue:%s --timeout 1s --weight-from %s:3333"\n' "$AGENT" "$VIP" "${RSIP[$ns]}" "$GUEPORT" "${RSIP[$ns]}"
			printf '\t\t\tmisc_timeout 3\n\t\t\tmisc_dynamic\n\t\t}\n\t}\n'
		done
		printf '}\n'
	} >"$W/keepalived-probe.conf"
	ip netns exec dir keepalived -C -n -l -D -f "$W/keepalived-probe.conf" -p "$W/kp.pid" -c "$W/kpc.pid" -r "$W/kpv.pid" >>"$W/keepalived-probe.log" 2>&1 &
	KPID=$!
	if wait_kweight rs1 100 30 >"$W/kw.out" && wait_kweight rs2 100 30 >>"$W/kw.out"; then
		pass probe-keepalived-up "MISC_CHECK dsr-agent probe --weight-from: both servers weight 100 (agent-check 'up ready' = 100%, exit 102)"
	else fail probe-keepalived-up "$(tr '\n' ' ' <"$W/kw.out")"; infofile "$W/keepalived-probe.log" 10; fi
	pfault_nft reject
	t1=$(now_ms)
	if wait_kweight rs1 0 30 >"$W/kw.out" && [ "$(kweight rs2)" = 100 ]; then
		pass probe-keepalived-fault "nft reject on rs1's VIP:80 (its /healthz says $(healthz rs1)): keepalived set rs1 to weight 0 in $(( $(now_ms) - t1 )) ms, rs2 stays 100"
	else fail probe-keepalived-fault "$(tr '\n' ' ' <"$W/kw.out") rs2 $(kweight rs2)"; infofile "$W/keepalived-probe.log" 10; fi
	nsx rs1 nft delete table inet probefault
	if wait_kweight rs1 100 30 >"$W/kw.out"; then pass probe-keepalived-back "fault removed: rs1 weight 100 again"
	else fail probe-keepalived-back "$(tr '\n' ' ' <"$W/kw.out")"; fi
	kill "$KPID" 2>/dev/null
	wait "$KPID" 2>/dev/null
	nsx dir ipvsadm -C
fi

# --- remove --------------------------------------------------------------------------------------
if [ "$MANUAL" = 1 ]; then
	skip remove-tunnel "MANUAL=1: the agent does not own tunl0 or the fou port"
	skip remove-tunnel6 "MANUAL=1: the agent does not own ip6tnl0 or the IPv6 fou port"
else
	stop_agent rs2
	nsx rs2 ip fou add port 7070 gue # someone else's
	agent rs2 remove >"$W/remove.out" 2>&1
	check remove-tunnel "dsr-agent remove on rs2: fou $GUEPORT gone, foreign 7070 kept, tunl0 down" bash -c "
		f=\$(ip netns exec rs2 ip fou show)
		! grep -q 'port $GUEPORT' <<<\"\$f\" && grep -q 'port 7070 gue' <<<\"\$f\" &&
		! ip netns exec rs2 ip -o link show tunl0 | grep -q ',UP' || { echo \"\$f\"; cat $W/remove.out; exit 1; }"
	check remove-tunnel6 "dsr-agent remove on rs2: IPv6 fou $GUEPORT gone, ip6tnl0 down, $VIP6 off lo, no ip6 clamp table" nsx rs2 bash -c "
		e=''
		ip fou show | grep -Eq '^port $GUEPORT gue -6' && e=\"\$e ipv6-fou-kept\"
		ip -o link show ip6tnl0 | grep -q ',UP' && e=\"\$e ip6tnl0-up\"
		ip -o -6 addr show dev lo | grep -q ' $VIP6/128 ' && e=\"\$e vip6-on-lo\"
		nft list tables | grep '^table ip6 ' | grep -vq ' watch\$' && e=\"\$e \$(nft list tables | grep '^table ip6 ' | grep -v ' watch\$')\"
		[ -z \"\$e\" ] || { echo left:\$e; exit 1; }"
fi
for ns in rs1 rs2; do stop_agent "$ns"; done
metric tunnel_in_vm_ms $(( $(now_ms) - t_begin ))
finish
