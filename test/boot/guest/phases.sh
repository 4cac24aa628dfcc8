#!/bin/bash
# In-VM side of `make test-boot`. Run by boot-test-runner.service on every
# boot with `boottest=1`; the phase to run is kept in $STATE/phase on the
# guest's disk, so the test survives its own reboots:
#   1 install deb, configure, enable+start, snapshot, reboot
#   2 checks 1-3 after the reboot, drain, reboot
#   3 check 4 (still drained), undrain, check 5 (remove + uninstall), rpm, poweroff
# Results go to the host as lines "@@BT <KIND> <name> <detail>" on the virtio
# port "boottest" (and the console):
#   PASS/FAIL name detail | INFO text | METRIC name value | PHASE n | END
set -u
P=/run/boot-test/payload
STATE=/var/lib/boot-test
mkdir -p "$STATE"
# shellcheck source=/dev/null
. "$P/params.env"
BT_MARKERS_LOG=$STATE/markers.log
# shellcheck source=../../boot/guest/lib.sh
. "$P/lib.sh"
check() { # check NAME DETAIL -- command...
	local name=$1 detail=$2
	shift 3
	if "$@" >"$STATE/last.out" 2>&1; then pass "$name" "$detail"; else
		fail "$name" "$detail: $(tr '\n' ' ' <"$STATE/last.out" | cut -c1-400)"
		return 1
	fi
}
infofile() { # infofile PREFIX FILE: each line of FILE as INFO (bounded)
	head -n "${3:-40}" "$2" | while IFS= read -r l; do info "$1 $l"; done
}
finish() { # finish reboot|poweroff
	sync
	emit PHASE-DONE "$phase"
	systemctl --no-block "$1"
	exit 0
}

# --- host snapshots ------------------------------------------------------------
sysctls() { # every ipv4/ipv6 conf value of all/default/lo/dsr0, sorted
	local d
	for d in /proc/sys/net/ipv4/conf/{all,default,lo,dsr0} /proc/sys/net/ipv6/conf/{all,default,lo,dsr0}; do
		[ -d "$d" ] || continue
		grep -H . "$d"/* 2>/dev/null | sed 's|^/proc/sys/||; s|/|.|g; s|:| = |' | grep -v stable_secret
	done | sort
}
addrs() { ip -o addr show | awk '{ $1 = ""; print }' | sed 's/ valid_lft.*//; s/ preferred_lft.*//' | sort; }
tables() { nft list tables 2>/dev/null | sort; }
ruleset() { nft list ruleset 2>/dev/null; }
snapshot() { # snapshot NAME
	sysctls >"$STATE/$1.sysctl"
	addrs >"$STATE/$1.addrs"
	tables >"$STATE/$1.tables"
	ruleset >"$STATE/$1.ruleset"
}
same() { # same A B KIND: the two snapshots agree for KIND
	diff -u "$STATE/$1.$3" "$STATE/$2.$3"
}

wait_active() { # wait_active SECONDS: dsr-agent reached active (READY for Type=notify)
	local i st
	for i in $(seq "$(( $1 * 5 ))"); do
		st=$(systemctl show -p ActiveState --value dsr-agent 2>/dev/null)
		case $st in
		active) return 0 ;;
		failed) break ;;
		esac
		sleep 0.2
	done
	systemctl status --no-pager -l dsr-agent >"$STATE/status.out" 2>&1
	journalctl -b --no-pager -u dsr-agent | tail -n 30 >>"$STATE/status.out"
	return 1
}

health() { # health PATH -> prints "CODE BODY"
	curl -s -m 3 -o "$STATE/health.body" -w '%{http_code}' "http://$HEALTH_ADDR$1" 2>/dev/null
	printf ' %s' "$(tr '\n' ' ' <"$STATE/health.body" 2>/dev/null | cut -c1-200)"
}
wait_health() { # wait_health PATH CODE BODY-REGEX SECONDS
	local i out
	for i in $(seq "$(( $4 * 5 ))"); do
		out=$(health "$1")
		if [ "${out%% *}" = "$2" ] && printf '%s' "${out#* }" | grep -Eq "$3"; then echo "$out"; return 0; fi
		sleep 0.2
	done
	echo "got: $out"
	return 1
}

