#!/usr/bin/env bash
# The one install step: the Debian packages listed in mk/*.packages.
#
#   mk/install-deps.sh AREA...     mk/base.packages + mk/AREA.packages for each AREA
#   mk/install-deps.sh --all       every mk/*.packages (what CI needs)
#   mk/install-deps.sh --list AREA...   print the package names, install nothing
#
# Used by .ci/run and by the make targets (`make deps`, and the deps-AREA
# prerequisites of demo, test, test-boot, test-interop), so a fresh Debian
# machine needs nothing but this repository, Go and root.
#
# List format (mk/AREA.packages): one Debian package name per line; `#` starts
# a comment (whole line or the rest of a line); blank lines are ignored.
# RHEL/CentOS names, where they differ, are noted in each list's comments.
#
# Fast and idempotent: one dpkg-query over all the names; when everything is
# installed it prints nothing and exits 0 (~50 ms). Only when something is
# missing does it run `apt-get update` and `apt-get install` (root needed).
# Exit: 0 all installed; 1 apt failed (the message names the packages);
# 2 unknown area. Not root, or not Debian (no dpkg-query): prints what is
# missing and exits 0, so non-root unit tests still run.
set -euo pipefail
mkdir=$(cd "$(dirname "$0")" && pwd)

log() { printf 'install-deps: %s\n' "$*" >&2; }

# pkgs FILE: the package names in one list (comments and blanks stripped).
pkgs() { sed -e 's/#.*//' -e 's/[[:space:]]\+/\n/g' "$1" | grep -v '^$' || true; }

list_only=0
files=()
case ${1:-} in
--list) list_only=1; shift ;;
esac
if [ "${1:-}" = --all ]; then
	files=("$mkdir"/*.packages)
else
	[ -f "$mkdir/base.packages" ] && files+=("$mkdir/base.packages")
	for a in "$@"; do
		f="$mkdir/$a.packages"
		[ -f "$f" ] || { log "no list $f (area '$a')"; exit 2; }
		files+=("$f")
	done
fi

mapfile -t want < <(for f in "${files[@]}"; do pkgs "$f"; done | sort -u)
if [ "$list_only" = 1 ]; then
	printf '%s\n' "${want[@]}"
	exit 0
fi
# Go is not installed from Debian (bookworm's golang-go is older than go.mod
# asks); say so early rather than let make fail with "go: not found".
if ! command -v go >/dev/null && ! [ -x /usr/local/go/bin/go ]; then
	log "WARNING: no Go toolchain (go on PATH or /usr/local/go/bin/go): install the version in go.mod from https://go.dev/dl/ into /usr/local/go"
fi
[ "${#want[@]}" -gt 0 ] || exit 0

# missing: the wanted packages dpkg does not have fully installed ("ii").
# dpkg-query exits 1 when a name is unknown to it; that is just "missing".
missing_pkgs() {
	local installed
	installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${want[@]}" 2>/dev/null |
		awk '$1 == "ii" { print $2 }' | sort -u || true)
	comm -23 <(printf '%s\n' "${want[@]}") <(printf '%s\n' "$installed" | grep -v '^$' || true)
}

if ! command -v dpkg-query >/dev/null; then
	# RHEL/CentOS and others: we cannot check by package name; say what to
	# install (the lists' comments give the RHEL names) and let the tests'
	# own tool checks report anything still missing.
	log "not a Debian system (no dpkg-query); install the equivalents of: ${want[*]}"
	log "RHEL/CentOS names are in the comments of: ${files[*]##*/}"
	exit 0
fi

mapfile -t missing < <(missing_pkgs)
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
	# Not an error here: a non-root `make test` still runs the unit tests;
	# the root-only tests that need these packages fail or skip loudly.
	log "WARNING: missing packages: ${missing[*]}"
	log "WARNING: not root, so not installing them; as root: make deps (or apt-get install ${missing[*]})"
	exit 0
fi

log "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg (e.g. unattended-upgrades) instead of failing.
apt_opts=(-o DPkg::Lock::Timeout=600 -qq)
apt-get "${apt_opts[@]}" update || { log "apt-get update failed"; exit 1; }
apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null ||
	{ log "apt-get install ${missing[*]} failed"; exit 1; }

mapfile -t still < <(missing_pkgs)
if [ "${#still[@]}" -gt 0 ]; then
	log "still missing after apt-get install: ${still[*]}"
	exit 1
fi
log "installed ${#missing[@]} package(s)"
