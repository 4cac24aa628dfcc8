#!/usr/bin/env bash
# Test the boot-test harness itself with a fake dsr-agent package
# (test/boot/testdata/fakeagent), e.g. before the real package builds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root="$tmp/pkg"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/system" "$root/etc/dsr-agent"
(cd "$here/testdata/fakeagent" && CGO_ENABLED=0 go build -o "$root/usr/bin/dsr-agent" .)
cat >"$root/usr/lib/systemd/system/dsr-agent.service" <<'UNIT'
[Unit]
Description=fake dsr-agent (boot test self-test)
Wants=network-pre.target
Before=network-pre.target
[Service]
Type=notify
ExecStart=/usr/bin/dsr-agent run
[Install]
WantedBy=multi-user.target
UNIT
echo 'mode: loopback' >"$root/etc/dsr-agent/config.yaml"
echo /etc/dsr-agent/config.yaml >"$root/DEBIAN/conffiles"
cat >"$root/DEBIAN/control" <<'CTRL'
Package: dsr-agent
Version: 0.0.0-selftest
Architecture: amd64
Maintainer: boot test <nobody@example.invalid>
Description: fake dsr-agent for the boot test self-test
CTRL
printf '#!/bin/sh\n[ "$1" = remove ] && systemctl disable --now dsr-agent >/dev/null 2>&1; exit 0\n' >"$root/DEBIAN/prerm"
printf '#!/bin/sh\nsystemctl daemon-reload >/dev/null 2>&1 || true\n' >"$root/DEBIAN/postrm"
chmod 0755 "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
dpkg-deb --root-owner-group -Zgzip -b "$root" "$tmp/dsr-agent_0.0.0-selftest_amd64.deb" >/dev/null
DSR_BOOT_MODE=${DSR_BOOT_MODE:-loopback} DSR_BOOT_RPM=/nonexistent "$here/run.sh" "$tmp/dsr-agent_0.0.0-selftest_amd64.deb" ""
