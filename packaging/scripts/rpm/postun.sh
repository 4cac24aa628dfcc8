# %postun of dsr-agent: expands like %systemd_postun_with_restart dsr-agent.service.
# $1 = number of dsr-agent packages left: 0 on erase, >=1 on upgrade.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		# Package upgrade, not uninstall: restart only if it was running.
		systemctl try-restart dsr-agent.service >/dev/null 2>&1 || :
	fi
fi
exit 0
