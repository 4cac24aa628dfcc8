package agent

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/anyip"
	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/loopback"
	"github.com/dsr-agent/dsr-agent/route"
	"github.com/dsr-agent/dsr-agent/sysctl"
	"github.com/dsr-agent/dsr-agent/tunnel"
)

// simHost is a host in memory for pure plan tests: the kernel behind each
// surface's seam (kernel), so the real observe, diff and apply run against
// it. No kernel, no root.
type simHost struct {
	facts   *Facts // facts.Addrs is the kernel's address list
	sysctls map[string]string
	tables  map[firewall.Family]firewall.Spec
	rules   []route.Rule
	routes  []route.Route
	// shadows are foreign rules in front of return_via's (Shadows).
	shadows []route.Shadow
	tun     tunnel.Observed
	// anyip are dsr-agent's AnyIP routes (proto 213); anyipForeign the
	// other network routes of table local.
	anyip, anyipForeign []netip.Prefix
}

// newSimHost is a host with only its NIC address and default sysctls (0).
func newSimHost() *simHost {
	return &simHost{
		facts: &Facts{
			Addrs:       []loopback.Addr{addr("eth0.100", "198.51.100.21/24", "")},
			Links:       []string{"lo", "eth0.100"},
			DefaultLink: "eth0.100",
			MTU:         map[string]int{"eth0.100": 1500},
			Gateways:    map[netip.Addr]bool{netip.MustParseAddr("198.51.100.1"): true},
			Owned:       &Ownership{SavedSysctls: map[string]string{}},
		},
		sysctls: map[string]string{},
		tables:  map[firewall.Family]firewall.Spec{},
		tun:     tunnel.Observed{Modules: map[string]bool{}, Links: map[string]tunnel.Link{}},
	}
}

// kernel is the simulated host behind the surfaces' seams.
func (s *simHost) kernel() kernel {
	return kernel{sysctls: simSysctls{s}, addrs: simAddrs{s}, tables: simTables{s}, routes: simRoutes{s}, tunnel: simTunnel{s}, anyip: simAnyIP{s}}
}

// plan resolves cfg (nil: remove) and diffs the simulated host.
func (s *simHost) plan(t *testing.T, cfg *Config) (*Plan, *Desired) {
	t.Helper()
	p := s.planned(t, cfg)
	return p.plan, p.want
}

func (s *simHost) planned(t *testing.T, cfg *Config) *planned {
	t.Helper()
	d := &Desired{Tables: map[firewall.Family]firewall.Spec{}}
	if cfg != nil {
		var err error
		if d, err = Resolve(cfg, s.facts); err != nil {
			t.Fatal(err)
		}
	}
	// The surfaces get the one address dump of a pass, as from facts.
	f := *s.facts
	f.Addrs = slices.Clone(s.facts.Addrs)
	p, err := planOn(s.kernel(), &f, d)
	if err != nil {
		t.Fatal(err)
	}
	if p.blocked != nil {
		t.Fatal(p.blocked)
	}
	return p
}

func (s *simHost) sysctl(key string) string {
	if v, ok := s.sysctls[key]; ok {
		return v
	}
	return "0"
}

