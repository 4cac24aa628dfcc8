#!/bin/sh
# postrm of dsr-agent: reload systemd after the unit file is gone; purge also
# removes the state directory (owned addresses, saved sysctl values, drain).
set -e
case "$1" in
remove)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
	;;
purge)
	rm -rf /var/lib/dsr-agent
	;;
esac
exit 0
