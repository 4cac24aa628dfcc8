package sysctl

import (
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// TestWatcherPoll: in a throwaway namespace, a poll reports a change of a
// watched value, nothing when nothing changed, a change after Invalidate
// (the daemon's own write), and an interface deleted and re-created under
// the same name (its descriptor is reopened).
func TestWatcherPoll(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "d0")
	p := &Proc{Root: "/proc/sys", NS: ns.Handle}
	ignore := ConfPath("d0", "arp_ignore")
	w := NewWatcher()
	defer w.close()
	// The files are opened in the namespace of the thread that reads them.
	ns.Do(t, func() { w.Set([]Path{ConfPath("all", "arp_ignore"), ignore}) })
	if w.poll() {
		t.Fatal("changed without a write")
	}
	if err := p.Write(ignore, "1"); err != nil {
		t.Fatal(err)
	}
	if !w.poll() {
		t.Fatal("a write to d0 arp_ignore not seen")
	}
	if w.poll() {
		t.Fatal("changed again without a write")
	}
	w.Invalidate()
	if !w.poll() {
		t.Fatal("no wake after Invalidate")
	}
	ns.Exec(t, "ip", "link", "del", "d0")
	if !w.poll() {
		t.Fatal("the interface's deletion not seen")
	}
	ns.AddDummy(t, "d0")
	ns.Do(t, func() {
		if !w.poll() {
			t.Error("the re-created interface not seen")
		}
	})
}