// apply runs a plan on the simulated host as the executor does: every
// change's own hook, then in order its apply (the surface's own, through
// the seam) and done.
func (s *simHost) apply(t *testing.T, p *Plan, _ *Desired) {
	t.Helper()
	st := s.facts.Owned
	for _, c := range p.Changes {
		if c.own != nil {
			if _, err := c.own(st); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range p.Changes {
		if c.apply != nil {
			if err := c.apply(); err != nil {
				t.Fatalf("%s %s: %v", c.Kind, c.Subject, err)
			}
		}
		if c.done != nil {
			c.done(st)
		}
	}
	st.compact()
}

// The simulated kernel's seams. Each refuses what the real one refuses
// where that matters (adding an address twice, deleting one not there).

type simSysctls struct{ h *simHost }

func (k simSysctls) Read(p sysctl.Path) (string, error) { return k.h.sysctl(p.Key()), nil }
func (k simSysctls) Write(p sysctl.Path, v string) error {
	k.h.sysctls[p.Key()] = v
	return nil
}

type simAddrs struct{ h *simHost }

func (k simAddrs) Add(a loopback.Addr) error {
	if slices.ContainsFunc(k.h.facts.Addrs, func(b loopback.Addr) bool { return b.Link == a.Link && b.Prefix == a.Prefix }) {
		return unix.EEXIST
	}
	k.h.facts.Addrs = append(k.h.facts.Addrs, a)
	return nil
}

func (k simAddrs) Del(a loopback.Addr) error {
	n := len(k.h.facts.Addrs)
	k.h.facts.Addrs = slices.DeleteFunc(k.h.facts.Addrs, func(b loopback.Addr) bool { return b.Link == a.Link && b.Prefix == a.Prefix })
	if len(k.h.facts.Addrs) == n {
		return unix.EADDRNOTAVAIL
	}
	return nil
}

type simTables struct{ h *simHost }

func (k simTables) Present() (map[firewall.Family]bool, error) {
	out := map[firewall.Family]bool{}
	for fam := range k.h.tables {
		out[fam] = true
	}
	return out, nil
}

// Diff compares the table's whole rendering, as the real one compares what
// the kernel lists.
func (k simTables) Diff(want firewall.Spec) (string, error) {
	if got := k.h.tables[want.Family()]; got == nil || got.Render() != want.Render() {
		return "content differs", nil
	}
	return "", nil
}
func (k simTables) Replace(s firewall.Spec) error { k.h.tables[s.Family()] = s; return nil }
func (k simTables) Delete(fam firewall.Family) error {
	delete(k.h.tables, fam)
	return nil
}

type simRoutes struct{ h *simHost }

func (k simRoutes) Observe(tables []int) (*route.Observed, error) {
	o := &route.Observed{Rules: slices.Clone(k.h.rules)}
	for _, r := range k.h.routes {
		if slices.Contains(tables, r.Table) {
			o.Routes = append(o.Routes, r)
		}
	}
	return o, nil
}
func (k simRoutes) Shadows([]route.Rule) ([]route.Shadow, error) { return k.h.shadows, nil }
func (k simRoutes) AddRule(r route.Rule) error {
	if !slices.Contains(k.h.rules, r) {
		k.h.rules = append(k.h.rules, r)
	}
	return nil
}
func (k simRoutes) DelRule(r route.Rule) error {
	k.h.rules = slices.DeleteFunc(k.h.rules, func(o route.Rule) bool { return o == r })
	return nil
}
func (k simRoutes) ReplaceRoute(r route.Route) error {
	k.h.routes = slices.DeleteFunc(k.h.routes, func(o route.Route) bool { return o.Table == r.Table && o.IPv6() == r.IPv6() })
	k.h.routes = append(k.h.routes, r)
	return nil
}
func (k simRoutes) DelRoute(r route.Route) error {
	k.h.routes = slices.DeleteFunc(k.h.routes, func(o route.Route) bool { return o == r })
	return nil
}

type simAnyIP struct{ h *simHost }

func (k simAnyIP) Observe() (*anyip.Observed, error) {
	return &anyip.Observed{Ours: slices.Clone(k.h.anyip), Foreign: slices.Clone(k.h.anyipForeign)}, nil
}

// Add refuses a foreign route of the same prefix, as the kernel does.
func (k simAnyIP) Add(p netip.Prefix) error {
	if slices.Contains(k.h.anyipForeign, p) {
		return anyip.ErrForeign
	}
	if !slices.Contains(k.h.anyip, p) {
		k.h.anyip = append(k.h.anyip, p)
	}
	return nil
}
func (k simAnyIP) Del(p netip.Prefix) error {
	k.h.anyip = slices.DeleteFunc(k.h.anyip, func(o netip.Prefix) bool { return o == p })
	return nil
}

type simTunnel struct{ h *simHost }

func (k simTunnel) observe() (tunnel.Observed, error) {
	return tunnel.Observed{Modules: maps.Clone(k.h.tun.Modules), Links: maps.Clone(k.h.tun.Links), Fou: slices.Clone(k.h.tun.Fou)}, nil
}
func (simTunnel) loadable(string) error { return nil }

func (k simTunnel) apply(step tunnel.Step) error {
	tun := &k.h.tun
	switch step.Kind {
	case tunnel.LoadModule:
		// Loading the module creates its fallback device, down.
		tun.Modules[step.Module] = true
		for mod, dev := range map[string]string{tunnel.ModIPIP: tunnel.DevIPv4, tunnel.ModIP6Tnl: tunnel.DevIPv6} {
			if tun.Modules[mod] && tun.Links[dev].Name == "" {
				tun.Links[dev] = tunnel.Link{Name: dev, Type: map[string]string{tunnel.DevIPv4: "ipip", tunnel.DevIPv6: "ip6tnl"}[dev]}
			}
		}
	case tunnel.CreateLink:
		tun.Links[step.Link] = tunnel.Link{Name: step.Link, Type: map[string]string{tunnel.DevIPv4: "ipip", tunnel.DevIPv6: "ip6tnl"}[step.Link]}
	case tunnel.DeleteLink:
		delete(tun.Links, step.Link)
	case tunnel.SetUp, tunnel.SetDown:
		l, ok := tun.Links[step.Link]
		if !ok {
			return unix.ENODEV
		}
		l.Up = step.Kind == tunnel.SetUp
		tun.Links[step.Link] = l
	case tunnel.AddFou:
		if slices.ContainsFunc(tun.Fou, func(p tunnel.FouPort) bool { return p.FouKey == step.Fou }) {
			return unix.EEXIST
		}
		tun.Fou = append(tun.Fou, tunnel.FouPort{FouKey: step.Fou, Encap: "gue"})
	case tunnel.DelFou:
		tun.Fou = slices.DeleteFunc(tun.Fou, func(p tunnel.FouPort) bool { return p.FouKey == step.Fou })
	default:
		return fmt.Errorf("simulated kernel cannot do %s", step)
	}
	return nil
}
