package anyip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// snapshot is what must survive dsr-agent's AnyIP routes coming and going:
// the whole local table (both families) and lo's addresses, as ip prints
// them.
func snapshot(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	return ns.Exec(t, "ip", "route", "show", "table", "local") +
		ns.Exec(t, "ip", "-6", "route", "show", "table", "local") +
		ns.Exec(t, "ip", "addr", "show", "dev", "lo")
}

// foreignHost puts on a namespace what an operator or the kernel may have
// made local besides dsr-agent: a VIP on lo, an IPv6 one, a hand-made AnyIP
// route in each family (proto boot, ip's default) and an address on a NIC.
func foreignHost(t *testing.T, ns *netnstest.NS) {
	t.Helper()
	ns.AddDummy(t, "eth0", "192.0.2.21/24")
	// (An IPv4 address's local route is made in the add itself; an IPv6
	// address's only when addrconf's workqueue completes it, so none here.)
	ns.Exec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
	ns.Exec(t, "ip", "route", "add", "local", "203.0.113.0/24", "dev", "lo", "table", "local")
	ns.Exec(t, "ip", "-6", "route", "add", "local", "2001:db8:77::/64", "dev", "lo", "table", "local")
}

func apply(t *testing.T, m *Manager, want []netip.Prefix) {
	t.Helper()
	o, err := m.Observe()
	if err != nil {
		t.Fatal(err)
	}
	missing, unexpected, conflicts := Diff(want, o)
	if len(conflicts) > 0 {
		t.Fatalf("conflicts: %v", conflicts)
	}
	for _, s := range m.Steps(missing, unexpected) {
		if err := s.Do(); err != nil {
			t.Fatal(err)
		}
	}
}

