package agent

import (
	"net/netip"
	"testing"

	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/internal/golden"
	"github.com/dsr-agent/dsr-agent/loopback"
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

// nothingObserved is a host with only its NIC address and default sysctls.
func nothingObserved(d desired) *observed {
	o := &observed{
		addrs:   []loopback.Addr{addr("eth0.100", "198.51.100.21/24", "")},
		state:   &State{SavedSysctls: map[string]string{}},
		sysctls: map[string]string{}, tableDiff: map[firewall.Family]string{}, tablesPresent: map[firewall.Family]bool{},
	}
	for _, s := range d.sysctls {
		o.sysctls[s.Path.Key()] = "0"
	}
	for f := range d.tables {
		o.tableDiff[f] = "table missing"
	}
	return o
}

func TestPlanGolden(t *testing.T) {
	modes := map[string]string{
		"loopback":  "mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: 192.0.2.11}, {address: '2001:db8::10'}]\n",
		"arptables": "mode: arptables\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: 192.0.2.11, real_ip: 198.51.100.22}, {address: '2001:db8::10'}]\n",
		"firewalld": "mode: firewalld\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10, ports: [{port: 80, to_port: 8080}, {port: 53, protocol: udp}]}, {address: '2001:db8::10', ports: [{port: 443}]}]\n",
	}
	for name, y := range modes {
		t.Run(name, func(t *testing.T) {
			cfg := mustConfig(t, y)
			snap := &snapshot{addrs: nothingObserved(desired{}).addrs, state: &State{}}
			d := desiredFor(cfg, snap)
			plan := computePlan(d, nothingObserved(d))
			golden.Assert(t, "plan-"+name+".txt", plan.String())
		})
	}
}

// TestPlanModeSwitchOrder: switching loopback -> arptables removes the VIPs
// from lo first, puts the ARP table in place before the VIPs go on the NIC,
// and restores the sysctls only at the end.
func TestPlanModeSwitchOrder(t *testing.T) {
	cfg := mustConfig(t, "mode: arptables\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n")
	snap := &snapshot{addrs: nothingObserved(desired{}).addrs, state: &State{}}
	d := desiredFor(cfg, snap)
	o := nothingObserved(d)
	o.addrs = append(o.addrs, addr("lo", "192.0.2.10/32", "lo:dsr0"), addr("lo", "127.0.0.1/8", ""))
	o.state = &State{
		SavedSysctls: map[string]string{"net/ipv4/conf/all/arp_ignore": "0", "net/ipv4/conf/all/arp_announce": "0"},
		Addresses:    []OwnedAddr{{Link: "lo", Prefix: "192.0.2.10/32"}},
	}
	o.sysctls["net/ipv4/conf/all/arp_ignore"] = "1"
	o.sysctls["net/ipv4/conf/all/arp_announce"] = "2"
	golden.Assert(t, "plan-switch-loopback-to-arptables.txt", computePlan(d, o).String())
	var kinds []ChangeKind
	for _, c := range computePlan(d, o).Changes {
		kinds = append(kinds, c.Kind)
	}
	want := []ChangeKind{AddrDel, TableReplace, AddrAdd, SysctlRestore, SysctlRestore}
	if len(kinds) != len(want) {
		t.Fatalf("kinds = %v, want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("kinds = %v, want %v", kinds, want)
		}
	}
}

func TestPlanInSyncIsEmpty(t *testing.T) {
	cfg := mustConfig(t, "interfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n")
	snap := &snapshot{state: &State{}}
	d := desiredFor(cfg, snap)
	o := nothingObserved(d)
	for _, s := range d.sysctls {
		o.sysctls[s.Path.Key()] = s.Value()
	}
	o.addrs = append(o.addrs, addr("lo", "192.0.2.10/32", "lo:dsr0"))
	if p := computePlan(d, o); !p.Empty() {
		t.Fatalf("plan not empty:\n%s", p)
	}
}
