package netnstest

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AwaitSettled waits until link name in ns is operationally up and, unless
// IPv6 is off on it, carries its IPv6 link-local address without the
// tentative flag. The kernel does both from work items after the carrier
// comes up (linkwatch, then addrconf), so without this wait a snapshot of
// `ip addr` / `ip link` taken right after the link was set up can differ from
// one taken a moment later, with no change by the code under test.
func (ns *NS) AwaitSettled(t testing.TB, name string) {
	t.Helper()
	want6 := ns.expectsLinkLocal(t, name)
	// Subscribe before the first look, so no change between them is missed.
	addrs, links, done := make(chan netlink.AddrUpdate, 64), make(chan netlink.LinkUpdate, 64), make(chan struct{})
	defer close(done)
	h := ns.Handle
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatalf("subscribe to addresses in %s: %v", ns.Name, err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatalf("subscribe to links in %s: %v", ns.Name, err)
	}
	deadline := time.After(10 * time.Second)
	for {
		why := ns.unsettled(name, want6)
		if why == "" {
			return
		}
		select {
		case <-addrs:
		case <-links:
		case <-deadline:
			t.Fatalf("%s in %s not settled after 10s: %s", name, ns.Name, why)
		}
	}
}

// expectsLinkLocal: the kernel gives the link an IPv6 link-local address
// (IPv6 on, addr_gen_mode not none).
func (ns *NS) expectsLinkLocal(t testing.TB, name string) bool {
	t.Helper()
	var on bool
	ns.Do(t, func() {
		read := func(key string) string {
			b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + name + "/" + key)
			if err != nil {
				return ""
			}
			return strings.TrimSpace(string(b))
		}
		on = read("disable_ipv6") == "0" && read("addr_gen_mode") != "1"
	})
	return on
}

// unsettled says what is still pending on the link ("" when nothing is).
func (ns *NS) unsettled(name string, want6 bool) string {
	l, err := ns.Netlink.LinkByName(name)
	if err != nil {
		return "link: " + err.Error()
	}
	if l.Attrs().OperState != netlink.OperUp {
		return "operstate " + l.Attrs().OperState.String()
	}
	if !want6 {
		return ""
	}
	list, err := ns.Netlink.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		return "addresses: " + err.Error()
	}
	for _, a := range list {
		if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
			return ""
		}
	}
	return "no usable IPv6 link-local address yet"
}
