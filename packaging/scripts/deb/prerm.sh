#!/bin/sh
# prerm of dsr-agent: like %systemd_preun (disable + stop on removal, not on upgrade).
set -e
if [ "$1" = remove ]; then
	# Edits symlinks only: works without a running systemd too.
	systemctl --no-reload disable dsr-agent.service >/dev/null 2>&1 || true
	if [ -d /run/systemd/system ]; then
		systemctl stop dsr-agent.service >/dev/null 2>&1 || true
	fi
fi
exit 0
