// Package netnsutil runs code on an OS thread inside another network
// namespace, for kernel interfaces that follow the calling thread's namespace
// (/proc/sys/net, sockets) rather than taking a handle.
package netnsutil

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Within runs fn with the current OS thread in the namespace h. If the thread
// cannot be returned to its original namespace it stays locked, so the Go
// runtime discards it instead of reusing a thread in the wrong namespace.
func Within(h netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("return to original netns: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// NewNamed creates a named network namespace (bind-mounted under
// /run/netns) without leaving the calling thread in it: netns.NewNamed
// switches the current thread. A thread that cannot be switched back stays
// locked, so the Go runtime discards it rather than reuse it in the wrong
// namespace.
func NewNamed(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err != nil {
		_ = netns.Set(orig)
		runtime.UnlockOSThread()
		return 0, fmt.Errorf("create netns %s: %w", name, err)
	}
	if err := netns.Set(orig); err != nil {
		h.Close()
		return 0, fmt.Errorf("return to original netns: %w", err)
	}
	runtime.UnlockOSThread()
	return h, nil
}
