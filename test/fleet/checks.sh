# The checks of `make test-fleet` (sourced by run.sh once the lab is up and the
# director VM said READY): Debian's ansible-playbook, in the lab's controller
# namespace, runs deploy/ansible against rs1 and rs2 over SSH; a client in the
# client namespace sends requests through the VIP; IPVS is read in the VM with
# `fleetctl`. Check lines go to $run/host-markers.log in the guest's format.
# shellcheck shell=bash
# shellcheck disable=SC2154 # run, here, repo, DEB, SSHCFG, L, t_boot: set by run.sh

VIP=10.88.0.100
VIP2=10.88.0.101
HOST_MARKERS=$run/host-markers.log
: >"$HOST_MARKERS"
t_checks=$(date +%s)
hemit() {
	printf '@@BT %s\n' "$*" >>"$HOST_MARKERS"
	case $1 in PASS | FAIL | SKIP) printf '  [%ss] %s\n' "$(( $(date +%s) - t_boot ))" "$*" | cut -c1-200 ;; esac
}
pass() { hemit PASS "$1" "${*:2}"; }
fail() { hemit FAIL "$1" "${*:2}"; }
info() { hemit INFO "$*"; }
metric() { hemit METRIC "$1" "$2"; }
ok() { # ok NAME DETAIL COND...: pass if the command succeeds, else fail with its output
	local name=$1 detail=$2
	shift 2
	local out
	if out=$("$@" 2>&1); then pass "$name" "$detail${out:+ ($(echo "$out" | tr '\n' ' ' | cut -c1-200))}"
	else fail "$name" "$detail: $(echo "$out" | tr '\n' ' ' | cut -c1-300)"; return 1; fi
}
infofile() { tail -n "${2:-30}" "$1" 2>/dev/null | while IFS= read -r l; do info "$(basename "$1"): $l"; done; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# g CMD...: run in the VM; rsh HOST CMD...: run on rs1/rs2 (the same SSH
# config as Ansible's: one master connection per host, kept).
g() { ip netns exec "$L-ctl" ssh -F "$SSHCFG" fleet-vm "$@"; }
rsh() { local h=$1; shift; ip netns exec "$L-ctl" ssh -F "$SSHCFG" "$h" "$@"; }

# The controller: a writable copy of the test's inventory (check (d) adds a
# host_vars file), Ansible's own config, the role from the repository.
CTL=$run/ansible
cp -r "$here/ansible" "$CTL"
export ANSIBLE_CONFIG=$CTL/ansible.cfg ANSIBLE_ROLES_PATH=$repo/deploy/ansible/roles
export ANSIBLE_SSH_ARGS="-F $SSHCFG" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
export ANSIBLE_LOCAL_TEMP=$run/ansible-tmp ANSIBLE_HOME=$run/ansible-home
info "$(ansible-playbook --version 2>&1 | head -n1) on the host; $(ssh -V 2>&1)"

# play NAME ARGS...: ansible-playbook; output to $run/play-NAME.out, the recap
# lines to $run/play-NAME.recap; returns its exit status.
play() {
	local name=$1 rc t0
	shift
	t0=$(now_ms)
	(cd "$CTL" && ip netns exec "$L-ctl" ansible-playbook -e "fleet_deb=$DEB" "$@") >"$run/play-$name.out" 2>&1
	rc=$?
	metric "play_${name}_ms" $(( $(now_ms) - t0 ))
	sed -n '/^PLAY RECAP/,$p' "$run/play-$name.out" | grep -E '^rs[0-9] +:' >"$run/play-$name.recap"
	return $rc
}
# recap NAME HOST FIELD: a number from HOST's recap line ("absent" if none)
recap() {
	awk -v h="$2" -v f="$3" '$1 == h { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) { print kv[2]; found = 1 } } }
		END { if (!found) print "absent" }' "$run/play-$1.recap"
}
recap_line() { tr -s ' ' <"$run/play-$1.recap" | cut -d' ' -f1-7 | tr '\n' ';'; }
failed_tasks() { grep -E -A3 '^(fatal|failed):' "$run/play-$1.out" | tr -s ' \n' ' ' | cut -c1-500; }
# hoststate HOST FILE: the file's hash, the service, `dsr-agent status`, the VIPs on lo.
hoststate() {
	rsh "$1" "sha256sum $2 | cut -c1-16; systemctl is-active dsr-agent; dsr-agent status >/dev/null && echo in-sync || echo drift; ip -o -4 addr show dev lo | awk '\$4 != \"127.0.0.1/8\" { print \$4 }' | sort" | tr '\n' ' '
}

# --- (a) the first run converges both hosts; the second changes nothing ---------------------------
if play web web.yml; then pass web-service "web.service (python3 http.server :80) on rs1 and rs2: $(recap_line web)"
else fail web-service "web.yml failed: $(failed_tasks web)"; infofile "$run/play-web.out" 20; fi
if play converge1 "$repo/deploy/ansible/playbooks/site.yml"; then
	c1=$(recap converge1 rs1 changed) c2=$(recap converge1 rs2 changed)
	if [ "$c1" -gt 0 ] && [ "$c2" -gt 0 ]; then
		pass converge-first "site.yml: both hosts converged from scratch (package, config, service): $(recap_line converge1)"
	else
		fail converge-first "site.yml: changed rs1 $c1, rs2 $c2 (want > 0 on both): $(recap_line converge1)"
	fi
else
	fail converge-first "site.yml failed: $(failed_tasks converge1)"; infofile "$run/play-converge1.out" 40
fi
hostok() {
	local s
	s=$(rsh "$1" "systemctl is-active dsr-agent; dsr-agent status >/dev/null && echo in-sync || echo drift; ip -o -4 addr show dev lo | grep -c ' $VIP/32 '; dpkg-query -W -f='\${Version}\n' dsr-agent")
	echo "$s healthz $(g fleetctl healthz "$1")" | tr '\n' ' '
	[ "$(echo "$s" | sed -n 1p)" = active ] && [ "$(echo "$s" | sed -n 2p)" = in-sync ] && [ "$(echo "$s" | sed -n 3p)" = 1 ] &&
		[ "$(g fleetctl healthz "$1")" = 200 ]
}
for m in rs1 rs2; do
	ok "host-$m" "$m: dsr-agent.service active, status in sync, $VIP on lo, package version, /healthz from the director" hostok "$m"
done
ok ipvs-both "keepalived: rs1 and rs2 at weight 1 on $VIP:80" g fleetctl wait-weights 1 30
if play converge2 "$repo/deploy/ansible/playbooks/site.yml"; then
	c1=$(recap converge2 rs1 changed) c2=$(recap converge2 rs2 changed)
	if [ "$c1" = 0 ] && [ "$c2" = 0 ]; then
		pass converge-idempotent "second site.yml run: changed=0 on both ($(recap_line converge2))"
	else
		fail converge-idempotent "second site.yml run: changed rs1 $c1, rs2 $c2: $(grep -E '^changed:' "$run/play-converge2.out" | head -n 5 | tr '\n' ' ')"
	fi
else
	fail converge-idempotent "second site.yml run failed: $(failed_tasks converge2)"
fi

# --- (b) rolling restart of the web service, a client through the VIP the whole time -------------
# The client (client.py) in the client namespace: one line per request.
CLIENT_PID=""
client_start() { # client_start NAME
	rm -f "$run/$1.stop" "$run/$1.requests"
	# Bounded: at most 30,000 requests or 900 s, to the VIP only.
	ip netns exec "$L-client" python3 "$here/client.py" "$VIP" 80 "$run/$1.requests" "$run/$1.stop" \
		--interval 0.02 --min 1000 --max 30000 --max-seconds 900 >"$run/$1.client.log" 2>&1 &
	CLIENT_PID=$!
	for _ in $(seq 100); do [ -s "$run/$1.requests" ] && return 0; sleep 0.1; done
	echo "the client wrote nothing: $(cat "$run/$1.client.log")"
	return 1
}
client_stop() { touch "$run/$1.stop"; wait "$CLIENT_PID"; }
# counts NAME [FROM_MS TO_MS]: "sent failed" (in the window)
counts() { awk -v a="${2:-0}" -v b="${3:-99999999999999}" '$1 !~ /^#/ && $1 >= a && $1 <= b { n++; if ($2 == "fail") f++ } END { print n + 0, f + 0 }' "$run/$1.requests"; }
fail_kinds() { awk '$2 == "fail" { print $3 }' "$run/$1.requests" | sort | uniq -c | tr -s ' \n' ' '; }
# rolling NAME ARGS...: prints "EXIT SENT_IN_PLAY FAILED_IN_PLAY SENT FAILED PLAY_MS"
rolling() {
	local name=$1 t0 t1 rc
	shift
	client_start "$name" >&2 || { echo "1 0 0 0 0 0"; return; }
	sleep 2 # requests flowing before the first host is touched
	t0=$(now_ms)
	play "$name" "$repo/deploy/ansible/playbooks/rolling.yml" -e "rolling_tasks=$CTL/tasks/restart-web.yml" "$@"
	rc=$?
	t1=$(now_ms)
	sleep 2
	client_stop "$name"
	echo "$rc $(counts "$name" "$t0" "$t1") $(counts "$name") $(( t1 - t0 ))"
}
read -r rc n f tn tf dur <<<"$(rolling rolling)"
drains=""
for m in rs1 rs2; do
	d=$(grep -oE "$m drained in [0-9:.]+" "$run/play-rolling.out" | awk '{ split($4, t, ":"); printf "%d", (t[1] * 3600 + t[2] * 60 + t[3]) * 1000 }')
	[ -n "$d" ] && { metric "drain_wait_ms_$m" "$d"; drains="$drains $m $d ms;"; }
done
metric rolling_requests "$tn"
metric rolling_requests_during_play "$n"
metric rolling_failed "$tf"
metric rolling_play_ms "$dur"
if [ "$rc" = 0 ] && [ "$tf" = 0 ] && [ "$n" -ge 1000 ] && [ "$(recap rolling rs1 failed)" = 0 ] && [ "$(recap rolling rs2 failed)" = 0 ]; then
	pass rolling-drained "rolling restart of web.service, rs1 then rs2 (drain, settle, drain --wait, restart, checks up, undrain; serial 1): $tf of $tn requests failed ($n during the $dur ms play); drain --wait after the settle:$drains"
else
	fail rolling-drained "rolling restart with drain: play exit $rc, $tf of $tn requests failed ($f of $n during the play; want 0 of >= 1000): $(fail_kinds rolling) $(failed_tasks rolling)"
	infofile "$run/play-rolling.out" 30
fi
ok rolling-both-back "after the rolling restart both hosts back at weight 1" g fleetctl wait-weights 1 20
read -r rc n f tn tf dur <<<"$(rolling nodrain -e '{"dsr_agent_maintenance_drain": false}')"
metric nodrain_requests "$tn"
metric nodrain_failed "$tf"
metric nodrain_play_ms "$dur"
ndrains=$(grep -c 'TASK \[dsr_agent : Drain\]' "$run/play-nodrain.out")
if [ "$rc" = 0 ] && [ "$tf" -gt 0 ] && [ "$ndrains" = 0 ]; then
	pass control-no-drain "negative control, the same rolling restart without the drain: $tf of $tn requests failed ($(fail_kinds nodrain))"
else
	fail control-no-drain "negative control without the drain: play exit $rc, drain tasks run $ndrains (want 0), $tf of $tn requests failed (want > 0): the test cannot tell a drain from none"
fi
ok nodrain-both-back "after the negative control both hosts back at weight 1" g fleetctl wait-weights 1 30

# --- (c) an invalid VIP stops the rollout at the first host, the old config running everywhere -------
before1=$(hoststate rs1 /etc/dsr-agent/config.yaml) before2=$(hoststate rs2 /etc/dsr-agent/config.yaml)
play badvip "$repo/deploy/ansible/playbooks/site.yml" -e fleet_vip=10.88.0.300
rc=$?
after1=$(hoststate rs1 /etc/dsr-agent/config.yaml) after2=$(hoststate rs2 /etc/dsr-agent/config.yaml)
info "bad VIP run: $(failed_tasks badvip)"
rs2tasks=$(grep -c '\[rs2\]' "$run/play-badvip.out")
if [ "$rc" != 0 ] && [ "$(recap badvip rs1 failed)" = 1 ] && [ "$rs2tasks" = 0 ] &&
	grep -q 'TASK \[dsr_agent : Template config.yaml\]' "$run/play-badvip.out" && grep -q '10.88.0.300' "$run/play-badvip.out"; then
	pass badvip-stops "fleet_vip=10.88.0.300: dsr-agent validate refused the template on rs1 and the play stopped there (exit $rc; $(recap_line badvip) rs2: no task)"
else
	fail badvip-stops "fleet_vip=10.88.0.300: exit $rc, recap $(recap_line badvip), rs2 task lines $rs2tasks: $(failed_tasks badvip)"
	infofile "$run/play-badvip.out" 30
fi
if [ "$before1" = "$after1" ] && [ "$before2" = "$after2" ] && [[ $after1 == *"active in-sync $VIP/32"* ]] && [[ $after2 == *"active in-sync $VIP/32"* ]]; then
	pass badvip-old-config "both hosts still run the old config: rs1 [$after1], rs2 [$after2]"
else
	fail badvip-old-config "before/after: rs1 [$before1] -> [$after1], rs2 [$before2] -> [$after2]"
fi
ok badvip-in-rotation "both hosts still at weight 1" g fleetctl wait-weights 1 5

# --- (d) a drop-in added to one host (its host_vars) changes only that host -------------------------
mkdir -p "$CTL/inventory/host_vars"
cat >"$CTL/inventory/host_vars/rs1.yml" <<EOF
---
dsr_agent_dropins:
  50-second-vip:
    vips:
      - address: $VIP2
        ports:
          - port: 80
EOF
before2=$(hoststate rs2 /etc/dsr-agent/config.yaml)
if play dropin "$repo/deploy/ansible/playbooks/site.yml"; then
	c1=$(recap dropin rs1 changed) c2=$(recap dropin rs2 changed)
	after1=$(hoststate rs1 /etc/dsr-agent/config.d/50-second-vip.yaml) after2=$(hoststate rs2 /etc/dsr-agent/config.yaml)
	if [ "$c1" -gt 0 ] && [ "$c2" = 0 ] && [[ $after1 == *" $VIP2/32"* ]] && [ "$before2" = "$after2" ]; then
		pass dropin-one-host "drop-in 50-second-vip in rs1's host_vars: rs1 changed $c1 and has $VIP2 on lo [$after1]; rs2 changed 0, unchanged [$after2]"
	else
		fail dropin-one-host "drop-in on rs1: changed rs1 $c1, rs2 $c2; rs1 [$after1]; rs2 [$before2] -> [$after2]"
	fi
	info "rs1 validate --print: $(rsh rs1 "dsr-agent validate --print 2>&1 | grep -B1 -A1 '$VIP2' | head -n 4" | tr '\n' ' ')"
else
	fail dropin-one-host "site.yml with rs1's drop-in failed: $(failed_tasks dropin)"; infofile "$run/play-dropin.out" 30
fi
metric fleet_checks_s $(( $(date +%s) - t_checks ))

# For the record (kept with the run directory on failure or DSR_FLEET_KEEP=1):
# the hosts' journals of dsr-agent and the web service, keepalived's log.
for m in rs1 rs2; do rsh "$m" journalctl -o short-precise --no-pager -u dsr-agent -u web >"$run/journal-$m.log" 2>&1; done
g cat /var/lib/fleet/keepalived.log >"$run/keepalived.log" 2>&1
