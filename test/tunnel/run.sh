#!/usr/bin/env bash
# make test-tunnel: L3 DSR (issue 13) in one boot of the boot test's cached
# Debian VM (this host's kernel has no ipip, fou, ip6_tunnel or ip_vs; the
# Debian kernel has them).
#
#   test/tunnel/run.sh [DSR_AGENT_BINARY]     (default: bin/dsr-agent)
#
# In the VM: (1) the tunnel package's kernel tests (tunnel.test, built here,
# run there with DSR_TUNNEL_REQUIRE=1: a skip is a failure); (2) namespaces
# client - router - director (IPVS lb_kind TUN, IPIP then GUE) and two real
# servers in another subnet running `dsr-agent run`, IPv4 and IPv6 (IPv6 in
# IPv6 on ip6tnl0, GUE over IPv6). See guest/tunnel.sh and docs/tunnel.md.
#
# Environment (the boot test's, shared):
#   DSR_BOOT_SKIP=1 / DSR_BOOT_REQUIRE=1   skip / make a skip a failure (CI)
#   DSR_BOOT_ACCEL=auto|kvm|tcg            DSR_BOOT_CACHE=DIR (image cache)
#   DSR_TUNNEL_MANUAL=1                    the tunnel part by hand, agent in loopback
#                                          mode (proves the scenario before the agent
#                                          has mode: tunnel)
#   DSR_TUNNEL_TIMEOUT=1200                hard limit for the VM run, seconds
#   DSR_TUNNEL_KEEP=1                      keep the run directory on success too
# Output: one line per check ("ok"/"not ok"/"skip"); the last line is
# "tunnel-test: N passed, N failed". Exit 0 all passed, 1 otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
boot="$repo/test/boot"
# shellcheck source=../boot/lib.sh
. "$boot/lib.sh"

BT_NAME=test-tunnel BT_KEEP_VAR=DSR_TUNNEL_KEEP
skip() { bt_skip "$@"; }
bt_vm_prereqs "$repo"
AGENT=${1:-$repo/bin/dsr-agent}
[ -x "$AGENT" ] || skip "no dsr-agent binary at $AGENT (run make build)"
TIMEOUT=${DSR_TUNNEL_TIMEOUT:-1200}
MANUAL=${DSR_TUNNEL_MANUAL:-0}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
[ -x "$GO" ] || command -v "$GO" >/dev/null || skip "no go toolchain to build tunnel.test"

bt_vm_begin "$boot"
cp "$here/guest/tunnel.sh" "$payload/phases.sh"
cp "$AGENT" "$payload/dsr-agent"
echo "$MANUAL" >"$payload/manual"
(cd "$repo" && CGO_ENABLED=0 "$GO" test -c -o "$payload/tunnel.test" ./tunnel) || bt_die "go test -c ./tunnel failed"
# mode tunnel's kernel tests in the agent package (apply, drift, remove).
(cd "$repo" && CGO_ENABLED=0 "$GO" test -c -o "$payload/agent.test" ./agent) || bt_die "go test -c ./agent failed"
bt_vm_payload_disk

accel=$(bt_accel "$image" "$run/kvm-probe.log")
t_boot=$(date +%s)
bt_log "booting $(cat "$image/kernel-version") under $accel: tunnel.test, then IPVS TUN (IPIP, GUE) across a router to 2 dsr-agent real servers$([ "$MANUAL" = 1 ] && echo " (MANUAL)")"
bt_qemu_start "$run" "$image" "$accel" "$TIMEOUT"
bt_follow "$t_boot" 'PASS|FAIL|SKIP'
wait "$qpid" && qrc=0 || qrc=$?
qpid=""
t_end=$(date +%s)

bt_vm_markers
bt_vm_summary "tunnel test: IPVS lb_kind TUN (IPIP, GUE; IPv4 and IPv6) + dsr-agent$([ "$MANUAL" = 1 ] && echo " [MANUAL]") in Debian bookworm ($(cat "$image/kernel-version"), $accel)" '^(mode:|kernel|fou poll|ip link del|bench:|director[: ]|probe-view)'
bt_vm_verdict go-TestAutoloadWithoutModprobe go-TestFallbackDevicePerNamespace go-TestApplyRepairRemoveIPv4GUE go-TestForeignFouConflict \
	go-TestApplyRemoveIPv6GUE go-TestCreateWithoutFallback go-TestWatch go-TestFouPollCost \
	topology agent-up-rs1 agent-up-rs2 ipip-vip ipip-encap ipip-bypass ipip-mss ipip-bulk agentcheck-up \
	drain-healthz drain-agentcheck undrain-healthz gue-needs-port gue-vip gue-encap gue-mss \
	keepalived-up keepalived-gue keepalived-vip keepalived-drain keepalived-drained keepalived-reuse keepalived-reuse-expire keepalived-undrain \
	rs6-setup-rs1 rs6-setup-rs2 ipip6-vip ipip6-encap ipip6-bypass ipip6-mss ipip6-vip-source-drops \
	gue6-needs-port gue6-port-rs1 gue6-port-rs2 gue6-vip gue6-encap gue6-bypass gue6-mss \
	$([ "$MANUAL" = 1 ] && echo rp-off-answers rp-loose-tunl0-drops rp-all-loose-drops rp-all-strict-drops rp-strict-tunl0-drops rp-loose-with-address-answers) \
	$([ "$MANUAL" = 1 ] || echo go-TestTunnelModeKernel tunl0-repaired fou-repaired rp-agent-answers rp-rhel-default-drops rp-agent-step-answers rp-loose-without-address-drops remove-tunnel remove-tunnel6) \
	$([ "$MANUAL" = 1 ] || for e in ipip gue; do for f in up real-ip-only reject drop vip-deleted rp-strict mss; do echo "probe-$e-$f"; done; done) \
	$([ "$MANUAL" = 1 ] || echo probe-ipip6 probe-gue6 probe-keepalived-up probe-keepalived-fault probe-keepalived-back)
