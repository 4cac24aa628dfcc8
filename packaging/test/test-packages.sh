#!/usr/bin/env bash
# Tests of the built dsr-agent packages (make test-packaging). Builds v1 (the
# version make would ship) and a v2 with a higher version and a changed config,
# then checks:
#   - the unit: systemd-analyze verify, systemd-analyze security <= 3.0, key settings;
#   - RPM metadata: file list, config/doc/license flags, modes, requires, scriptlets;
#   - the payload: static binary, --version, man page, bash completion, config;
#   - real installs with rpm --root and dpkg --root into scratch roots: install,
#     edit the config, upgrade (the edit survives; .rpmnew / .dpkg-dist appear),
#     erase/remove/purge. rpm and dpkg run the scriptlets chrooted into the scratch
#     root, whose /bin/sh is busybox and whose /usr/bin/systemctl is a stand-in that
#     logs its arguments: each step must issue exactly the expected systemctl calls,
#     both with /run/systemd/system present (systemd "running") and absent (chroot,
#     image build), and must not fail where there is no systemctl at all.
# Needs root (chroot), rpm, dpkg, busybox (busybox-static), systemd-analyze, man,
# systemd-nspawn (systemd-container).
# Environment: PKG_VERSION, PKG_RELEASE, NFPM as for packaging/build.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."

: "${PKG_VERSION:?}" "${PKG_RELEASE:?}"
BINARY=${BINARY:-bin/dsr-agent}
UNIT=dsr-agent.service
MAX_EXPOSURE=${MAX_EXPOSURE:-3.0}

TAP_NAME=packaging
. packaging/test/tap.sh
# check DESC CMD...: run CMD, pass if it exits 0.
check() {
	local desc=$1
	shift
	if "$@"; then ok "$desc"; else bad "$desc"; fi
}

if [ "$(id -u)" -ne 0 ]; then
	if [ "${DSR_AGENT_REQUIRE_ROOT:-}" = 1 ]; then
		bad "must run as root (rpm --root / dpkg --root chroot into scratch roots)"
	else
		skipped "not root: package install tests need chroot"
	fi
	finish
fi
need_tools "make deps-packaging" rpm rpm2cpio cpio dpkg dpkg-deb busybox systemd-analyze man ldd

