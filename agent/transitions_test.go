package agent

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/loopback"
	"github.com/dsr-agent/dsr-agent/route"
	"github.com/dsr-agent/dsr-agent/sysctl"
	"github.com/dsr-agent/dsr-agent/tunnel"
)

// walkConfigs are the states the seeded walks visit ("" is remove).
var walkConfigs = []string{
	"mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}]\n",
	"mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: 192.0.2.11}]\nreturn_via: {gateway: 198.51.100.252, ports: [{port: 443}, {port: 80}]}\n",
	"mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\nreturn_via: {gateway: 198.51.100.252}\n",
	"mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\nreturn_via: {gateway: 198.51.100.1, table: 100}\n",
	"mode: loopback\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/24}, {address: 192.0.2.10}, {prefix: '2001:db8:100::/64'}]\n",
	"mode: loopback\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/25}, {prefix: 203.0.113.128/25}]\n",
	"mode: arptables\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}, {address: 192.0.2.11}]\n",
	"mode: arptables\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.11}]\n",
	"mode: arptables\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/24}, {address: 192.0.2.10}, {prefix: '2001:db8:100::/64'}]\n",
	"mode: arptables\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/25}]\n",
	"mode: firewalld\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10, ports: [{port: 80}]}, {address: '2001:db8::10', ports: [{port: 443, to_port: 8443}]}]\n",
	"mode: firewalld\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.11, ports: [{port: 53, protocol: udp}]}]\n",
	"mode: firewalld\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/24, ports: [{port: 80}]}, {address: 192.0.2.10, ports: [{port: 80}]}, {prefix: '2001:db8:100::/64', ports: [{port: 443}]}]\n",
	"mode: firewalld\ninterfaces: [eth0.100]\nvips: []\n",
	"mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}]\n",
	"mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}]\ntunnel: {encap: gue, mss: 1400}\n",
	"mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\ntunnel: {encap: gue, port: 5555}\n",
	"mode: tunnel\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/24, ports: [{port: 80}]}, {address: 192.0.2.10}, {prefix: '2001:db8:100::/64'}]\n",
	"mode: tunnel\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/25}]\ntunnel: {encap: gue}\n",
	"",
}

// TestTransitionWalks, after tailscale's TestRouterStates: seeded random
// walks through walkConfigs on the simulated host, each config applied by
// the real surfaces through their seams. After each step the simulated
// kernel itself must hold what the config asks (not merely a plan that
// comes out empty), and remove must leave it as found.
func TestTransitionWalks(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		t.Run(fmt.Sprint("seed-", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 19))
			h := newSimHost()
			var path []int
			for range 3 * len(walkConfigs) {
				i := rng.IntN(len(walkConfigs))
				path = append(path, i)
				h.step(t, walkConfigs[i], path)
			}
			h.step(t, "", append(path, len(walkConfigs)-1)) // remove
		})
	}
}

// step applies y ("" remove) and checks the simulated kernel.
func (s *simHost) step(t *testing.T, y string, path []int) {
	t.Helper()
	var cfg *Config
	if y != "" {
		cfg = mustConfig(t, y)
	}
	before := s.snapshot()
	p, d := s.plan(t, cfg)
	s.apply(t, p, d)
	if again, _ := s.plan(t, cfg); !again.Empty() {
		t.Fatalf("walk %v: not converged:\n%s", path, again)
	}
	switch {
	case d.HandsOff:
		if after := s.snapshot(); after != before {
			t.Fatalf("walk %v: `vips: []` changed the host:\nbefore %s\nafter  %s", path, before, after)
		}
	case cfg == nil:
		s.checkClean(t, path)
	default:
		s.checkKernel(t, d, path)
	}
}

