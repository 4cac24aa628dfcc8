#!/usr/bin/env bash
# Benchmark of `dsr-agent run`'s health endpoint against nginx `return 200` in
# the same run, both inside one throwaway network namespace (wrk runs there
# too), plus the daemon's RSS with 1,000 VIPs. Needs root, wrk and nginx
# (mk/daemon.packages). Usage: healthz.sh path/to/dsr-agent [duration]
set -euo pipefail
bin=$(realpath "$1")
dur=${2:-10s}
conns=${CONNS:-64}
threads=${THREADS:-2}
# shellcheck source=bench/daemon-ns.sh
. "$(dirname "$0")/../../bench/daemon-ns.sh"
cleanup() {
	if [ -f "${tmp:-}/nginx.pid" ]; then kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true; fi
	daemon_down
}
trap cleanup EXIT
daemon_up "$bin" dsrbench
vips=$(ip -n "$ns" -o addr show dev lo | grep -c 'lo:dsr' || true)
rss_idle=$(awk '/VmRSS/ {print $2}' /proc/$dpid/status)

cat >"$tmp/nginx.conf" <<NGINX
worker_processes auto;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
events { worker_connections 4096; }
http {
	access_log off;
	server {
		listen 10.88.0.2:8080;
		location / { return 200 "up\n"; }
	}
}
NGINX
ip netns exec "$ns" nginx -c "$tmp/nginx.conf"
sleep 0.3

run_wrk() { ip netns exec "$ns" wrk -t"$threads" -c"$conns" -d"$dur" --latency "$1"; }
echo "== nginx return 200"
run_wrk http://10.88.0.2:8080/healthz | tee "$tmp/nginx.txt"
echo "== dsr-agent /healthz (1,000 VIPs configured)"
run_wrk http://10.88.0.2:8558/healthz | tee "$tmp/dsr.txt"
rss_after=$(awk '/VmRSS/ {print $2}' /proc/$dpid/status)
cpu_idle_start=$(awk '{print $14+$15}' /proc/$dpid/stat)
sleep 5
cpu_idle_end=$(awk '{print $14+$15}' /proc/$dpid/stat)

rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
p99() { awk '$1=="99%" {print $2}' "$1"; }
echo
echo "| server | req/s | p99 |"
echo "|---|---|---|"
echo "| nginx \`return 200\` | $(rps "$tmp/nginx.txt") | $(p99 "$tmp/nginx.txt") |"
echo "| dsr-agent \`/healthz\` | $(rps "$tmp/dsr.txt") | $(p99 "$tmp/dsr.txt") |"
echo
echo "ratio dsr-agent/nginx: $(awk -v a="$(rps "$tmp/dsr.txt")" -v b="$(rps "$tmp/nginx.txt")" 'BEGIN {printf "%.2f", a/b}')"
echo "VIPs on lo: $vips; daemon RSS after first apply: ${rss_idle} kB; after the load: ${rss_after} kB"
echo "daemon CPU while idle for 5 s: $((cpu_idle_end - cpu_idle_start)) ticks (1 tick = 10 ms)"
