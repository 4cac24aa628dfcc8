package agent

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/arp"
	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/internal/golden"
	"github.com/dsr-agent/dsr-agent/loopback"
	"github.com/dsr-agent/dsr-agent/route"
	"github.com/dsr-agent/dsr-agent/tunnel"
)

func mustConfig(t *testing.T, y string) *Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func addr(link, prefix, label string) loopback.Addr {
	return loopback.Addr{Link: link, Prefix: netip.MustParsePrefix(prefix), Label: label}
}

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
	tun     tunnel.State
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
		tun:     tunnel.State{Modules: map[string]bool{}, Links: map[string]tunnel.Link{}},
	}
}

// kernel is the simulated host behind the surfaces' seams.
func (s *simHost) kernel() kernel {
	return kernel{sysctls: simSysctls{s}, addrs: simAddrs{s}, tables: simTables{s}, routes: simRoutes{s}, tunnel: simTunnel{s}}
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

func (k simSysctls) Read(p arp.Path) (string, error) { return k.h.sysctl(p.Key()), nil }
func (k simSysctls) Write(p arp.Path, v string) error {
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

type simTunnel struct{ h *simHost }

func (k simTunnel) observe() (tunnel.State, error) {
	return tunnel.State{Modules: maps.Clone(k.h.tun.Modules), Links: maps.Clone(k.h.tun.Links), Fou: slices.Clone(k.h.tun.Fou)}, nil
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

var planConfigs = map[string]string{
	"loopback":  "mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: 192.0.2.11}, {address: '2001:db8::10'}]\n",
	"arptables": "mode: arptables\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: 192.0.2.11, real_ip: 198.51.100.22}, {address: '2001:db8::10'}]\n",
	"firewalld": "mode: firewalld\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10, ports: [{port: 80, to_port: 8080}, {port: 53, protocol: udp}]}, {address: '2001:db8::10', ports: [{port: 443}]}]\n",
}

func TestPlanGolden(t *testing.T) {
	for name, y := range planConfigs {
		t.Run(name, func(t *testing.T) {
			h := newSimHost()
			if name == "arptables" {
				h.facts.Addrs = append(h.facts.Addrs, addr("eth0.100", "198.51.100.22/24", ""))
			}
			p, _ := h.plan(t, mustConfig(t, y))
			golden.Assert(t, "plan-"+name+".txt", p.String())
		})
	}
}

// TestPlanModeSwitchOrder: switching loopback -> arptables puts the ARP
// table in place before the VIPs go on the NIC, removes them from lo only
// once they are there (add before delete: a plan stopped halfway leaves
// them served), and restores the sysctls only at the end.
func TestPlanModeSwitchOrder(t *testing.T) {
	h := newSimHost()
	h.facts.Addrs = append(h.facts.Addrs, addr("lo", "192.0.2.10/32", "lo:dsr0"), addr("lo", "127.0.0.1/8", ""))
	h.facts.Owned = &Ownership{
		SavedSysctls: map[string]string{"net/ipv4/conf/all/arp_ignore": "0", "net/ipv4/conf/all/arp_announce": "0"},
		Addresses:    []OwnedAddr{{Link: "lo", Prefix: "192.0.2.10/32"}},
	}
	h.sysctls["net/ipv4/conf/all/arp_ignore"] = "1"
	h.sysctls["net/ipv4/conf/all/arp_announce"] = "2"
	p, _ := h.plan(t, mustConfig(t, "mode: arptables\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n"))
	golden.Assert(t, "plan-switch-loopback-to-arptables.txt", p.String())
	var kinds []ChangeKind
	for _, c := range p.Changes {
		kinds = append(kinds, c.Kind)
	}
	want := []ChangeKind{TableReplace, AddrAdd, AddrDel, SysctlRestore, SysctlRestore}
	if !slices.Equal(kinds, want) {
		t.Fatalf("kinds = %v, want %v", kinds, want)
	}
}

func TestPlanInSyncIsEmpty(t *testing.T) {
	h := newSimHost()
	cfg := mustConfig(t, "interfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n")
	p, d := h.plan(t, cfg)
	h.apply(t, p, d)
	if p, _ := h.plan(t, cfg); !p.Empty() {
		t.Fatalf("plan not empty after applying it:\n%s", p)
	}
}

// TestRouterStates, after tailscale's: a sequence of configs, the plan
// text expected after each, played on a simulated host. Pure and fast;
// the real-kernel tests prove each kind of change does what it renders.
func TestRouterStates(t *testing.T) {
	steps := []struct{ name, config string }{
		{"01-loopback-2-vips", "mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}]\n"},
		{"02-one-more-vip", "mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}, {address: 192.0.2.11}]\n"},
		{"03-same-again", "mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}, {address: 192.0.2.11}]\n"},
		{"04-arptables", "mode: arptables\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}, {address: 192.0.2.11}]\n"},
		{"05-firewalld", "mode: firewalld\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10, ports: [{port: 80}]}, {address: '2001:db8::10', ports: [{port: 443, to_port: 8443}]}]\n"},
		{"06-empty-vip-list", "mode: firewalld\ninterfaces: [eth0.100]\nvips: []\n"},
		{"07-loopback-again", "mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n"},
		{"08-tunnel-ipip", "mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}]\n"},
		{"09-tunnel-gue", "mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}]\ntunnel: {encap: gue, mss: 1400}\n"},
		{"10-tunnel-v4-only", "mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\ntunnel: {encap: gue, mss: 1400}\n"},
		{"11-return-via-ports", "mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\nreturn_via: {gateway: 198.51.100.252, ports: [{port: 443}, {port: 80}]}\n"},
		{"12-return-via-whole-default", "mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\nreturn_via: {gateway: 198.51.100.252}\n"},
		{"13-remove", ""},
	}
	h := newSimHost()
	var transcript strings.Builder
	for _, s := range steps {
		var cfg *Config
		if s.config != "" {
			cfg = mustConfig(t, s.config)
		}
		p, d := h.plan(t, cfg)
		transcript.WriteString("### " + s.name + "\n" + p.String())
		h.apply(t, p, d)
		if again, _ := h.plan(t, cfg); !again.Empty() {
			t.Fatalf("%s: not converged after applying its plan:\n%s", s.name, again)
		}
	}
	golden.Assert(t, "router-states.txt", transcript.String())
	if len(h.facts.Owned.Addresses) != 0 || len(h.facts.Owned.SavedSysctls) != 0 {
		t.Fatalf("state after remove: %+v", h.facts.Owned)
	}
	for k, v := range h.sysctls {
		if v != "0" {
			t.Errorf("%s = %s after remove, want 0", k, v)
		}
	}
}

// TestStatusViewsGolden: status text and --json are renderings of the plan:
// a host in sync, one with drift of three kinds (a sysctl, a VIP, a table
// of another mode; TestDriftEveryKind covers every kind), and one with
// arp_ignore 8.
func TestStatusViewsGolden(t *testing.T) {
	cfg := mustConfig(t, planConfigs["loopback"])
	h := newSimHost()
	p, d := h.plan(t, cfg)
	h.apply(t, p, d)
	var text, js strings.Builder
	view := func(name string) {
		r := h.planned(t, cfg).report()
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		text.WriteString("### " + name + "\n" + r.String())
		js.WriteString("### " + name + "\n" + string(b) + "\n")
	}
	view("in-sync")
	h.sysctls["net/ipv4/conf/all/arp_ignore"] = "3" // reset by hand: answers for the VIP
	h.facts.Addrs = slices.DeleteFunc(h.facts.Addrs, func(a loopback.Addr) bool { return a.Prefix.Addr().String() == "192.0.2.11" })
	h.tables[firewall.Family(nftables.TableFamilyARP)] = &firewall.ARPTable{} // a table of another mode left behind
	view("drift")
	h.sysctls["net/ipv4/conf/all/arp_ignore"] = "8"
	h.facts.Addrs = append(h.facts.Addrs, addr("lo", "192.0.2.11/32", "lo:dsr1"))
	delete(h.tables, firewall.Family(nftables.TableFamilyARP))
	view("arp-ignore-8")
	golden.Assert(t, "status-views.txt", text.String())
	golden.Assert(t, "status-views.json", js.String())
}

// TestLogViewGolden: the daemon's log lines are a rendering of the same
// plan (Change.LogAttrs through slog's text handler).
func TestLogViewGolden(t *testing.T) {
	h := newSimHost()
	p, _ := h.plan(t, mustConfig(t, planConfigs["loopback"]))
	var b strings.Builder
	log := slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	for _, c := range p.Visible() {
		log.Warn("drift repaired", c.LogAttrs("trigger", "address")...)
	}
	golden.Assert(t, "log-view.txt", b.String())
}

// A GUE port deleted behind dsr-agent's back is re-added and stays owned
// (the forgetting of vanished entries must not undo the new record), so
// remove still deletes it; one that vanished for good is forgotten.
func TestTunnelOwnershipAcrossDrift(t *testing.T) {
	h := newSimHost()
	cfg := mustConfig(t, "mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\ntunnel: {encap: gue}\n")
	p, d := h.plan(t, cfg)
	h.apply(t, p, d)
	want := []tunnel.FouKey{{Family: 4, Port: DefaultGUEPort}}
	if !slices.Equal(h.facts.Owned.Tunnel.FouPorts, want) {
		t.Fatalf("owned fou ports %v, want %v", h.facts.Owned.Tunnel.FouPorts, want)
	}
	h.tun.Fou = nil // ip fou del port 6080
	p, d = h.plan(t, cfg)
	if !strings.Contains(p.String(), "ip fou add port 6080 gue") {
		t.Fatalf("no repair planned:\n%s", p)
	}
	h.apply(t, p, d)
	if !slices.Equal(h.facts.Owned.Tunnel.FouPorts, want) {
		t.Fatalf("after the repair dsr-agent no longer owns the port: %v", h.facts.Owned.Tunnel.FouPorts)
	}
	p, d = h.plan(t, nil)
	if !strings.Contains(p.String(), "ip fou del port 6080") {
		t.Fatalf("remove leaves the GUE port:\n%s", p)
	}
	h.apply(t, p, d)
	// Vanished for good: switch to ipip while the port is gone.
	p, d = h.plan(t, cfg)
	h.apply(t, p, d)
	h.tun.Fou = nil
	p, d = h.plan(t, mustConfig(t, "mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n"))
	h.apply(t, p, d)
	if len(h.facts.Owned.Tunnel.FouPorts) != 0 {
		t.Fatalf("a vanished, no longer wanted port is still owned: %v", h.facts.Owned.Tunnel.FouPorts)
	}
}