// checkKernel compares the simulated kernel with d, each surface's state
// by its own terms.
func (s *simHost) checkKernel(t *testing.T, d *Desired, path []int) {
	t.Helper()
	have := map[string]bool{}
	for _, a := range s.facts.Addrs {
		have[loopback.Key(a.Link, a.Prefix)] = true
	}
	want := map[string]bool{loopback.Key("eth0.100", netip.MustParsePrefix("198.51.100.21/24")): true}
	for _, a := range d.Addrs {
		want[loopback.Key(a.Link, a.Prefix)] = true
		if !have[loopback.Key(a.Link, a.Prefix)] {
			t.Errorf("walk %v: VIP %s missing on %s", path, a.Prefix, a.Link)
		}
	}
	for _, a := range s.facts.Addrs {
		if !want[loopback.Key(a.Link, a.Prefix)] {
			t.Errorf("walk %v: address %s on %s not in the config", path, a.Prefix, a.Link)
		}
	}
	cur := map[string]string{}
	for _, w := range d.Sysctls {
		cur[w.Path.Key()] = s.sysctl(w.Path.Key())
	}
	for _, n := range sysctl.Needed(d.Sysctls, cur) {
		t.Errorf("walk %v: sysctl %s: %s", path, n.Setting.Path, n.Reason)
	}
	if !slices.Equal(slices.Sorted(maps.Keys(s.tables)), slices.Sorted(maps.Keys(d.Tables))) {
		t.Errorf("walk %v: tables of families %v, want %v", path, slices.Sorted(maps.Keys(s.tables)), slices.Sorted(maps.Keys(d.Tables)))
	}
	for fam, spec := range d.Tables {
		if got := s.tables[fam]; got != nil && got.Render() != spec.Render() {
			t.Errorf("walk %v: %s:\n%s\nwant\n%s", path, firewall.TableRef(fam), got.Render(), spec.Render())
		}
	}
	if !sameSet(s.anyip, d.LocalPrefixes) {
		t.Errorf("walk %v: AnyIP routes %v, want %v", path, s.anyip, d.LocalPrefixes)
	}
	if !sameSet(s.rules, d.Rules) || !sameSet(s.routes, d.Routes) {
		t.Errorf("walk %v: rules %v routes %v, want %v %v", path, s.rules, s.routes, d.Rules, d.Routes)
	}
	spec := tunnel.Spec{}
	if d.Tunnel != nil {
		spec = *d.Tunnel
	}
	for dev, on := range map[string]bool{tunnel.DevIPv4: spec.IPv4, tunnel.DevIPv6: spec.IPv6} {
		if on && !s.tun.Links[dev].Up {
			t.Errorf("walk %v: %s not up", path, dev)
		}
	}
	var fou []tunnel.FouKey
	for _, f := range s.tun.Fou {
		fou = append(fou, f.FouKey)
	}
	var wantFou []tunnel.FouKey
	if spec.GUEPort != 0 {
		if spec.IPv4 {
			wantFou = append(wantFou, tunnel.FouKey{Family: 4, Port: spec.GUEPort})
		}
		if spec.IPv6 {
			wantFou = append(wantFou, tunnel.FouKey{Family: 6, Port: spec.GUEPort})
		}
	}
	if !sameSet(fou, wantFou) {
		t.Errorf("walk %v: fou ports %v, want %v", path, fou, wantFou)
	}
}

// checkClean: after remove, nothing of dsr-agent's is left and every
// sysctl is back to the host's 0.
func (s *simHost) checkClean(t *testing.T, path []int) {
	t.Helper()
	if len(s.facts.Addrs) != 1 || len(s.tables) != 0 || len(s.rules) != 0 || len(s.routes) != 0 || len(s.tun.Fou) != 0 || len(s.anyip) != 0 {
		t.Errorf("walk %v: after remove: %s", path, s.snapshot())
	}
	for k, v := range s.sysctls {
		if v != "0" {
			t.Errorf("walk %v: %s = %s after remove, want 0", path, k, v)
		}
	}
	for _, l := range s.tun.Links {
		if l.Up {
			t.Errorf("walk %v: %s left up after remove", path, l.Name)
		}
	}
	if o := s.facts.Owned; len(o.Addresses) != 0 || len(o.SavedSysctls) != 0 || !o.Tunnel.Empty() {
		t.Errorf("walk %v: ownership after remove: %+v", path, o)
	}
}

// snapshot renders the whole simulated kernel.
func (s *simHost) snapshot() string {
	var b strings.Builder
	for _, a := range s.facts.Addrs {
		fmt.Fprintf(&b, "addr %s %s %s; ", a.Link, a.Prefix, a.Label)
	}
	for _, k := range slices.Sorted(maps.Keys(s.sysctls)) {
		fmt.Fprintf(&b, "%s=%s; ", k, s.sysctls[k])
	}
	for _, fam := range slices.Sorted(maps.Keys(s.tables)) {
		fmt.Fprintf(&b, "table %s %q; ", firewall.TableRef(fam), s.tables[fam].Render())
	}
	fmt.Fprintf(&b, "rules %v routes %v tunnel %v %v anyip %v", s.rules, s.routes, s.tun.Links, s.tun.Fou, s.anyip)
	return b.String()
}

