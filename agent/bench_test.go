package agent

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// benchVIPs returns n VIPs from the benchmarking range 198.18.0.0/15.
func benchVIPs(n int) []VIP {
	out := make([]VIP, n)
	base := netip.MustParseAddr("198.18.0.1").As4()
	for i := range n {
		a := base
		a[2] += byte(i / 250)
		a[3] += byte(i % 250)
		out[i] = VIP{Address: netip.AddrFrom4(a)}
	}
	return out
}

func benchHost(b *testing.B) (*Host, *netnstest.NS) {
	b.Helper()
	ns := netnstest.New(b)
	ns.AddDummy(b, "eth0", "198.51.100.21/24")
	h, err := OpenHostAt(filepath.Join(b.TempDir(), "state"), ns.Handle)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(h.Close)
	return h, ns
}

var benchSizes = []int{1, 100, 1000, 10000}

// BenchmarkApplyFromClean: apply of N VIPs in loopback mode to a fresh
// namespace (sysctls + N addresses on lo).
func BenchmarkApplyFromClean(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("vips=%d", n), func(b *testing.B) {
			cfg := &Config{Mode: ModeLoopback, Interfaces: []string{"eth0"}, VIPs: benchVIPs(n)}
			for b.Loop() {
				b.StopTimer()
				h, _ := benchHost(b)
				b.StartTimer()
				p, err := h.Apply(cfg)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Changes) != n+4 {
					b.Fatalf("%d changes, want %d", len(p.Changes), n+4)
				}
			}
		})
	}
}

// BenchmarkApplyFromCleanARPTables: the same in arptables mode (an nftables
// set and map of N elements, N addresses on the NIC).
func BenchmarkApplyFromCleanARPTables(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("vips=%d", n), func(b *testing.B) {
			cfg := &Config{Mode: ModeARPTables, Interfaces: []string{"eth0"}, VIPs: benchVIPs(n)}
			for b.Loop() {
				b.StopTimer()
				h, _ := benchHost(b)
				b.StartTimer()
				if _, err := h.Apply(cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkKernelFloorIPBatch is the kernel's own floor for the same work:
// `ip -batch` adding N /32s to lo in a fresh namespace, in the same run, so
// dsr-agent is judged by the ratio to it.
func BenchmarkKernelFloorIPBatch(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("vips=%d", n), func(b *testing.B) {
			var sb strings.Builder
			for _, v := range benchVIPs(n) {
				fmt.Fprintf(&sb, "addr add %s/32 dev lo\n", v.Address)
			}
			batch := filepath.Join(b.TempDir(), "batch")
			if err := os.WriteFile(batch, []byte(sb.String()), 0o644); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				b.StopTimer()
				_, ns := benchHost(b)
				b.StartTimer()
				if out, err := exec.Command("ip", "-n", ns.Name, "-batch", batch).CombinedOutput(); err != nil {
					b.Fatalf("ip -batch: %v\n%s", err, out)
				}
			}
		})
	}
}

// BenchmarkNoopReapply: apply when everything is already in place.
func BenchmarkNoopReapply(b *testing.B) {
	for _, tc := range []struct {
		mode Mode
		n    int
	}{{ModeLoopback, 1000}, {ModeARPTables, 1000}, {ModeLoopback, 10000}} {
		b.Run(fmt.Sprintf("mode=%s/vips=%d", tc.mode, tc.n), func(b *testing.B) {
			cfg := &Config{Mode: tc.mode, Interfaces: []string{"eth0"}, VIPs: benchVIPs(tc.n)}
			h, _ := benchHost(b)
			if _, err := h.Apply(cfg); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				p, err := h.Apply(cfg)
				if err != nil {
					b.Fatal(err)
				}
				if !p.Empty() {
					b.Fatalf("re-apply not a no-op:\n%s", p)
				}
			}
		})
	}
}

// BenchmarkApplyFromCleanTunnel: mode tunnel (IPIP) from a fresh namespace:
// tunl0 up, the ARP and rp_filter sysctls, the MSS clamp table, N VIPs on
// tunl0. Needs the ipip module: it runs in the tunnel VM test (make
// test-tunnel), beside the loopback figure of the same run.
func BenchmarkApplyFromCleanTunnel(b *testing.B) {
	requireTunnelModules(b)
	for _, mode := range []Mode{ModeLoopback, ModeTunnel} {
		for _, n := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("mode=%s/vips=%d", mode, n), func(b *testing.B) {
				cfg := &Config{Mode: mode, Interfaces: []string{"eth0"}, VIPs: benchVIPs(n)}
				if mode == ModeTunnel {
					cfg.Tunnel = &TunnelConfig{Encap: "ipip"}
				}
				for b.Loop() {
					b.StopTimer()
					h, _ := benchHost(b)
					b.StartTimer()
					if _, err := h.Apply(cfg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkApplyFromCleanPrefix (issue 21.5): apply through Host.Apply in
// loopback mode from a fresh namespace of one prefix VIP: a /16 (65,536
// VIPs, one local route) against a /32 as a single VIP (one address), in
// the same run, so the ratio is the measure (target: under 2×).
func BenchmarkApplyFromCleanPrefix(b *testing.B) {
	for _, tc := range []struct {
		name string
		cfg  *Config
	}{
		{"prefix=/16", &Config{Mode: ModeLoopback, Interfaces: []string{"eth0"}, Prefixes: []PrefixVIP{{Prefix: netip.MustParsePrefix("198.18.0.0/16")}}}},
		{"address=/32", &Config{Mode: ModeLoopback, Interfaces: []string{"eth0"}, VIPs: benchVIPs(1)}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				h, _ := benchHost(b)
				b.StartTimer()
				p, err := h.Apply(tc.cfg)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Changes) != 5 {
					b.Fatalf("%d changes, want 5 (4 sysctls and the VIP):\n%s", len(p.Changes), p)
				}
			}
		})
	}
}

// benchPrefixes returns n /24 prefixes from 10.0.0.0/8.
func benchPrefixes(n int) []PrefixVIP {
	out := make([]PrefixVIP, n)
	for i := range n {
		out[i] = PrefixVIP{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 256), byte(i % 256), 0}), 24)}
	}
	return out
}

// BenchmarkNoopReapplyPrefixes: apply with 1,000 prefix VIPs already in
// place, through Host.Apply (target: under 10 ms), beside one prefix: the
// difference is what the prefixes cost, the rest is Apply's fixed cost
// (facts, state, sysctls, tables).
func BenchmarkNoopReapplyPrefixes(b *testing.B) {
	for _, tc := range []struct {
		mode Mode
		n    int
	}{{ModeLoopback, 1}, {ModeLoopback, 1000}, {ModeARPTables, 1000}} {
		mode := tc.mode
		b.Run(fmt.Sprintf("mode=%s/prefixes=%d", mode, tc.n), func(b *testing.B) {
			cfg := &Config{Mode: mode, Interfaces: []string{"eth0"}, Prefixes: benchPrefixes(tc.n)}
			h, _ := benchHost(b)
			if _, err := h.Apply(cfg); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				p, err := h.Apply(cfg)
				if err != nil {
					b.Fatal(err)
				}
				if !p.Empty() {
					b.Fatalf("re-apply not a no-op:\n%s", p)
				}
			}
		})
	}
}
