package agent

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"

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

// simHost is a host in memory for pure plan tests: what the surfaces would
// observe, and how applying a plan changes it. No kernel, no root.
type simHost struct {
	facts   *Facts
	sysctls map[string]string
	tables  map[firewall.Family]bool
	routes  *route.Observed
	tun     tunnel.Observed
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
			State:       &State{SavedSysctls: map[string]string{}},
		},
		sysctls: map[string]string{},
		tables:  map[firewall.Family]bool{},
		routes:  &route.Observed{},
		tun:     tunnel.Observed{Modules: map[string]bool{}, Links: map[string]tunnel.Link{}},
	}
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
	cur := map[string]string{}
	for _, w := range d.Sysctls {
		cur[w.Path.Key()] = s.sysctl(w.Path.Key())
	}
	for k := range s.facts.State.SavedSysctls {
		cur[k] = s.sysctl(k)
	}
	why := map[firewall.Family]string{}
	for fam := range d.Tables {
		if !s.tables[fam] {
			why[fam] = "table missing"
		}
	}
	sysctls, tables := &sysctlSurface{cur: cur}, &tableSurface{present: s.tables, why: why}
	spec := tunnel.Spec{}
	if d.Tunnel != nil {
		spec = *d.Tunnel
	}
	steps, err := tunnel.Needed(spec, s.tun, s.facts.State.Tunnel)
	if err != nil {
		t.Fatal(err)
	}
	surfaces := []surface{&tunnelSurface{steps: steps, stale: staleOwned(s.facts.State.Tunnel, s.tun)}, &addrSurface{addrs: s.facts.Addrs}, sysctls, tables, &routeSurface{obs: s.routes}}
	return &planned{plan: planFrom(surfaces, d, s.facts.State), facts: s.facts, want: d, sysctls: sysctls, tables: tables}
}

func (s *simHost) sysctl(key string) string {
	if v, ok := s.sysctls[key]; ok {
		return v
	}
	return "0"
}

// apply plays a plan on the simulated host: the state journal through the
// changes' own hooks, the "kernel" by what each change does.
func (s *simHost) apply(t *testing.T, p *Plan, d *Desired) {
	t.Helper()
	st := s.facts.State
	for _, c := range p.Changes {
		if c.own != nil {
			if _, err := c.own(st); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range p.Changes {
		switch {
		case c.bookkeeping:
		case c.Kind == AddrDel:
			// The address on the device the command names: a moved VIP is
			// briefly on two.
			f := strings.Fields(c.Command)
			dev := f[slices.Index(f, "dev")+1]
			s.facts.Addrs = slices.DeleteFunc(s.facts.Addrs, func(a loopback.Addr) bool { return a.Prefix.Addr().String() == c.Subject && a.Link == dev })
		case c.Kind == AddrAdd:
			s.facts.Addrs = append(s.facts.Addrs, *c.missing)
		case c.Kind == SysctlSet || c.Kind == SysctlRestore:
			name, value, _ := strings.Cut(strings.Fields(c.Command)[2], "=")
			s.sysctls[pathKey(name)] = value
		case c.Kind == TableReplace || c.Kind == TableDelete:
			for _, fam := range firewall.Families {
				if firewall.TableRef(fam) == c.Subject {
					s.tables[fam] = c.Kind == TableReplace
				}
			}
		case c.Kind == tunnelKinds[tunnel.LoadModule]:
			// Loading the module creates its fallback device, down.
			s.tun.Modules[strings.Fields(c.Command)[1]] = true
			for mod, dev := range map[string]string{tunnel.ModIPIP: tunnel.DevIPv4, tunnel.ModIP6Tnl: tunnel.DevIPv6} {
				if s.tun.Modules[mod] && s.tun.Links[dev].Name == "" {
					s.tun.Links[dev] = tunnel.Link{Name: dev, Type: map[string]string{tunnel.DevIPv4: "ipip", tunnel.DevIPv6: "ip6tnl"}[dev]}
				}
			}
		case c.Kind == tunnelKinds[tunnel.SetUp] || c.Kind == tunnelKinds[tunnel.SetDown]:
			l := s.tun.Links[strings.Fields(c.Command)[3]]
			l.Up = c.Kind == tunnelKinds[tunnel.SetUp]
			s.tun.Links[l.Name] = l
		case c.Kind == tunnelKinds[tunnel.AddFou] || c.Kind == tunnelKinds[tunnel.DelFou]:
			f := strings.Fields(c.Command)
			port, _ := strconv.Atoi(f[len(f)-1])
			if c.Kind == tunnelKinds[tunnel.AddFou] {
				port, _ = strconv.Atoi(f[len(f)-2])
			}
			key := tunnel.FouKey{Family: 4, Port: uint16(port)}
			if f[1] == "-6" {
				key.Family = 6
			}
			s.tun.Fou = slices.DeleteFunc(s.tun.Fou, func(p tunnel.FouPort) bool { return p.FouKey == key })
			if c.Kind == tunnelKinds[tunnel.AddFou] {
				s.tun.Fou = append(s.tun.Fou, tunnel.FouPort{FouKey: key, Encap: "gue"})
			}
		case c.Kind == RuleAdd || c.Kind == RuleDel || c.Kind == RouteReplace || c.Kind == RouteDel:
			// The route surface's changes take the kernel to exactly the
			// desired rules and routes.
			s.routes = &route.Observed{Rules: d.Rules, Routes: d.Routes}
		default:
			t.Fatalf("simHost cannot play %s", c.Kind)
		}
		if c.done != nil {
			c.done(st)
		}
	}
	st.compact()
}

// pathKey turns sysctl(8)'s name back into a Path.Key.
func pathKey(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	return arp.Path(strings.Split(name, ".")).Key()
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
	h.facts.State = &State{
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
	if len(h.facts.State.Addresses) != 0 || len(h.facts.State.SavedSysctls) != 0 {
		t.Fatalf("state after remove: %+v", h.facts.State)
	}
	for k, v := range h.sysctls {
		if v != "0" {
			t.Errorf("%s = %s after remove, want 0", k, v)
		}
	}
}

// TestStatusViewsGolden: status text and --json are renderings of the plan:
// a host in sync, one with drift of every kind, and one with arp_ignore 8.
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
	h.tables[firewall.Family(nftables.TableFamilyARP)] = true // a table of another mode left behind
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
	if !slices.Equal(h.facts.State.Tunnel.FouPorts, want) {
		t.Fatalf("owned fou ports %v, want %v", h.facts.State.Tunnel.FouPorts, want)
	}
	h.tun.Fou = nil // ip fou del port 6080
	p, d = h.plan(t, cfg)
	if !strings.Contains(p.String(), "ip fou add port 6080 gue") {
		t.Fatalf("no repair planned:\n%s", p)
	}
	h.apply(t, p, d)
	if !slices.Equal(h.facts.State.Tunnel.FouPorts, want) {
		t.Fatalf("after the repair dsr-agent no longer owns the port: %v", h.facts.State.Tunnel.FouPorts)
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
	if len(h.facts.State.Tunnel.FouPorts) != 0 {
		t.Fatalf("a vanished, no longer wanted port is still owned: %v", h.facts.State.Tunnel.FouPorts)
	}
}
