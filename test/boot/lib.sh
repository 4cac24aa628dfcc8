# Shared helpers for the boot test scripts (sourced, not executed).
# shellcheck shell=bash

bt_log() { printf '[boot-test] %s\n' "$*" >&2; }
bt_die() { printf '[boot-test] ERROR: %s\n' "$*" >&2; exit 1; }

# bt_cache_root: where images are cached. DSR_BOOT_CACHE wins, then
# $XDG_CACHE_HOME/dsr-agent-boot, then /var/cache/dsr-agent-boot.
bt_cache_root() {
	if [ -n "${DSR_BOOT_CACHE:-}" ]; then
		echo "$DSR_BOOT_CACHE"
	elif [ -n "${XDG_CACHE_HOME:-}" ]; then
		echo "$XDG_CACHE_HOME/dsr-agent-boot"
	else
		echo /var/cache/dsr-agent-boot
	fi
}

# bt_image_key: hash of everything that shapes the image, so a change to the
# build script invalidates the cache.
bt_image_key() {
	local dir
	dir=$(dirname "${BASH_SOURCE[0]}")
	sha256sum <"$dir/build-image.sh" | cut -c1-16
}

# bt_mirror: the Debian mirror apt uses on this machine (DSR_BOOT_MIRROR wins).
# Reads deb822 *.sources and one-line *.list files; picks the first "deb"
# entry whose suites include exactly "bookworm".
bt_mirror() {
	if [ -n "${DSR_BOOT_MIRROR:-}" ]; then
		echo "$DSR_BOOT_MIRROR"
		return
	fi
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk -v want="${DSR_BOOT_SUITE:-bookworm}" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uris != "") {
					split(uris, u, " "); print u[1]; found = 1; exit
				}
				types = ""; suites = ""; uris = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			/^Types:/  { sub(/^Types:[ \t]*/, ""); types = $0; next }
			/^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0; next }
			/^URIs:/   { sub(/^URIs:[ \t]*/, ""); uris = $0; next }
			/^deb[ \t]/ {
				i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
				if ($(i+1) == want) { print $i; found = 1; exit }
			}
			END { if (!found) flush() }
		' "$f" | head -n1 | grep . && return
	done
	return 1
}
