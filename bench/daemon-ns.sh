# shellcheck shell=bash
# Sourced by bench/rss.sh and daemon/bench/healthz.sh, which both measure the
# real `dsr-agent run` with 1,000 VIPs in a throwaway network namespace:
# one place for that namespace, the config and the wait for READY, so the
# two benchmarks measure the same daemon.
#
# daemon_up BIN NAME starts it in namespace NAME-$$ and sets ns, tmp (a
# temporary directory, the config and the daemon's log are in it), dpid and
# health (the /healthz URL). daemon_down undoes all of it; trap it on EXIT
# before daemon_up, so a failure half way leaves nothing behind.

daemon_up() {
	local bin=$1
	ns=$2-$$
	tmp=$(mktemp -d)
	health=http://10.88.0.2:8558/healthz
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip -n "$ns" link add eth0 type veth peer name eth1 # dummy is not always available to ip(8)
	ip -n "$ns" link set eth1 up
	ip -n "$ns" addr add 10.88.0.2/24 dev eth0
	ip -n "$ns" link set eth0 up
	{
		echo "mode: loopback"
		echo "interfaces: [eth0]"
		echo "vips:"
		if [ -n "${VIPS:-}" ]; then
			# VIPS replaces the list: e.g. VIPS='- prefix: 10.200.0.0/16' (issue 21).
			echo "  ${VIPS}"
		else
			for i in $(seq 0 999); do echo "  - address: 10.200.$((i / 256)).$((i % 256))"; done
		fi
		echo "health:"
		echo "  listen: 10.88.0.2:8558"
	} >"$tmp/config.yaml"

	ip netns exec "$ns" "$bin" --config "$tmp/config.yaml" --state-dir "$tmp/state" --log-level warn run 2>"$tmp/daemon.log" &
	dpid=$!
	for _ in $(seq 1 400); do
		ip netns exec "$ns" curl -fs "$health" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	cat "$tmp/daemon.log"
	echo "daemon not healthy after 20 s" >&2
	return 1
}

daemon_down() {
	if [ -n "${dpid:-}" ] && kill "$dpid" 2>/dev/null; then
		wait "$dpid" 2>/dev/null || true
	fi
	if [ -n "${ns:-}" ]; then ip netns del "$ns" 2>/dev/null || true; fi
	if [ -n "${tmp:-}" ]; then rm -rf "$tmp"; fi
}
