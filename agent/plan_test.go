package agent

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/internal/golden"
	"github.com/dsr-agent/dsr-agent/loopback"
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