func sameSet[T comparable](a, b []T) bool {
	count := map[T]int{}
	for _, x := range a {
		count[x]++
	}
	for _, x := range b {
		count[x]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}

// TestDriftEveryKind: each drift kind a surface reports, made on the
// simulated kernel behind dsr-agent's back, is named by status and
// repaired by the next apply (a shadowing rule only named: it is not
// dsr-agent's). listener-missing and proxy-answers are read beside the
// plan from sock_diag and /proc, not through a surface's seam: their
// real-kernel tests are TestListenersStatus and the proxy kernel tests.
func TestDriftEveryKind(t *testing.T) {
	const (
		lo     = "mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n"
		ret    = "mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\nreturn_via: {gateway: 198.51.100.252, ports: [{port: 443}]}\n"
		arpt   = "mode: arptables\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n"
		tunGUE = "mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\ntunnel: {encap: gue}\n"
		tunIP  = "mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n"
		pfx    = "mode: loopback\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/24}]\n"
	)
	for _, tc := range []struct {
		kind DriftKind
		// setup is applied first; then drift is made and cfg checked.
		setup, cfg string
		drift      func(h *simHost)
	}{
		{DriftVIPMissing, lo, lo, func(h *simHost) { _ = simAddrs{h}.Del(addr("lo", "192.0.2.10/32", "")) }},
		{DriftVIPUnexpected, lo, lo, func(h *simHost) {
			_ = simAddrs{h}.Add(addr("lo", "192.0.2.99/32", "lo:dsr9"))
			h.facts.Owned.addAddr("lo", "192.0.2.99/32")
		}},
		{DriftSysctlWrong, lo, lo, func(h *simHost) { h.sysctls["net/ipv4/conf/all/arp_ignore"] = "0" }},
		{DriftSysctlNotRestored, lo, lo, func(h *simHost) {
			h.sysctls["net/ipv4/conf/eth0.200/arp_ignore"] = "1"
			h.facts.Owned.SavedSysctls["net/ipv4/conf/eth0.200/arp_ignore"] = "0"
		}},
		{DriftTableWrong, arpt, arpt, func(h *simHost) { h.tables[nftables.TableFamilyARP] = &firewall.ARPTable{} }},
		{DriftTableUnexpected, lo, lo, func(h *simHost) { h.tables[nftables.TableFamilyIPv4] = &firewall.NATTable{} }},
		{DriftRouteMissing, ret, ret, func(h *simHost) { h.routes = nil }},
		{DriftRouteWrong, ret, ret, func(h *simHost) { h.routes[0].Gateway = netip.MustParseAddr("198.51.100.253") }},
		{DriftRouteUnexpected, ret, lo, nil},
		{DriftRuleMissing, ret, ret, func(h *simHost) { h.rules = h.rules[1:] }},
		{DriftRuleUnexpected, ret, ret, func(h *simHost) {
			r := h.rules[0]
			r.SPort = 8443
			h.rules = append(h.rules, r)
		}},
		{DriftRuleShadowed, ret, ret, func(h *simHost) {
			h.shadows = []route.Shadow{{Foreign: "priority 100 from all lookup 100", Want: h.rules[0]}}
		}},
		{DriftTunnelMissing, tunGUE, tunGUE, func(h *simHost) { h.tun.Fou = nil }},
		{DriftTunnelUnexpected, tunGUE, tunIP, nil},
		{DriftPrefixMissing, pfx, pfx, func(h *simHost) { h.anyip = nil }},
		{DriftPrefixUnexpected, pfx, lo, nil},
	} {
		t.Run(string(tc.kind), func(t *testing.T) {
			h := newSimHost()
			p, d := h.plan(t, mustConfig(t, tc.setup))
			h.apply(t, p, d)
			if tc.drift != nil {
				tc.drift(h)
			}
			cfg := mustConfig(t, tc.cfg)
			r := h.planned(t, cfg).report()
			if r.InSync || !slices.ContainsFunc(r.Differences, func(d Difference) bool { return d.Kind == tc.kind }) {
				t.Fatalf("status does not name %s:\n%s", tc.kind, r)
			}
			if tc.kind == DriftRuleShadowed {
				return
			}
			p, d = h.plan(t, cfg)
			h.apply(t, p, d)
			if r := h.planned(t, cfg).report(); !r.InSync {
				t.Fatalf("not repaired:\n%s", r)
			}
			h.checkKernel(t, d, nil)
		})
	}
}
