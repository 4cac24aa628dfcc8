package anyip

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
	"github.com/dsr-agent/dsr-agent/loopback"
)

// Benchmarks of the AnyIP surface against the old way (one address per
// VIP on lo), each in its own namespace; ratios within one run go to
// bench/RESULTS.md. Root only, like every kernel test.

// applyFromClean is what apply does for the surface: observe, diff, run
// the steps.
func applyFromClean(b *testing.B, m *Manager, want []netip.Prefix) {
	o, err := m.Observe()
	if err != nil {
		b.Fatal(err)
	}
	missing, unexpected, conflicts := Diff(want, o)
	if len(missing) != len(want) || len(unexpected)+len(conflicts) != 0 {
		b.Fatalf("not clean: %v %v %v", missing, unexpected, conflicts)
	}
	for _, s := range m.Steps(missing, unexpected) {
		if err := s.Do(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyFromClean: a /16 (65,536 VIPs) against one /32 as a local
// route against 1,000 /32 addresses on lo.
func BenchmarkApplyFromClean(b *testing.B) {
	for _, c := range []struct {
		name string
		p    netip.Prefix
	}{{"prefix-16", pfx("198.18.0.0/16")}, {"route-32", pfx("198.18.0.1/32")}} {
		b.Run(c.name, func(b *testing.B) {
			ns := netnstest.New(b)
			m := &Manager{NL: ns.Netlink}
			want := []netip.Prefix{c.p}
			b.ResetTimer()
			for range b.N {
				applyFromClean(b, m, want)
				b.StopTimer()
				if err := m.Del(c.p); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
	b.Run("addrs-1000-on-lo", func(b *testing.B) {
		ns := netnstest.New(b)
		lm, err := loopback.NewManager(ns.Netlink, ns.Handle)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { lm.Close() })
		base := netip.MustParseAddr("198.18.0.0").As4()
		addrs := make([]loopback.Addr, 1000)
		for i := range addrs {
			a := base
			a[2], a[3] = byte(i>>8), byte(i)
			addrs[i] = loopback.Addr{Link: "lo", Prefix: netip.PrefixFrom(netip.AddrFrom4(a), 32)}
		}
		b.ResetTimer()
		for range b.N {
			// Observe as apply does (one dump), then one add per VIP.
			if _, err := lm.List(); err != nil {
				b.Fatal(err)
			}
			for _, a := range addrs {
				if err := lm.Add(a); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			ns.Exec(b, "ip", "-4", "addr", "flush", "dev", "lo", "to", "198.18.0.0/16")
			b.StartTimer()
		}
	})
}

// BenchmarkNoopObserveDiff: the daemon's repair pass with nothing to do,
// 1,000 AnyIP prefixes in place.
func BenchmarkNoopObserveDiff(b *testing.B) {
	ns := netnstest.New(b)
	m := &Manager{NL: ns.Netlink}
	want := make([]netip.Prefix, 1000)
	for i := range want {
		want[i] = netip.MustParsePrefix(fmt.Sprintf("100.%d.%d.0/24", 64+i/256, i%256))
		if err := m.Add(want[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		o, err := m.Observe()
		if err != nil {
			b.Fatal(err)
		}
		if missing, unexpected, conflicts := Diff(want, o); len(missing)+len(unexpected)+len(conflicts) != 0 {
			b.Fatalf("not a no-op: %d %d %d", len(missing), len(unexpected), len(conflicts))
		}
	}
}
