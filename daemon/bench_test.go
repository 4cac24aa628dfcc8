package daemon

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// BenchmarkDriftRepair measures the time from deleting a VIP (netlink, as
// `ip addr del` does) to the kernel announcing it back, with the real daemon
// running in a namespace. Reported: median and p99 per repair.
func BenchmarkDriftRepair(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("vips=%d", n), func(b *testing.B) { benchDriftRepair(b, n) })
	}
}

func benchDriftRepair(b *testing.B, nVIPs int) {
	ns := netnstest.New(b)
	ns.AddDummy(b, nic, "10.77.0.2/24")
	var cfg strings.Builder
	cfg.WriteString("mode: loopback\ninterfaces: [eth0]\nvips:\n")
	for i := range nVIPs {
		fmt.Fprintf(&cfg, "  - address: 10.%d.%d.%d\n", 100+i/65536, (i/256)%256, i%256)
	}
	d := startDaemon(b, ns, b.TempDir(), cfg.String(), "--resync", "1h")
	d.waitNote("READY=1", 60*time.Second)

	victim := netip4("10.100.0.0")
	lo, err := ns.Netlink.LinkByName("lo")
	if err != nil {
		b.Fatal(err)
	}
	ch := make(chan netlink.AddrUpdate, 1024)
	done := make(chan struct{})
	defer close(done)
	h := ns.Handle
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: &h}); err != nil {
		b.Fatal(err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: victim, Mask: net.CIDRMask(32, 32)}}
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := ns.Netlink.AddrDel(lo, addr); err != nil {
			b.Fatal(err)
		}
		timeout := time.After(5 * time.Second)
	wait:
		for {
			select {
			case u := <-ch:
				if u.NewAddr && u.LinkAddress.IP.Equal(victim) {
					lat = append(lat, time.Since(start))
					break wait
				}
			case <-timeout:
				b.Fatal("VIP not repaired within 5s")
			}
		}
		// Let the daemon's trailing no-op pass finish so iterations are independent.
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op") // wall time per op includes the settle sleep; not meaningful
}

func netip4(s string) net.IP { return net.ParseIP(s).To4() }