// Add, observe and remove leave the local table and lo exactly as they
// were: the hand-made AnyIP routes, the kernel's routes of every address and
// the addresses themselves.
func TestAddObserveRemoveLeavesForeign(t *testing.T) {
	ns := netnstest.New(t)
	foreignHost(t, ns)
	before := snapshot(t, ns)
	m := &Manager{NL: ns.Netlink}
	want := []netip.Prefix{pfx("198.51.100.0/24"), pfx("2001:db8:1::/64")}
	apply(t, m, want)
	o, err := m.Observe()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Ours, want) {
		t.Fatalf("observed as ours %v, want %v", o.Ours, want)
	}
	for _, f := range []string{"203.0.113.0/24", "2001:db8:77::/64", "127.0.0.0/8"} {
		if !slices.Contains(o.Foreign, pfx(f)) {
			t.Errorf("foreign local route %s not observed: %v", f, o.Foreign)
		}
	}
	got := ns.Exec(t, "ip", "route", "show", "table", "local", "proto", "213")
	if !strings.Contains(got, "local 198.51.100.0/24 dev lo scope host") {
		t.Fatalf("kernel has %q", got)
	}
	// The point: an address inside the prefix is local.
	if r := ns.Exec(t, "ip", "route", "get", "198.51.100.77"); !strings.HasPrefix(r, "local 198.51.100.77 dev lo") {
		t.Errorf("198.51.100.77 is not local: %s", r)
	}
	if r := ns.Exec(t, "ip", "-6", "route", "get", "2001:db8:1::abcd"); !strings.HasPrefix(r, "local 2001:db8:1::abcd ") {
		t.Errorf("2001:db8:1::abcd is not local: %s", r)
	}
	if snapshot(t, ns) == before {
		t.Fatal("the snapshot does not see dsr-agent's routes: the test could not fail")
	}
	apply(t, m, nil)
	if after := snapshot(t, ns); after != before {
		t.Errorf("removing left the host changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// Even a delete that names a foreign prefix leaves it: the kernel
	// matches dsr-agent's protocol.
	for _, p := range []string{"203.0.113.0/24", "2001:db8:77::/64"} {
		if err := m.Del(pfx(p)); err != nil {
			t.Fatal(err)
		}
	}
	if after := snapshot(t, ns); after != before {
		t.Errorf("Del of a foreign prefix changed the host:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// A foreign local route of the very prefix the config wants is a conflict:
// Diff says so, Add refuses with ErrForeign, and nothing changes.
func TestForeignSamePrefixIsAConflict(t *testing.T) {
	ns := netnstest.New(t)
	foreignHost(t, ns)
	// Not a local route, but in table local with the same key.
	ns.Exec(t, "ip", "route", "add", "unicast", "198.18.0.0/24", "dev", "eth0", "table", "local")
	before := snapshot(t, ns)
	m := &Manager{NL: ns.Netlink}
	o, err := m.Observe()
	if err != nil {
		t.Fatal(err)
	}
	missing, unexpected, conflicts := Diff([]netip.Prefix{pfx("203.0.113.0/24"), pfx("2001:db8:77::/64"), pfx("198.18.0.0/24")}, o)
	if len(missing)+len(unexpected) != 0 || len(conflicts) != 3 {
		t.Fatalf("diff = %v %v %v, want three conflicts", missing, unexpected, conflicts)
	}
	for _, p := range conflicts {
		if err := m.Add(p); !errors.Is(err, ErrForeign) {
			t.Errorf("Add(%s) = %v, want ErrForeign", p, err)
		}
	}
	if after := snapshot(t, ns); after != before {
		t.Errorf("the host changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// Ownership is the kernel's mark, nothing else: routes a previous run made
// (here `ip`, as another process) are found and removed by a manager that
// has no state at all, and the hand-made ones of other prefixes stay.
func TestOwnershipAfterLostState(t *testing.T) {
	ns := netnstest.New(t)
	foreignHost(t, ns)
	before := snapshot(t, ns)
	ns.Exec(t, "ip", "route", "add", "local", "198.51.100.0/24", "dev", "lo", "table", "local", "proto", "213")
	ns.Exec(t, "ip", "-6", "route", "add", "local", "2001:db8:1::/64", "dev", "lo", "table", "local", "proto", "213")
	m := &Manager{NL: ns.Netlink}
	o, err := m.Observe()
	if err != nil {
		t.Fatal(err)
	}
	_, unexpected, _ := Diff(nil, o)
	if want := []netip.Prefix{pfx("198.51.100.0/24"), pfx("2001:db8:1::/64")}; !slices.Equal(unexpected, want) {
		t.Fatalf("a manager with no state owns %v, want %v", unexpected, want)
	}
	apply(t, m, nil)
	if after := snapshot(t, ns); after != before {
		t.Errorf("the host changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// The watch filter, on the kernel's own notifications: of everything that
// changes table local, only dsr-agent's AnyIP routes count. The test reads
// its own subscription, opened before the changes, so nothing can be missed
// or timed: it stops at the last change's notification.
func TestOursOnKernelNotifications(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0", "192.0.2.21/24")
	m := &Manager{NL: ns.Netlink}
	var s *nl.NetlinkSocket
	ns.Do(t, func() {
		var err error
		if s, err = nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE); err != nil {
			t.Fatal(err)
		}
	})
	defer s.Close()
	if err := s.SetReceiveTimeout(&unix.Timeval{Sec: 10}); err != nil {
		t.Fatal(err)
	}
	// Foreign first: an address (the kernel makes its local route), a
	// hand-made AnyIP route, a route of dsr-agent's mark in another table
	// (return_via's kind); then ours, added and deleted.
	ns.Exec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
	ns.Exec(t, "ip", "route", "add", "local", "203.0.113.0/24", "dev", "lo", "table", "local")
	ns.Exec(t, "ip", "route", "del", "local", "203.0.113.0/24", "dev", "lo", "table", "local")
	ns.Exec(t, "ip", "route", "add", "198.18.0.0/24", "via", "192.0.2.1", "table", "100", "proto", "213")
	if err := m.Add(pfx("198.51.100.0/24")); err != nil {
		t.Fatal(err)
	}
	if err := m.Add(pfx("2001:db8:1::/64")); err != nil {
		t.Fatal(err)
	}
	if err := m.Del(pfx("198.51.100.0/24")); err != nil {
		t.Fatal(err)
	}
	var ours []string
	foreign := 0
	for done := false; !done; {
		msgs, _, err := s.Receive()
		if err != nil {
			t.Fatalf("receive (the last change's notification never came): %v", err)
		}
		for _, msg := range msgs {
			r, err := netlinkRouteDeserialize(msg.Data)
			if err != nil {
				t.Fatal(err)
			}
			desc := verb(msg.Header.Type) + " " + r
			if Ours(msg.Header.Type, msg.Data) {
				ours = append(ours, desc)
			} else {
				foreign++
			}
			if desc == "del 198.51.100.0/24" {
				done = true
			}
		}
	}
	want := []string{"add 198.51.100.0/24", "add 2001:db8:1::/64", "del 198.51.100.0/24"}
	if !slices.Equal(ours, want) {
		t.Errorf("counted as ours: %v, want %v", ours, want)
	}
	// Negative control: the socket saw the foreign changes (at least the
	// address's local route, the hand-made route twice and the table 100
	// route), so a filter that took them would have failed above.
	if foreign < 4 {
		t.Errorf("only %d foreign notifications seen: the test could not fail", foreign)
	}
}

func verb(typ uint16) string {
	if typ == unix.RTM_DELROUTE {
		return "del"
	}
	return "add"
}

func netlinkRouteDeserialize(b []byte) (string, error) {
	h := nl.DeserializeRtMsg(b)
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofRtMsg:])
	if err != nil {
		return "", err
	}
	for _, a := range attrs {
		if a.Attr.Type == unix.RTA_DST {
			ip, _ := netip.AddrFromSlice(a.Value)
			return netip.PrefixFrom(ip.Unmap(), int(h.Dst_len)).String(), nil
		}
	}
	return "default", nil
}

// The watcher wakes when someone deletes one of dsr-agent's AnyIP routes,
// and not for the foreign changes to table local made just before: the
// wake callback holds the watcher while the test reads its socket's unread
// bytes. Each notification is one datagram and one Receive, so when the
// first wake comes with nothing left unread, it came from the last change,
// ours, and none of the foreign ones before it woke the watcher. Awaited,
// not timed.
func TestWatchWakesOnDeletedRouteOnly(t *testing.T) {
	// Only lo: a NIC's IPv6 link-local address comes with a local route
	// the kernel adds from a workqueue, which could land after ours and
	// fail the test for nothing.
	ns := netnstest.New(t)
	if !strings.Contains(ns.Exec(t, "ip", "-6", "route", "show", "table", "local"), "local ::1 ") {
		t.Fatal("lo's IPv6 is not up yet")
	}
	m := &Manager{NL: ns.Netlink}
	if err := m.Add(pfx("198.51.100.0/24")); err != nil {
		t.Fatal(err)
	}
	woke := make(chan string)
	ack := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = netnstest.Within(ns.Handle, func() error {
			Watch(ctx, func(s string) {
				select {
				case woke <- s:
					<-ack
				case <-ctx.Done():
				}
			}, slog.Default())
			return nil
		})
	}()
	defer func() { cancel(); <-done }()
	// The subscription is open once the namespace lists a route socket
	// bound to both route groups; no change has happened since.
	groups := uint32(1<<(unix.RTNLGRP_IPV4_ROUTE-1) | 1<<(unix.RTNLGRP_IPV6_ROUTE-1))
	waitSubscribed(t, ns, groups)
	// Foreign changes to table local (and one of dsr-agent's mark
	// elsewhere), then ours: each command returns after the kernel queued
	// its notifications.
	// (An IPv4 address's local route is made in the add itself; an IPv6
	// address's only when addrconf's workqueue completes it, so none here.)
	ns.Exec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
	ns.Exec(t, "ip", "route", "add", "local", "203.0.113.0/24", "dev", "lo", "table", "local")
	ns.Exec(t, "ip", "-6", "route", "add", "local", "2001:db8:77::/64", "dev", "lo", "table", "local")
	ns.Exec(t, "ip", "route", "del", "local", "203.0.113.0/24", "dev", "lo", "table", "local")
	ns.Exec(t, "ip", "route", "add", "198.18.0.0/24", "dev", "lo", "table", "100", "proto", "213")
	ns.Exec(t, "ip", "route", "del", "local", "198.51.100.0/24", "dev", "lo", "table", "local")
	select {
	case got := <-woke:
		if got != Trigger {
			t.Fatalf("woke with %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no wake for the deleted route")
	}
	unread := socketRmem(t, ns, groups)
	ack <- struct{}{}
	if unread != 0 {
		t.Fatalf("the first wake came with %d bytes of notifications unread: a foreign change woke the watcher", unread)
	}
}

// socketRmem is the unread bytes of the namespace's route socket bound to
// groups.
func socketRmem(t *testing.T, ns *netnstest.NS, groups uint32) int {
	t.Helper()
	f := netlinkSocket(t, ns, groups)
	if f == nil {
		t.Fatalf("no route socket subscribed to groups %08x", groups)
	}
	n, err := strconv.Atoi(f[4])
	if err != nil {
		t.Fatalf("Rmem %q: %v", f[4], err)
	}
	return n
}

// netlinkSocket is the /proc/net/netlink line (fields: sk Eth Pid Groups
// Rmem …) of the namespace's NETLINK_ROUTE socket bound to exactly groups,
// or nil. /proc/thread-self/net lists the sockets of the reader's namespace.
func netlinkSocket(t *testing.T, ns *netnstest.NS, groups uint32) []string {
	t.Helper()
	var table []byte
	ns.Do(t, func() {
		var err error
		if table, err = os.ReadFile("/proc/thread-self/net/netlink"); err != nil {
			t.Fatal(err)
		}
	})
	want := fmt.Sprintf("%08x", groups)
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 4 && f[1] == "0" && f[3] == want {
			return f
		}
	}
	return nil
}

// waitSubscribed waits until the namespace has a NETLINK_ROUTE socket bound
// to exactly groups.
func waitSubscribed(t *testing.T, ns *netnstest.NS, groups uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for netlinkSocket(t, ns, groups) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no route socket subscribed to groups %08x", groups)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
