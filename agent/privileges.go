package agent

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrPrivileges marks a command started without the capabilities it needs.
var ErrPrivileges = errors.New("insufficient privileges")

// canChange reports whether this process holds CAP_NET_ADMIN.
func canChange() bool { return CheckPrivileges("") == nil }

// CheckPrivileges refuses, before anything is read or changed, to run a
// command that changes the kernel without CAP_NET_ADMIN (addresses, nftables
// and /proc/sys/net all need it).
func CheckPrivileges(command string) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("%w: %s: read capabilities: %w", ErrPrivileges, command, err)
	}
	if data[0].Effective&(1<<unix.CAP_NET_ADMIN) == 0 {
		return fmt.Errorf("%w: %s changes addresses, nftables and /proc/sys/net and needs CAP_NET_ADMIN: run it as root (sudo dsr-agent %s)", ErrPrivileges, command, command)
	}
	return nil
}