work=$(mktemp -d "${TMPDIR:-/tmp}/dsr-agent-pkgtest.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------- build
V1=$PKG_VERSION-$PKG_RELEASE
V2_VERSION=99.0.0
V2_RELEASE=1
cp packaging/config.yaml "$work/config-v2.yaml"
printf '\n# (v2 of the shipped example: changed so that the upgrade has a new config to offer)\n' >>"$work/config-v2.yaml"
if ! packaging/build.sh "$work/v1" rpm deb 2>"$work/build.log" ||
	! PKG_VERSION=$V2_VERSION PKG_RELEASE=$V2_RELEASE CONFIG_SRC="$work/config-v2.yaml" \
		packaging/build.sh "$work/v2" rpm deb 2>>"$work/build.log"; then
	cat "$work/build.log"
	bad "build v1 and v2 packages"
	finish
fi
rpm1=$(echo "$work"/v1/*.rpm)
deb1=$(echo "$work"/v1/*.deb)
rpm2=$(echo "$work"/v2/*.rpm)
deb2=$(echo "$work"/v2/*.deb)
ok "built $(basename "$rpm1") $(basename "$deb1") and v2 $(basename "$rpm2") $(basename "$deb2")"

# ---------------------------------------------------------------- RPM metadata
same "rpm -qlp: file list" "/etc/dsr-agent
/etc/dsr-agent/config.d
/etc/dsr-agent/config.yaml
/usr/bin/dsr-agent
/usr/lib/firewalld
/usr/lib/firewalld/services
/usr/lib/firewalld/services/dsr-agent.xml
/usr/lib/systemd/system/dsr-agent.service
/usr/share/bash-completion/completions/dsr-agent
/usr/share/doc/dsr-agent/CHANGELOG.md
/usr/share/doc/dsr-agent/README.md
/usr/share/doc/dsr-agent/alerts.md
/usr/share/doc/dsr-agent/examples/seed-stack.yaml
/usr/share/doc/dsr-agent/packaging.md
/usr/share/dsr-agent
/usr/share/dsr-agent/grafana
/usr/share/dsr-agent/grafana/dsr-agent-pool.json
/usr/share/dsr-agent/prometheus
/usr/share/dsr-agent/prometheus/dsr-agent.rules.yml
/usr/share/licenses/dsr-agent/LICENSE
/usr/share/man/man8/dsr-agent.8.gz
/var/lib/dsr-agent" "$(rpm -qlp "$rpm1")"

# %config(noreplace) = flags "cn"; %doc = "d"; %license = "l"; modes and owners.
same "rpm: config(noreplace), doc, license flags; modes and owners" "<> drwxr-xr-x root:root /etc/dsr-agent
<> drwxr-xr-x root:root /etc/dsr-agent/config.d
<cn> -rw-r--r-- root:root /etc/dsr-agent/config.yaml
<> -rwxr-xr-x root:root /usr/bin/dsr-agent
<> drwxr-xr-x root:root /usr/lib/firewalld
<> drwxr-xr-x root:root /usr/lib/firewalld/services
<> -rw-r--r-- root:root /usr/lib/firewalld/services/dsr-agent.xml
<> -rw-r--r-- root:root /usr/lib/systemd/system/dsr-agent.service
<> -rw-r--r-- root:root /usr/share/bash-completion/completions/dsr-agent
<d> -rw-r--r-- root:root /usr/share/doc/dsr-agent/CHANGELOG.md
<d> -rw-r--r-- root:root /usr/share/doc/dsr-agent/README.md
<d> -rw-r--r-- root:root /usr/share/doc/dsr-agent/alerts.md
<d> -rw-r--r-- root:root /usr/share/doc/dsr-agent/examples/seed-stack.yaml
<d> -rw-r--r-- root:root /usr/share/doc/dsr-agent/packaging.md
<> drwxr-xr-x root:root /usr/share/dsr-agent
<> drwxr-xr-x root:root /usr/share/dsr-agent/grafana
<> -rw-r--r-- root:root /usr/share/dsr-agent/grafana/dsr-agent-pool.json
<> drwxr-xr-x root:root /usr/share/dsr-agent/prometheus
<> -rw-r--r-- root:root /usr/share/dsr-agent/prometheus/dsr-agent.rules.yml
<l> -rw-r--r-- root:root /usr/share/licenses/dsr-agent/LICENSE
<> -rw-r--r-- root:root /usr/share/man/man8/dsr-agent.8.gz
<> drwx------ root:root /var/lib/dsr-agent" \
	"$(rpm -qp --qf '[<%{FILEFLAGS:fflags}> %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILENAMES}\n]' "$rpm1")"

# Static binary and scriptlets that tolerate a missing systemctl: nothing to require.
same "rpm --requires: none (static binary; scriptlets need only sh)" "" \
	"$(rpm -qp --requires "$rpm1" | grep -v '^rpmlib(' || true)"
same "rpm: name, version, release, license" "dsr-agent $PKG_VERSION $PKG_RELEASE Apache-2.0" \
	"$(rpm -qp --qf '%{NAME} %{VERSION} %{RELEASE} %{LICENSE}' "$rpm1")"

scripts=$(rpm -qp --scripts "$rpm1")
same "rpm --scripts: exactly %post, %preun, %postun" "postinstall scriptlet (using /bin/sh):
preuninstall scriptlet (using /bin/sh):
postuninstall scriptlet (using /bin/sh):" "$(grep 'scriptlet' <<<"$scripts")"
rpm_script() { # the body of one scriptlet, as rpm stores it
	rpm -qp --qf "%{$1}" "$rpm1"
}
same "rpm %post is packaging/scripts/rpm/post.sh" "$(cat packaging/scripts/rpm/post.sh)" "$(rpm_script POSTIN)"
same "rpm %preun is packaging/scripts/rpm/preun.sh" "$(cat packaging/scripts/rpm/preun.sh)" "$(rpm_script PREUN)"
same "rpm %postun is packaging/scripts/rpm/postun.sh" "$(cat packaging/scripts/rpm/postun.sh)" "$(rpm_script POSTUN)"

# ---------------------------------------------------------------- DEB metadata
same "deb: file list" "./etc/dsr-agent/config.d/
./etc/dsr-agent/config.yaml
./usr/bin/dsr-agent
./usr/lib/firewalld/services/dsr-agent.xml
./usr/lib/systemd/system/dsr-agent.service
./usr/share/bash-completion/completions/dsr-agent
./usr/share/doc/dsr-agent/CHANGELOG.md
./usr/share/doc/dsr-agent/README.md
./usr/share/doc/dsr-agent/alerts.md
./usr/share/doc/dsr-agent/copyright
./usr/share/doc/dsr-agent/examples/seed-stack.yaml
./usr/share/doc/dsr-agent/packaging.md
./usr/share/dsr-agent/grafana/dsr-agent-pool.json
./usr/share/dsr-agent/prometheus/dsr-agent.rules.yml
./usr/share/man/man8/dsr-agent.8.gz
./var/lib/dsr-agent/" "$(dpkg-deb -c "$deb1" | awk '$1 !~ /^d/ || $NF == "./var/lib/dsr-agent/" || $NF == "./etc/dsr-agent/config.d/" {print $NF}' | sort)"
mkdir -p "$work/debctl"
dpkg-deb -e "$deb1" "$work/debctl"
same "deb conffiles: the config only" "/etc/dsr-agent/config.yaml" "$(cat "$work/debctl/conffiles")"
same "deb: no Depends/Pre-Depends" "" "$(dpkg-deb -f "$deb1" Depends Pre-Depends)"
same "deb: version" "$V1" "$(dpkg-deb -f "$deb1" Version)"
for s in postinst prerm postrm; do
	same "deb $s is packaging/scripts/deb/$s.sh" "$(cat "packaging/scripts/deb/$s.sh")" "$(cat "$work/debctl/$s")"
done
check "deb: no preinst, no triggers" test ! -e "$work/debctl/preinst" -a ! -e "$work/debctl/triggers"

# ---------------------------------------------------------------- payload
x=$work/payload
mkdir -p "$x"
# nfpm's cpio payload has absolute names: --no-absolute-filenames keeps cpio
# inside $x (without it, cpio would write the payload into /).
rpm2cpio "$rpm1" | (cd "$x" && cpio -idm --quiet --no-absolute-filenames 2>/dev/null)
dx=$work/debpayload
dpkg-deb -x "$deb1" "$dx"
check "rpm and deb ship the same binary" cmp -s "$x/usr/bin/dsr-agent" "$dx/usr/bin/dsr-agent"
check "rpm and deb ship the same unit" cmp -s "$x/usr/lib/systemd/system/$UNIT" "$dx/usr/lib/systemd/system/$UNIT"
check "the packaged unit is packaging/$UNIT" cmp -s "$x/usr/lib/systemd/system/$UNIT" "packaging/$UNIT"
check "the packaged config is packaging/config.yaml" cmp -s "$x/etc/dsr-agent/config.yaml" packaging/config.yaml
check "the packaged alerting rules are deploy/prometheus's" cmp -s "$x/usr/share/dsr-agent/prometheus/dsr-agent.rules.yml" deploy/prometheus/dsr-agent.rules.yml
check "the packaged dashboard is deploy/grafana's" cmp -s "$x/usr/share/dsr-agent/grafana/dsr-agent-pool.json" deploy/grafana/dsr-agent-pool.json
check "rpm and deb ship the same rules" cmp -s "$x/usr/share/dsr-agent/prometheus/dsr-agent.rules.yml" "$dx/usr/share/dsr-agent/prometheus/dsr-agent.rules.yml"
check "rpm and deb ship the same dashboard" cmp -s "$x/usr/share/dsr-agent/grafana/dsr-agent-pool.json" "$dx/usr/share/dsr-agent/grafana/dsr-agent-pool.json"
check "LICENSE is Apache-2.0" grep -q 'Apache License' "$x/usr/share/licenses/dsr-agent/LICENSE"
bin=$x/usr/bin/dsr-agent
if ldd "$bin" >/dev/null 2>&1; then bad "binary is static"; else ok "binary is static (ldd: not a dynamic executable)"; fi
ver=$("$bin" --version)
# The version is VERSION's (the package's own version may differ: v2 below);
# a build from a tree with uncommitted changes says so in the commit.
if [[ $ver =~ ^dsr-agent\ $(cat VERSION)\ \(commit\ [0-9a-f]{7,}(-dirty)?\)$ ]]; then
	ok "version-stamped: $ver"
else
	bad "version-stamped: got '$ver'"
fi
same "packaged binary is bin/dsr-agent's build" "$("$BINARY" --version)" "$ver"

man=$x/usr/share/man/man8/dsr-agent.8.gz
mantext=$(MANWIDTH=100 man -l "$man" 2>&1)
check "man page renders with the CLI's commands and exit status" \
	bash -c 'for w in NAME SYNOPSIS validate apply status remove "EXIT STATUS" FILES /etc/dsr-agent/config.yaml; do grep -q -- "$w" <<<"$1" || { echo "man page lacks $w"; exit 1; }; done' _ "$mantext"
check "man page has no hidden commands" bash -c '! grep -q gen-man <<<"$1"' _ "$mantext"
same "man page is gen-man of the shipped binary" "$("$bin" gen-man)" "$(zcat "$man")"
check "man -w finds dsr-agent(8) under the payload" bash -c 'MANPATH="$1" man -w 8 dsr-agent >/dev/null' _ "$x/usr/share/man"
comp=$x/usr/share/bash-completion/completions/dsr-agent
same "bash completion registers for dsr-agent" "complete -o bashdefault -o default -o nospace -F _dsr_agent_bash_autocomplete dsr-agent" \
	"$(bash -c 'source "$1" && complete -p dsr-agent' _ "$comp")"
# The completion asks the binary: the candidates it offers are the visible commands.
same "completion candidates (dsr-agent --generate-bash-completion)" "validate apply status remove check prepare probe run drain undrain reload" \
	"$("$bin" --generate-bash-completion | awk -F: '{print $1}' | xargs)"

cfgtest=$work/cfg
mkdir -p "$cfgtest/state"
if [ -e agent/stub_api.go ]; then
	skipped "example config validates: the core (agent) is still the stub"
else
	out=$("$bin" --config "$x/etc/dsr-agent/config.yaml" --state-dir "$cfgtest/state" validate 2>&1)
	rc=$?
	if [ $rc -eq 0 ] && grep -q '0 VIP' <<<"$out"; then ok "example config validates with no VIPs: $out"; else bad "example config validates (rc $rc): $out"; fi
fi

# ---------------------------------------------------------------- unit
# verify loads the unit as systemd would and checks that ExecStart= exists and
# that Documentation=man: resolves. The installed path /usr/bin/dsr-agent does
# not exist on a build machine, so verify a copy whose ExecStart points at the
# extracted payload binary, with MANPATH at the payload's man page.
mkdir -p "$work/unit"
sed "s|^\(ExecStart\(Pre\)\?=[-+]*\)/usr/bin/dsr-agent |\1$bin |; s|^ExecReload=-+/usr/bin/dsr-agent |ExecReload=-+$bin |" "packaging/$UNIT" >"$work/unit/$UNIT"
check "verify copy has ExecStart rewritten" grep -q "^ExecStart=$bin run\$" "$work/unit/$UNIT"
if out=$(MANPATH="$x/usr/share/man" systemd-analyze verify "$work/unit/$UNIT" 2>&1); then
	ok "systemd-analyze verify"
else
	bad "systemd-analyze verify: $out"
fi
sec=$(systemd-analyze security --offline=yes "$work/unit/$UNIT" 2>&1)
score=$(sed -n 's/.*Overall exposure level for dsr-agent.service: \([0-9.]*\).*/\1/p' <<<"$sec")
if [ -n "$score" ] && awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN{exit !(s <= m)}'; then
	ok "systemd-analyze security --offline=yes: exposure $score <= $MAX_EXPOSURE"
else
	bad "systemd-analyze security --offline=yes: exposure '${score:-?}' > $MAX_EXPOSURE"
	grep '✗' <<<"$sec" | sed 's/^/       /'
fi
unitprop() { # the effective value of a [Service]/[Unit] key (last assignment)
	grep "^$1=" "packaging/$UNIT" | tail -1 | cut -d= -f2-
}
same "Type=notify" notify "$(unitprop Type)"
same "Restart=on-failure" on-failure "$(unitprop Restart)"
same "ExecReload sends SIGHUP" '/bin/kill -HUP $MAINPID' "$(unitprop ExecReload)"
same "modules loaded outside the sandbox first" '-+/usr/bin/dsr-agent prepare' "$(unitprop ExecStartPre)"
check "WatchdogSec set" test -n "$(unitprop WatchdogSec)"
same "capabilities: CAP_NET_ADMIN only" CAP_NET_ADMIN "$(unitprop CapabilityBoundingSet)"
same "address families" "AF_UNIX AF_INET AF_INET6 AF_NETLINK" "$(unitprop RestrictAddressFamilies)"
same "ProtectSystem=strict" strict "$(unitprop ProtectSystem)"
same "StateDirectory" dsr-agent "$(unitprop StateDirectory)"
same "/proc/sys/net writable" /proc/sys/net "$(unitprop ReadWritePaths)"
same "before the network is configured" network-pre.target "$(unitprop Before)"
same "pulls in network-pre.target" network-pre.target "$(unitprop Wants)"
check "after the firewall services" bash -c 'for u in firewalld.service nftables.service iptables.service systemd-sysctl.service; do grep -qw "$u" <<<"$1" || exit 1; done' _ "$(unitprop After)"

# ---------------------------------------------------------------- scratch roots
# mkroot DIR online|offline|nosystemctl: busybox as /bin/sh; a stand-in systemctl
# that appends its arguments to /systemctl.log; /run/systemd/system when online.
mkroot() {
	local r=$1
	mkdir -p "$r/bin" "$r/usr/bin" "$r/tmp" "$r/var/lib/rpm" "$r/var/lib/dpkg/info" "$r/var/lib/dpkg/updates" "$r/etc" "$r/dev"
	# The scriptlets redirect to /dev/null, as the systemd macros do.
	mknod -m 0666 "$r/dev/null" c 1 3 2>/dev/null || : >"$r/dev/null"
	cp /bin/busybox "$r/bin/busybox"
	ln -s busybox "$r/bin/sh"
	for a in rm cat; do ln -s busybox "$r/bin/$a"; done
	: >"$r/var/lib/dpkg/status"
	: >"$r/var/lib/dpkg/available"
	if [ "$2" != nosystemctl ]; then
		printf '#!/bin/sh\necho "$*" >>/systemctl.log\n' >"$r/usr/bin/systemctl"
		chmod 0755 "$r/usr/bin/systemctl"
	fi
	[ "$2" = offline ] || mkdir -p "$r/run/systemd/system"
	: >"$r/systemctl.log"
}
# calls DIR: the systemctl calls logged since the last call, then reset.
calls() {
	cat "$1/systemctl.log"
	: >"$1/systemctl.log"
}
# quiet DESC ALLOWED CMD...: run a package manager step; it must exit 0 and
# print nothing but lines matching the ERE ALLOWED (a failing scriptlet is only
# a warning for rpm, and a scriptlet's own error output must show up here).
quiet() {
	local desc=$1 allowed=$2 out extra
	shift 2
	if ! out=$("$@" 2>&1); then
		bad "$desc: exit status $?: $out"
		return
	fi
	extra=$(grep -vE "$allowed" <<<"$out")
	if [ -n "$extra" ]; then bad "$desc: unexpected output: $extra"; else ok "$desc"; fi
}
# Noise of Debian's rpm wrapper, and rpm's notes on the files it should create.
RPM_OK='^$|^rpm: RPM should not be used directly|^rpm: However assuming you know|^warning: /etc/dsr-agent/config.yaml (created as /etc/dsr-agent/config.yaml.rpmnew|saved as /etc/dsr-agent/config.yaml.rpmsave)$'
# dpkg's progress lines.
DPKG_OK='^$|^Selecting previously unselected package dsr-agent\.$|^\(Reading database \.\.\. |^Preparing to unpack .*dsr-agent|^Unpacking dsr-agent |^Setting up dsr-agent |^Removing dsr-agent |^Purging configuration files for dsr-agent |^dpkg: warning: while removing dsr-agent, directory .* not empty|^Configuration file ./etc/dsr-agent/config.yaml. |^ ==> (Modified \(by you or by a script\) since installation|Package distributor has shipped an updated version|Using current old file as you requested)\.$'
edit_config() {
	printf '# edited by the operator\n' >>"$1/etc/dsr-agent/config.yaml"
}

rpmr() { rpm --root "$1" --dbpath /var/lib/rpm "${@:2}"; }
# RPM: install, edit the config, upgrade, erase.
rpm_cycle() {
	local mode=$1 r=$work/rpm-$1
	local want_install=$2 want_upgrade=$3 want_erase=$4
	mkroot "$r" "$mode"
	rpmr "$r" --initdb
	quiet "rpm[$mode] install v1" "$RPM_OK" rpmr "$r" -i --nodeps "$rpm1"
	same "rpm[$mode] install: systemctl calls" "$want_install" "$(calls "$r")"
	check "rpm[$mode] installed /usr/bin/dsr-agent" test -x "$r/usr/bin/dsr-agent"
	same "rpm[$mode] state dir mode" 700 "$(stat -c %a "$r/var/lib/dsr-agent")"
	edit_config "$r"
	quiet "rpm[$mode] upgrade to v2" "$RPM_OK" rpmr "$r" -U --nodeps "$rpm2"
	same "rpm[$mode] upgrade: systemctl calls" "$want_upgrade" "$(calls "$r")"
	same "rpm[$mode] upgraded" "dsr-agent-$V2_VERSION-$V2_RELEASE" "$(rpmr "$r" -q --qf '%{NAME}-%{VERSION}-%{RELEASE}' dsr-agent)"
	check "rpm[$mode] upgrade keeps the edited config" grep -q '^# edited by the operator' "$r/etc/dsr-agent/config.yaml"
	check "rpm[$mode] upgrade leaves the new config as .rpmnew" cmp -s "$r/etc/dsr-agent/config.yaml.rpmnew" "$work/config-v2.yaml"
	quiet "rpm[$mode] erase" "$RPM_OK" rpmr "$r" -e dsr-agent
	same "rpm[$mode] erase: systemctl calls" "$want_erase" "$(calls "$r")"
	check "rpm[$mode] erase removes the binary and the unit" test ! -e "$r/usr/bin/dsr-agent" -a ! -e "$r/usr/lib/systemd/system/$UNIT"
	check "rpm[$mode] erase removes /usr/share/dsr-agent" test ! -e "$r/usr/share/dsr-agent"
	check "rpm[$mode] erase saves the edited config as .rpmsave" grep -q '^# edited by the operator' "$r/etc/dsr-agent/config.yaml.rpmsave"
}
rpm_cycle online "--no-reload preset $UNIT" "daemon-reload
try-restart $UNIT" "--no-reload disable $UNIT
stop $UNIT
daemon-reload"
# No running systemd (chroot, image build): only the symlink-editing calls.
rpm_cycle offline "--no-reload preset $UNIT" "" "--no-reload disable $UNIT"
# No systemctl at all (container): every step still succeeds silently.
rpm_cycle nosystemctl "" "" ""

# DEB: install, edit the config, upgrade, remove, purge (dpkg --root chroots for
# the maintainer scripts just as rpm does).
dpkgr() { dpkg --root="$1" --force-confold "${@:2}"; }
deb_cycle() {
	local mode=$1 r=$work/deb-$1
	local want_install=$2 want_upgrade=$3 want_remove=$4
	mkroot "$r" "$mode"
	quiet "deb[$mode] install v1" "$DPKG_OK" dpkgr "$r" -i "$deb1"
	same "deb[$mode] install: systemctl calls" "$want_install" "$(calls "$r")"
	same "deb[$mode] installed and configured" "ii $V1" "$(dpkg-query --admindir="$r/var/lib/dpkg" -W -f '${db:Status-Abbrev}${Version}' dsr-agent | tr -s ' ')"
	same "deb[$mode] state dir mode" 700 "$(stat -c %a "$r/var/lib/dsr-agent")"
	edit_config "$r"
	quiet "deb[$mode] upgrade to v2 (--force-confold)" "$DPKG_OK" dpkgr "$r" -i "$deb2"
	same "deb[$mode] upgrade: systemctl calls" "$want_upgrade" "$(calls "$r")"
	check "deb[$mode] upgrade keeps the edited config" grep -q '^# edited by the operator' "$r/etc/dsr-agent/config.yaml"
	check "deb[$mode] upgrade leaves the new config as .dpkg-dist" cmp -s "$r/etc/dsr-agent/config.yaml.dpkg-dist" "$work/config-v2.yaml"
	touch "$r/var/lib/dsr-agent/state-file"
	quiet "deb[$mode] remove" "$DPKG_OK" dpkgr "$r" -r dsr-agent
	same "deb[$mode] remove: systemctl calls" "$want_remove" "$(calls "$r")"
	check "deb[$mode] remove removes the binary, keeps config and state" \
		test ! -e "$r/usr/bin/dsr-agent" -a -e "$r/etc/dsr-agent/config.yaml" -a -e "$r/var/lib/dsr-agent/state-file"
	check "deb[$mode] remove removes /usr/share/dsr-agent" test ! -e "$r/usr/share/dsr-agent"
	quiet "deb[$mode] purge" "$DPKG_OK" dpkgr "$r" -P dsr-agent
	same "deb[$mode] purge: systemctl calls" "" "$(calls "$r")"
	check "deb[$mode] purge removes config and state" test ! -e "$r/etc/dsr-agent/config.yaml" -a ! -e "$r/var/lib/dsr-agent"
}
deb_cycle online "daemon-reload" "daemon-reload
try-restart $UNIT" "--no-reload disable $UNIT
stop $UNIT
daemon-reload"
deb_cycle offline "" "" "--no-reload disable $UNIT"
deb_cycle nosystemctl "" "" ""

# ---------------------------------------------------------------- under systemd
# The sandbox proven in practice: the packaged unit under a real systemd (PID 1
# of a systemd-nspawn container with a private network).
if packaging/test/test-unit-nspawn.sh "$deb1" | sed 's/^/  /'; then
	ok "the packaged unit runs and converges under systemd (test-unit-nspawn.sh)"
else
	bad "the packaged unit runs and converges under systemd (test-unit-nspawn.sh)"
fi

finish
