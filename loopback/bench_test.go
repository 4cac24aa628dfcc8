package loopback

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// BenchmarkAdd: n labelled /32s added to lo in a fresh namespace, through
// the Manager's own socket and, in the same run, through
// vishvananda/netlink's AddrReplace (what Manager.Add used before issue 19):
// the kernel's work is the same, so the difference is the client's.
func BenchmarkAdd(b *testing.B) {
	base := netip.MustParseAddr("198.18.0.1").As4()
	for _, n := range []int{1000, 10000} {
		addrs := make([]Addr, n)
		for i := range addrs {
			a := base
			a[2] += byte(i / 250)
			a[3] += byte(i % 250)
			addrs[i] = Addr{Link: "lo", Prefix: netip.PrefixFrom(netip.AddrFrom4(a), 32), Label: fmt.Sprintf("lo:dsr%d", i)}
		}
		b.Run(fmt.Sprintf("client=rtnl/vips=%d", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				ns := netnstest.New(b)
				m, err := NewManager(ns.Netlink, ns.Handle)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				for _, a := range addrs {
					if err := m.Add(a); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				_ = m.Close()
				b.StartTimer()
			}
		})
		b.Run(fmt.Sprintf("client=vishvananda/vips=%d", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				ns := netnstest.New(b)
				lo, err := ns.Netlink.LinkByName("lo")
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				for _, a := range addrs {
					nla := &netlink.Addr{IPNet: &net.IPNet{IP: a.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: a.Label}
					if err := ns.Netlink.AddrReplace(lo, nla); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
