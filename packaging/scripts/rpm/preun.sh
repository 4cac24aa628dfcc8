# %preun of dsr-agent: expands like %systemd_preun dsr-agent.service.
# $1 = number of dsr-agent packages left after this one: 0 on erase.
if [ "$1" -eq 0 ]; then
	# Package removal, not upgrade.
	systemctl --no-reload disable dsr-agent.service >/dev/null 2>&1 || :
	# Stopping needs a running systemd (not a chroot, container or image build).
	if [ -d /run/systemd/system ]; then
		systemctl stop dsr-agent.service >/dev/null 2>&1 || :
	fi
fi
exit 0
