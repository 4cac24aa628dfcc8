package probe_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/lab"
	"github.com/dsr-agent/dsr-agent/probe"
)

// BenchmarkProbe: TCP probes of a healthy real server in the lab, one at a
// time (run with -cpu 1 for "one core"). Reports probes/s and the latency the
// probe adds over the round trip it measured (setup: route and neighbour
// lookups, the packet socket, its filter; teardown).
func BenchmarkProbe(b *testing.B) {
	for _, c := range []struct {
		name  string
		vip   netip.Addr
		noARP bool
	}{
		{"ipv4", lab.VIP4, true}, {"ipv6", lab.VIP6, true}, {"ipv4+arpcheck", lab.VIP4, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			l := newProbeLabB(b)
			rs := l.Servers[1]
			cfg := probe.Config{Target: netip.AddrPortFrom(c.vip, lab.ServicePort), Real: realOf(rs, c.vip),
				Encap: probe.Encap{Kind: probe.L2}, Proto: probe.TCP, Timeout: time.Second, NoARPCheck: c.noARP, NetNS: l.Director.Handle}
			var added, rtt time.Duration
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				t0 := time.Now()
				r, err := probe.Probe(l.ctx, cfg)
				d := time.Since(t0)
				if err != nil || r.Verdict != probe.Up {
					b.Fatalf("%v %+v", err, r)
				}
				added += d - r.RTT
				rtt += r.RTT
			}
			el := time.Since(start)
			b.ReportMetric(float64(b.N)/el.Seconds(), "probes/s")
			b.ReportMetric(float64(added.Microseconds())/float64(b.N), "added-µs/probe")
			b.ReportMetric(float64(rtt.Microseconds())/float64(b.N), "rtt-µs/probe")
		})
	}
}
