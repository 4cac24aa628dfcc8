package loopback

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// wakes collects a watcher's triggers.
func wakes(t *testing.T) (func(string), func(want string), chan string) {
	ch := make(chan string, 64)
	wake := func(s string) { ch <- s }
	await := func(want string) {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case got := <-ch:
				if got == want {
					return
				}
			case <-timeout:
				t.Fatalf("no %q wake-up within 5 s", want)
			}
		}
	}
	return wake, await, ch
}

func awaitReady(t *testing.T, ready chan struct{}) {
	t.Helper()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("watcher not ready within 5 s")
	}
}

func TestWatchAddrs(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "nic0")
	ctx, cancel := context.WithCancel(context.Background())
	wake, await, _ := wakes(t)
	done := make(chan struct{})
	ready := make(chan struct{}, 1)
	go func() { watchAddrs(ctx, ns.Handle, wake, slog.Default(), func() { ready <- struct{}{} }); close(done) }()
	awaitReady(t, ready)
	ns.Exec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "nic0")
	await(AddressAdded)
	ns.Exec(t, "ip", "addr", "del", "192.0.2.10/32", "dev", "nic0")
	await("address")
	ns.Exec(t, "ip", "addr", "add", "2001:db8::10/128", "dev", "nic0", "nodad")
	await(AddressAdded)
	cancel()
	<-done // the watcher ends with its context
}

func TestWatchLinks(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "nic0")
	ctx, cancel := context.WithCancel(context.Background())
	wake, await, ch := wakes(t)
	done := make(chan struct{})
	ready := make(chan struct{}, 1)
	go func() { watchLinks(ctx, ns.Handle, wake, slog.Default(), func() { ready <- struct{}{} }); close(done) }()
	awaitReady(t, ready)
	if len(ch) != 0 {
		t.Fatalf("listing the existing links woke the daemon (%q)", <-ch)
	}
	for _, step := range [][]string{
		{"link", "set", "nic0", "mtu", "1400"},
		{"link", "set", "nic0", "down"},
		{"link", "set", "nic0", "name", "nic9"},
		{"link", "del", "nic9"},
	} {
		ns.Exec(t, "ip", step...)
		await("link")
	}
	cancel()
	<-done
}