ready_checks() { # checks 1 and 2 (and the READY metrics); $1 = label
	local lbl=$1 t_ready t_start typ
	if wait_active 120; then
		typ=$(systemctl show -p Type --value dsr-agent)
		t_ready=$(systemctl show -p ActiveEnterTimestampMonotonic --value dsr-agent)
		t_start=$(systemctl show -p ExecMainStartTimestampMonotonic --value dsr-agent)
		pass "ready-$lbl" "dsr-agent ActiveState=active SubState=$(systemctl show -p SubState --value dsr-agent) Type=$typ NRestarts=$(systemctl show -p NRestarts --value dsr-agent)"
		[ "$typ" = notify ] || fail "ready-notify-$lbl" "unit Type=$typ, want notify (READY=1 via sd_notify)"
		emit METRIC "boot_to_ready_ms_$lbl" "$(( t_ready / 1000 ))"
		emit METRIC "start_to_ready_ms_$lbl" "$(( (t_ready - t_start) / 1000 ))"
		emit METRIC "kernel_to_userspace_ms_$lbl" "$(systemctl show -p UserspaceTimestampMonotonic --value | awk '{ print int($1 / 1000) }')"
	else
		fail "ready-$lbl" "dsr-agent did not become active within 120 s"
		infofile "status:" "$STATE/status.out"
	fi
	snapshot "after-$lbl"
	# 1. sysctls, VIPs, tables are back: compared with the snapshot taken
	#    before the reboot, plus the explicit expectations of the mode.
	check "sysctl-back-$lbl" "ARP sysctls equal to before the reboot" -- same converged "after-$lbl" sysctl
	check "vips-back-$lbl" "addresses equal to before the reboot" -- same converged "after-$lbl" addrs
	check "tables-back-$lbl" "nftables tables equal to before the reboot ($(tr '\n' ' ' <"$STATE/converged.tables"))" -- same converged "after-$lbl" tables
	check "ruleset-back-$lbl" "nftables ruleset equal to before the reboot" -- same converged "after-$lbl" ruleset
	expect_converged "$lbl"
	check "status-$lbl" "dsr-agent status exits 0" -- dsr-agent status
	# 2. the health endpoint answers on the host's own address.
}

expect_converged() { # the explicit per-mode expectations
	local lbl=$1
	case $MODE in
	loopback)
		check "arp-sysctl-$lbl" "arp_ignore>=1 arp_announce>=2 on all or dsr0" -- sh -c '
			for k in arp_ignore:1 arp_announce:2; do n=${k%:*} w=${k#*:}
				a=$(cat /proc/sys/net/ipv4/conf/all/$n) d=$(cat /proc/sys/net/ipv4/conf/dsr0/$n)
				[ "$a" -ge "$w" ] || [ "$d" -ge "$w" ] || { echo "$n all=$a dsr0=$d"; exit 1; }
			done'
		check "vip4-$lbl" "$VIP4/32 on lo" -- sh -c "ip -o -4 addr show dev lo | grep -q ' $VIP4/32 '"
		check "vip6-$lbl" "$VIP6/128 on lo" -- sh -c "ip -o -6 addr show dev lo | grep -q ' $VIP6/128 '"
		;;
	arptables)
		check "vip4-$lbl" "$VIP4 on dsr0" -- sh -c "ip -o -4 addr show dev dsr0 | grep -q ' $VIP4/'"
		check "vip6-$lbl" "$VIP6 on lo or dsr0" -- sh -c "ip -o -6 addr show | grep -q ' $VIP6/'"
		check "arp-table-$lbl" "an arp table exists" -- sh -c "nft list tables arp | grep -q ."
		;;
	esac
}

