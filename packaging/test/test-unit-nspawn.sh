#!/usr/bin/env bash
# Runs the packaged unit under a real systemd: boots the host's systemd as PID 1
# of a systemd-nspawn container with a private network namespace, with the
# package's /usr/bin/dsr-agent and dsr-agent.service overlaid on the host's
# /usr, and a config with one VIP on an "LB-facing" interface (a bridge, as the
# kernel here has no dummy module). Checks what systemd-analyze cannot: that
# the hardened sandbox still lets the daemon do its job.
#   - Type=notify: the unit becomes active (READY=1) with a STATUS= text;
#   - the /proc/sys/net writes pass ProtectKernelTunables=yes + ReadWritePaths=/proc/sys/net;
#   - CAP_NET_ADMIN alone adds the VIP on lo (and is the only effective capability);
#   - the health endpoint answers; ExecReload (SIGHUP) reloads; stop is clean.
#   packaging/test/test-unit-nspawn.sh PACKAGE.deb
# Needs root and systemd-nspawn (systemd-container). Prints "N passed, N failed".
set -uo pipefail
deb=${1:?usage: test-unit-nspawn.sh PACKAGE.deb}

. "$(dirname "${BASH_SOURCE[0]}")/tap.sh"
finish() {
	echo "unit under systemd: $pass passed, $fail failed"
	[ "$fail" -eq 0 ]
	exit
}
for tool in systemd-nspawn dpkg-deb; do
	command -v "$tool" >/dev/null || {
		bad "missing $tool (make deps-packaging)"
		finish
	}
done

work=$(mktemp -d "${TMPDIR:-/tmp}/dsr-agent-nspawn.XXXXXX")
trap 'rm -rf "$work"' EXIT
R=$work/root
U=$work/usr-upper
dpkg-deb -x "$deb" "$work/payload"
mkdir -p "$U/bin" "$U/lib/systemd/system"
cp "$work/payload/usr/bin/dsr-agent" "$U/bin/"
cp "$work/payload/usr/lib/systemd/system/dsr-agent.service" "$U/lib/systemd/system/"

mkdir -p "$R"/{usr,etc/dsr-agent,etc/systemd/system,var/lib,run,tmp,proc,sys,dev,root}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$R/$d"; done
cp /etc/os-release /etc/passwd /etc/group "$R/etc/"
: >"$R/etc/machine-id"
cat >"$R/etc/dsr-agent/config.yaml" <<'EOF'
mode: loopback
interfaces: [eth0]
vips:
  - address: 192.0.2.10
health:
  listen: 192.0.2.21:8558
EOF
# The LB-facing NIC, up before dsr-agent (a bridge: no dummy module here).
cat >"$R/etc/systemd/system/lbnic.service" <<'EOF'
[Unit]
DefaultDependencies=no
Before=dsr-agent.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'ip link add eth0 type bridge && ip link set eth0 up && ip addr add 192.0.2.21/24 dev eth0 && ip route add default via 192.0.2.1'
EOF
# Probes after dsr-agent is up; results in /root/result; then powers off.
cat >"$R/root/check.sh" <<'EOF'
#!/bin/bash
exec >/root/result 2>&1
show() { systemctl show dsr-agent -p "$1" --value; }
for i in $(seq 50); do [ "$(show ActiveState)" = active ] && break; sleep 0.2; done
echo "active=$(show ActiveState)/$(show SubState) restarts=$(show NRestarts) status=$(show StatusText)"
echo "arp=$(cat /proc/sys/net/ipv4/conf/all/arp_ignore),$(cat /proc/sys/net/ipv4/conf/all/arp_announce)"
echo "vip=$(ip -4 -o addr show dev lo | grep -o '192.0.2.10/32')"
echo "capeff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/$(show MainPID)/status)"
exec 3<>/dev/tcp/192.0.2.21/8558 && printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 && echo "health=$(tail -1 <&3)"
systemctl reload dsr-agent && echo "reload=ok"
echo "after-reload=$(show ActiveState) status=$(show StatusText)"
systemctl stop dsr-agent && echo "stop=$(show ActiveState)/$(show Result)"
journalctl -u dsr-agent --no-pager -o cat | sed 's/^/journal: /'
EOF
chmod +x "$R/root/check.sh"
cat >"$R/etc/systemd/system/dsrcheck.service" <<'EOF'
[Unit]
After=dsr-agent.service
Wants=dsr-agent.service lbnic.service
[Service]
Type=oneshot
ExecStart=/root/check.sh
ExecStopPost=/bin/systemctl --no-block poweroff
EOF
cat >"$R/etc/systemd/system/dsrtest.target" <<'EOF'
[Unit]
Requires=dsrcheck.service
After=dsrcheck.service
EOF

# --keep-unit --register=no: no D-Bus on the host needed (no host systemd here).
timeout 120 systemd-nspawn -q --keep-unit --register=no -D "$R" --overlay=/usr:"$U":/usr \
	--private-network --boot -- systemd.unit=dsrtest.target >"$work/console.log" 2>&1
if [ ! -s "$R/root/result" ]; then
	bad "container booted and ran the checks (console below)"
	tail -40 "$work/console.log" | sed 's/^/       /'
	finish
fi
res=$(cat "$R/root/result")
want() { # DESC ERE
	if grep -qE "$2" <<<"$res"; then ok "$1"; else bad "$1"; fi
}
want "Type=notify: active/running after READY=1, no restarts, STATUS= set" '^active=active/running restarts=0 status=converged'
want "sysctls written through ProtectKernelTunables + ReadWritePaths=/proc/sys/net" '^arp=1,2$'
want "VIP added on lo with CAP_NET_ADMIN only" '^vip=192.0.2.10/32$'
want "effective capabilities: CAP_NET_ADMIN only" '^capeff=0000000000001000$'
want "health endpoint answers up" '^health=up'
want "ExecReload (SIGHUP) reloads" '^reload=ok$'
want "still active after reload" '^after-reload=active status=reloaded'
want "stops cleanly" '^stop=inactive/success$'
if [ "$fail" -ne 0 ]; then sed 's/^/       /' <<<"$res"; fi
finish
