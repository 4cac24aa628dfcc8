#!/usr/bin/env bash
# The daemon's RSS over time with 1,000 VIPs (issue 19 point 9): the real
# `dsr-agent run` in a throwaway network namespace, VmRSS from /proc sampled
# every 100 ms from READY through a burst of /healthz and /status requests
# and past the next periodic resync (30 s). Prints the samples' maximum
# after READY and at each phase. Needs root and curl.
# Usage: [VIPS='- prefix: 10.200.0.0/16'] rss.sh path/to/dsr-agent [requests] [watch-seconds]
set -euo pipefail
bin=$(realpath "$1")
reqs=${2:-200}
watch=${3:-36}
# shellcheck source=bench/daemon-ns.sh
. "$(dirname "$0")/daemon-ns.sh"
trap daemon_down EXIT
daemon_up "$bin" dsrrss
rss() { awk '/VmRSS/ {print $2}' /proc/$dpid/status; }
t0=$EPOCHREALTIME
# Sample in the background for the whole watch, with builtins only: a fork
# per sample would make the 100 ms period a second on a loaded machine.
(
	while [ -e /proc/$dpid/status ]; do
		while read -r k v _; do
			[ "$k" = VmRSS: ] && echo "${EPOCHREALTIME} $v"
		done </proc/$dpid/status
		sleep 0.1
	done
) >"$tmp/samples" &
spid=$!
sleep 1
ready=$(rss)
# The burst: one connection per request, as a director's checks are;
# STATUS_EVERY=N makes every Nth a /status document (the biggest response).
urls=()
for i in $(seq 1 "$reqs"); do
	if ((${STATUS_EVERY:-0} > 0 && i % ${STATUS_EVERY:-1} == 0)); then urls+=(http://10.88.0.2:8558/status); else urls+=(http://10.88.0.2:8558/healthz); fi
done
ip netns exec "$ns" curl -fs "${urls[@]}" --no-keepalive >/dev/null || true
tb=$(awk -v t0="$t0" -v t="$EPOCHREALTIME" 'BEGIN {printf "%.1f", t-t0}')
after=$(rss)
sleep 5
after5=$(rss)
sleep $((watch - 6))
kill "$spid" 2>/dev/null || true
wait "$spid" 2>/dev/null || true
max=$(awk -v t0="$t0" 'BEGIN {m=0} $2>m {m=$2; at=$1-t0} END {printf "%d kB at %.1f s (%d samples)", m, at, NR}' "$tmp/samples")
echo "READY+1s: $ready kB; right after $reqs requests (t=${tb} s): $after kB; 5 s later: $after5 kB; end (t=${watch} s): $(rss) kB"
echo "at the end: $(awk '/^(Rss|Anonymous|Pss_File|Pss_Anon):/ {printf "%s %s kB; ", $1, $2}' /proc/$dpid/smaps_rollup)"
echo "max over ${watch} s: $max"
[ -n "${SAMPLES:-}" ] && cp "$tmp/samples" "$SAMPLES"
true
