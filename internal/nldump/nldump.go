// Package nldump repeats netlink dumps the kernel interrupted: when the
// table changes while it is read, vishvananda/netlink returns a partial list
// with ErrDumpInterrupted, and a partial list must never be diffed (a VIP or
// rule missing from it would be "added" again, one of ours "deleted").
package nldump

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// Attempts bounds the retries: a table that changes on every read for this
// long is an error to report, not a loop to spin in.
const Attempts = 5

// Retry runs dump until it is not interrupted, at most Attempts times.
func Retry[T any](dump func() ([]T, error)) ([]T, error) {
	var out []T
	var err error
	for range Attempts {
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, err
}
