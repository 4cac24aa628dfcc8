package probe_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/lab"
	"github.com/dsr-agent/dsr-agent/probe"
)

// BenchmarkProbe: TCP probes of a healthy real server in the lab, one at a
// time (run with -cpu 1 for "one core"), the director's neighbour table warm. Reports probes/s and the latency the
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
			// A director that forwards to its real servers has their MACs in
			// its neighbour table: measure that case, not ARP every time.
			warmNeighbours(b, l)
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

// BenchmarkProbeAll: the --all path, 16 probes at a time (one core with
// -cpu 1): the waits (kernel, wire) overlap, so throughput is what one core's
// CPU allows.
func BenchmarkProbeAll(b *testing.B) {
	l := newProbeLabB(b)
	warmNeighbours(b, l)
	rs := l.Servers[1]
	cfg := probe.Config{Target: netip.AddrPortFrom(lab.VIP4, lab.ServicePort), Real: rs.IP4,
		Encap: probe.Encap{Kind: probe.L2}, Proto: probe.TCP, Timeout: time.Second, NoARPCheck: true, NetNS: l.Director.Handle}
	cfgs := make([]probe.Config, b.N)
	for i := range cfgs {
		cfgs[i] = cfg
	}
	b.ResetTimer()
	start := time.Now()
	res := probe.All(l.ctx, cfgs, 16)
	el := time.Since(start)
	bad := 0
	for _, r := range res {
		if r.Verdict != probe.Up {
			bad++
			b.Logf("port %d: %s\n%s", r.SourcePort, r.Explanation, ipCmd(b, rs, "ss", "-tanoi", fmt.Sprintf("dport = %d", r.SourcePort)))
		}
	}
	if bad > 0 {
		b.Fatalf("%d of %d probes not up", bad, b.N)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "probes/s")
}
