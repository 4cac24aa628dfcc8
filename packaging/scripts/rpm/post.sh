# %post of dsr-agent: expands like %systemd_post dsr-agent.service.
# $1 = number of dsr-agent packages installed after this one: 1 on first install.
if [ "$1" -eq 1 ]; then
	# Initial installation: enable or not as the system's presets say (RHEL's
	# default preset is "disable *"). preset only edits symlinks, so it also
	# works in a chroot or image build, where no systemd is running.
	systemctl --no-reload preset dsr-agent.service >/dev/null 2>&1 || :
fi
exit 0