full6() { # full6 ADDR: the first group pair of an IPv6 address as 8 hex digits
	local a=$1 g1 g2
	g1=${a%%:*}; a=${a#*:}; g2=${a%%:*}
	[ -n "$g2" ] || g2=0
	printf '%04x%04x' "0x$g1" "0x$g2"
}

# --- ARP-before-VIP ordering from the kernel trace (check 3) ------------------
arp_order_check() {
	local T=/sys/kernel/tracing/trace
	cp "$T" "$STATE/boot.trace" 2>/dev/null || true
	if ! grep -q bt-monitor-start "$STATE/boot.trace" 2>/dev/null; then
		fail arp-before-vip "no kernel trace from boot-test-monitor (kprobes unavailable?)"
		return
	fi
	grep -E 'bt_|bt-monitor' "$STATE/boot.trace" | grep -v '^#' | head -n 60 |
		sed -E 's/^ *//; s/ +/ /g; s/\(([a-z_0-9]+)\+0x0\/0x[0-9a-f]+\)/\1/' >"$STATE/timeline"
	infofile "trace:" "$STATE/timeline" 40
	# The first address add after the monitor started is dsr-agent's first VIP
	# (the test's own addresses are added before the monitor starts; nothing
	# else in this VM adds addresses). ARP suppression must be in force then.
	local o1 o2 o3 o4 vip4hex vip6hex
	IFS=. read -r o1 o2 o3 o4 <<<"$VIP4"
	vip4hex=$(printf '0x%x' $(( o4 << 24 | o3 << 16 | o2 << 8 | o1 )))
	# first 4 bytes of the IPv6 VIP (full form), as a little-endian u32
	local f6
	f6=$(full6 "$VIP6")
	vip6hex=$(printf '0x%x' $(( 0x${f6:6:2} << 24 | 0x${f6:4:2} << 16 | 0x${f6:2:2} << 8 | 0x${f6:0:2} )))
	awk -v mode="$MODE" -v vip4hex="$vip4hex" -v vip6hex="$vip6hex" '
		function ts(  i) { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) return substr($i, 1, length($i) - 1); return "?" }
		/bt-monitor-start/ {
			started = 1
			for (i = 1; i <= NF; i++) {
				if ($i ~ /^all\.arp_ignore=/)   { split($i, a, "="); ig = a[2] + 0 }
				if ($i ~ /^all\.arp_announce=/) { split($i, a, "="); an = a[2] + 0 }
				if ($i ~ /^tables=/ && $i ~ /arp/) arptab = 1
			}
			start = ts(); next
		}
		!started { next }
		/bt_sysctl:/ {
			v = ""; n = ""
			for (i = 1; i <= NF; i++) { if ($i ~ /^name=/) { n = $i; gsub(/name=|"/, "", n) } if ($i ~ /^v=/) { v = substr($i, 3) } }
			v = v - 48   # ASCII digit
			if (n == "arp_ignore" && v > ig0) ig0 = v
			if (n == "arp_announce" && v > an0) an0 = v
			if (n == "arp_ignore" && v >= 1 && !tig) tig = ts()
			if (n == "arp_announce" && v >= 2 && !tan) tan = ts()
			next
		}
		/bt_newtable:/ { if (!ttab) ttab = ts(); next }
		/bt_newrule:/  { if (!trule) trule = ts(); next }
		/bt_newsetelem:/ { if (!tsel) tsel = ts(); next }
		/bt_newaddr[46]:/ {
			# Only an add of one of the VIPs counts (systemd also adds
			# 127.0.0.1/::1 when it sets up a service).
			pl = ""; addr = ""
			for (i = 1; i <= NF; i++) { if ($i ~ /^pl=/) pl = substr($i, 4); if ($i ~ /^a=/) addr = substr($i, 3) }
			if ($0 ~ /bt_newaddr4:/ && addr != vip4hex) next
			if ($0 ~ /bt_newaddr6:/ && (pl != 128 || addr != vip6hex)) next
			if (done) next
			done = 1; tvip = ts()
			if (mode == "loopback") {
				ok_ig = (ig >= 1) || tig; ok_an = (an >= 2) || tan
				printf "first VIP add at %s; arp_ignore>=1 %s; arp_announce>=2 %s\n", tvip,
					(ig >= 1 ? "from boot (before monitor at " start ")" : (tig ? "written at " tig : "NOT in force")),
					(an >= 2 ? "from boot (before monitor at " start ")" : (tan ? "written at " tan : "NOT in force"))
				exit (ok_ig && ok_an) ? 0 : 1
			}
			printf "first VIP add at %s; first nft table at %s, rule at %s, set element at %s\n", tvip, (ttab ? ttab : "-"), (trule ? trule : "-"), (tsel ? tsel : "-")
			exit (arptab || (ttab && trule)) ? 0 : 1
		}
		END { if (!done) { print "no VIP add seen after the monitor started"; exit 1 } }
	' "$STATE/boot.trace" >"$STATE/order.out" 2>&1
	if [ $? = 0 ]; then pass arp-before-vip "$(cat "$STATE/order.out")"; else fail arp-before-vip "$(cat "$STATE/order.out")"; fi
	journalctl -b -o short-monotonic --no-pager -u dsr-agent | head -n 25 >"$STATE/journal.head"
	infofile "journal:" "$STATE/journal.head" 25
}

# --- no trace left (check 5) ---------------------------------------------------
no_trace_checks() { # $1 = label
	snapshot "removed-$1"
	check "sysctls-restored-$1" "ipv4/ipv6 conf sysctls equal to before install" -- same baseline "removed-$1" sysctl
	check "addrs-removed-$1" "addresses equal to before install" -- same baseline "removed-$1" addrs
	check "tables-removed-$1" "nftables ruleset equal to before install" -- same baseline "removed-$1" ruleset
}

files_gone() { # files_gone LISTFILE KEEP-REGEX: every listed file is gone unless it matches KEEP
	local f bad=""
	while IFS= read -r f; do
		[ -n "$f" ] || continue
		if [ -n "$2" ] && printf '%s\n' "$f" | grep -Eq "$2"; then continue; fi
		if [ -f "$f" ] || [ -L "$f" ]; then bad="$bad $f"; fi
	done <"$1"
	[ -z "$bad" ] || { echo "left behind:$bad"; return 1; }
}
no_unit_left() {
	[ "$(systemctl show -p LoadState --value dsr-agent)" = not-found ] || { echo "unit LoadState=$(systemctl show -p LoadState --value dsr-agent)"; return 1; }
	local left
	left=$(find /etc/systemd/system /run/systemd/system /usr/lib/systemd/system /lib/systemd/system -name 'dsr-agent*' 2>/dev/null)
	[ -z "$left" ] || { echo "left: $left"; return 1; }
	! pgrep -x dsr-agent >/dev/null || { echo "dsr-agent still running"; return 1; }
}

# ------------------------------------------------------------------------------
phase=$(cat "$STATE/phase" 2>/dev/null || echo 1)
emit PHASE "$phase" "boot=$(cat /proc/sys/kernel/random/boot_id) uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"

case $phase in
1)
	# Fixtures that must run early on the next boots: the dummy NIC and the
	# kernel-trace monitor. Start them now for this boot too.
	install -m 0755 "$P/boot-test-net" "$P/boot-test-monitor" /usr/local/sbin/
	install -m 0644 "$P/boot-test-net.service" "$P/boot-test-monitor.service" /etc/systemd/system/
	systemctl daemon-reload
	systemctl enable -q boot-test-net.service boot-test-monitor.service
	systemctl start boot-test-net.service boot-test-monitor.service
	snapshot baseline
	info "baseline: $(grep -E 'ipv4.conf.(all|dsr0).arp_(ignore|announce) ' "$STATE/baseline.sysctl" | tr '\n' ';')"

	check install-deb "dpkg -i $(basename "$DEB")" -- dpkg -i "$P/$DEB" || finish poweroff
	dpkg -L dsr-agent | sort >"$STATE/deb.files"
	dpkg-query -W -f='${Conffiles}\n' dsr-agent | awk 'NF { print $1 }' >"$STATE/deb.conffiles"
	info "deb installs $(wc -l <"$STATE/deb.files") paths; conffiles: $(tr '\n' ' ' <"$STATE/deb.conffiles")"
	info "after install: is-enabled=$(systemctl is-enabled dsr-agent 2>&1) is-active=$(systemctl is-active dsr-agent 2>&1)"
	check unit-installed "systemd knows dsr-agent.service" -- sh -c '[ "$(systemctl show -p LoadState --value dsr-agent)" = loaded ]'

	install -d -m 0755 /etc/dsr-agent
	install -m 0644 "$P/config.yaml" /etc/dsr-agent/config.yaml
	check validate "dsr-agent validate accepts the test config" -- dsr-agent validate
	check enable "systemctl enable dsr-agent" -- systemctl enable dsr-agent
	systemctl restart dsr-agent
	if wait_active 60; then pass start-first "dsr-agent active before the reboot"; else
		fail start-first "dsr-agent not active after start"; infofile "status:" "$STATE/status.out"
	fi
	check status-first "dsr-agent status exits 0 before the reboot" -- dsr-agent status
	wait_health /healthz 200 '^up' 10 >/dev/null || true
	snapshot converged
	info "converged tables: $(tr '\n' ';' <"$STATE/converged.tables")"
	echo 2 >"$STATE/phase"
	finish reboot
	;;
2)
	ready_checks reboot1
	if out=$(wait_health /healthz 200 '^up' 15); then pass health-up "GET http://$HEALTH_ADDR/healthz -> $out"; else
		fail health-up "GET http://$HEALTH_ADDR/healthz: $out"
	fi
	arp_order_check
	# 4. drain before the next reboot.
	check drain "dsr-agent drain" -- dsr-agent drain
	if out=$(wait_health /healthz 503 drain 10); then pass drain-health "after drain: $out"; else fail drain-health "after drain: $out"; fi
	echo 3 >"$STATE/phase"
	finish reboot
	;;
3)
	ready_checks reboot2
	if out=$(wait_health /healthz 503 drain 15); then pass still-drained "after the reboot: $out"; else fail still-drained "after the reboot: $out"; fi
	check undrain "dsr-agent undrain" -- dsr-agent undrain
	if out=$(wait_health /healthz 200 '^up' 10); then pass undrain-health "after undrain: $out"; else fail undrain-health "after undrain: $out"; fi

	# 5. remove, then uninstall: no trace but the edited config.
	systemctl disable --now dsr-agent >/dev/null 2>&1
	check remove "dsr-agent remove" -- dsr-agent remove
	no_trace_checks after-remove
	check deb-remove "dpkg -r dsr-agent" -- dpkg -r dsr-agent
	check deb-files-gone "files of the package gone (conffiles kept)" -- files_gone "$STATE/deb.files" "^($(paste -sd'|' "$STATE/deb.conffiles"))\$"
	check deb-config-kept "edited /etc/dsr-agent/config.yaml kept" -- cmp "$P/config.yaml" /etc/dsr-agent/config.yaml
	check deb-unit-gone "no dsr-agent unit, symlink or process left" -- no_unit_left
	# Debian semantics: remove keeps state, purge deletes it. After
	# `dsr-agent remove` nothing dsr-agent owned may be recorded there.
	check deb-state-after-remove "no state in /var/lib/dsr-agent after remove (an empty lock file may stay until purge)" -- \
		sh -c 'left=$(find /var/lib/dsr-agent -mindepth 1 ! \( -name lock -size 0 \) 2>/dev/null); [ -z "$left" ] || { echo "left: $left"; exit 1; }'
	info "after dpkg -r: /var/lib/dsr-agent: $(ls -A /var/lib/dsr-agent 2>&1 | tr '\n' ' ')"
	no_trace_checks after-deb-remove
	check deb-purge "dpkg -P dsr-agent" -- dpkg -P dsr-agent
	check deb-purge-config-gone "purge removes /etc/dsr-agent/config.yaml" -- sh -c '! [ -e /etc/dsr-agent/config.yaml ]'
	check deb-purge-state-gone "purge removes /var/lib/dsr-agent" -- sh -c '! [ -e /var/lib/dsr-agent ] || { ls -la /var/lib/dsr-agent; exit 1; }'

	# The RPM, with Debian's rpm: files land, scriptlets run, erase cleans up.
	if [ -n "${RPM:-}" ]; then
		rpm -qp --scripts "$P/$RPM" >"$STATE/rpm.scripts" 2>&1
		rpm -qlp "$P/$RPM" 2>/dev/null | sort >"$STATE/rpm.files"
		rpm -qp --configfiles "$P/$RPM" 2>/dev/null | sort >"$STATE/rpm.config"
		info "rpm: $(wc -l <"$STATE/rpm.files") paths; scriptlets: $(grep -Eo '^[a-z]+ scriptlet' "$STATE/rpm.scripts" | tr '\n' ',')"
		check rpm-install "rpm -i --nodeps $(basename "$RPM") (scriptlets run)" -- rpm -i --nodeps "$P/$RPM"
		check rpm-files "every file of the RPM installed" -- sh -c 'while read -r f; do [ -e "$f" ] || { echo "missing $f"; exit 1; }; done <'"$STATE/rpm.files"
		check rpm-unit "systemd loads dsr-agent.service from the RPM" -- sh -c '[ "$(systemctl show -p LoadState --value dsr-agent)" = loaded ]'
		info "rpm after install: is-enabled=$(systemctl is-enabled dsr-agent 2>&1) is-active=$(systemctl is-active dsr-agent 2>&1)"
		if grep -q 'systemctl.*preset' "$STATE/rpm.scripts"; then
			check rpm-post-preset "%post ran systemctl preset (unit enabled per Debian's default preset)" -- sh -c '[ "$(systemctl is-enabled dsr-agent)" = enabled ]'
		fi
		install -m 0644 "$P/config.yaml" /etc/dsr-agent/config.yaml
		echo "# edited by the boot test" >>/etc/dsr-agent/config.yaml
		check rpm-erase "rpm -e dsr-agent (scriptlets run)" -- rpm -e dsr-agent
		check rpm-files-gone "files of the RPM gone (edited config kept)" -- files_gone "$STATE/rpm.files" "^($(paste -sd'|' "$STATE/rpm.config"))\$"
		check rpm-config-kept "edited config kept (as is or .rpmsave)" -- sh -c 'grep -q "edited by the boot test" /etc/dsr-agent/config.yaml* 2>/dev/null'
		check rpm-unit-gone "no dsr-agent unit, symlink or process left" -- no_unit_left
		check rpm-state-gone "no /var/lib/dsr-agent left after rpm -e" -- sh -c '! [ -e /var/lib/dsr-agent ] || { ls -la /var/lib/dsr-agent; exit 1; }'
		no_trace_checks after-rpm-erase
	else
		info "no RPM given: RPM checks skipped"
	fi
	emit END "phase=3"
	finish poweroff
	;;
*)
	info "unknown phase $phase"
	finish poweroff
	;;
esac
