#!/bin/sh
# postinst of dsr-agent: the Debian equivalent of the RPM's %post + upgrade restart
# (dh_installsystemd --no-enable --no-start --restart-after-upgrade semantics,
# with plain systemctl guarded the same way).
# Not enabled or started on install: as shipped the config has no VIPs, and the
# operator enables the service once it is configured (as on RHEL, whose
# presets disable new services).
set -e
case "$1" in
configure | abort-upgrade | abort-deconfigure | abort-remove)
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || true
		# $2 = the previously configured version: set on upgrade.
		if [ -n "$2" ]; then
			systemctl try-restart dsr-agent.service >/dev/null 2>&1 || true
		fi
	fi
	;;
esac
exit 0
