package health

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkHealthzUnderFlood measures a director's /healthz (a new
// connection per check, as keepalived and HAProxy do) while another process
// holds 2,000 connections against the port: slow headers and idle
// keep-alive from a source inside allowed_sources, complete requests from
// one outside it. Every flood connection is reopened as soon as the server
// drops it. Reported: p50, p99 and max latency in ms, failed checks (no 200
// within 5 s), and how often per second the flood had to reconnect. Run with
// -benchtime 500x; see bench/RESULTS.md.
func BenchmarkHealthzUnderFlood(b *testing.B) {
	for _, bc := range []struct {
		name  string
		src   string
		kind  floodKind
		agent bool
	}{
		{name: "none"},
		{name: "slow-headers", src: attackerSource, kind: slowHeaders},
		{name: "idle-keepalive", src: attackerSource, kind: idleKeepAlive},
		{name: "outside-source", src: outsideSource, kind: plainRequests},
		{name: "agent-none", agent: true},
		{name: "agent-silent", src: attackerSource, kind: silent, agent: true},
		{name: "agent-outside-source", src: outsideSource, kind: plainRequests, agent: true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var addr string
			probe := healthzOnce
			if bc.agent {
				addr, probe = startAgentServer(b, loopbackAllowed), agentOnce
			} else {
				addr = startHealthServer(b, loopbackAllowed)
			}
			var f *flood
			if bc.src != "" {
				f = startFlood(b, addr, bc.src, 2000, bc.kind)
			}
			lat := make([]time.Duration, 0, b.N)
			failed := 0
			start := time.Now()
			b.ResetTimer()
			for range b.N {
				d, err := probe(addr, 5*time.Second)
				if err != nil {
					failed++
					if failed == 1 {
						b.Logf("first failure: %v", err)
					}
				}
				lat = append(lat, d)
				time.Sleep(10 * time.Millisecond) // a checker's pace, not synchronisation
			}
			b.StopTimer()
			elapsed := time.Since(start)
			slices.Sort(lat)
			q := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
			}
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1])/float64(time.Millisecond), "max-ms")
			b.ReportMetric(float64(failed), "failed")
			b.ReportMetric(0, "ns/op")
			if f != nil {
				f.stop()
				b.ReportMetric(float64(f.dials-2000)/elapsed.Seconds(), "flood-reconnects/s")
			}
			b.Logf("%d checks in %v", b.N, elapsed.Round(time.Millisecond))
		})
	}
}
