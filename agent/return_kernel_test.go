package agent

import (
	"errors"
	"strings"
	"testing"
)

const returnViaCfg = loopbackCfg + "return_via: {gateway: 198.51.100.252, gateway6: '2001:db8:1::252', ports: [{port: 443}, {port: 53, protocol: udp}]}\n"

// return_via on the real kernel: the rules and the table, in sync after one
// apply; every drift (a rule deleted, the route's gateway changed by hand,
// the table flushed) is a named difference that apply repairs; the kernel
// routes a reply from a listed port via the LB and anything else by the
// main table; remove leaves the policy database as it found it.
func TestReturnViaKernel(t *testing.T) {
	th := newTestHost(t)
	th.ns.Exec(t, "ip", "rule", "add", "priority", "100", "from", "198.51.100.21", "ipproto", "tcp", "sport", "22", "lookup", "main")
	th.ns.Exec(t, "ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.1", "table", "9000")
	rulesBefore := th.ns.Exec(t, "ip", "rule", "show") + th.ns.Exec(t, "ip", "-6", "rule", "show")
	foreign := th.foreign()

	p := th.apply(returnViaCfg)
	for _, want := range []string{
		"ip route replace default via 198.51.100.252 dev eth0.100 table 8558 proto 213",
		"ip -6 route replace default via 2001:db8:1::252 dev eth0.100 table 8558 proto 213",
		"ip rule add priority 8558 from 198.51.100.21 ipproto tcp sport 443 lookup 8558 proto 213",
		"ip rule add priority 8558 from 198.51.100.21 ipproto udp sport 53 lookup 8558 proto 213",
		"ip -6 rule add priority 8558 from 2001:db8:1::21 ipproto tcp sport 443 lookup 8558 proto 213",
	} {
		if !strings.Contains(p.String(), want) {
			t.Errorf("apply output lacks %q:\n%s", want, p)
		}
	}
	th.requireInSync(returnViaCfg)

	route := func(args ...string) string {
		return th.ns.Exec(t, "ip", append([]string{"route", "get"}, args...)...)
	}
	if got := route("203.0.113.9", "from", "198.51.100.21", "ipproto", "tcp", "sport", "443"); !strings.Contains(got, "via 198.51.100.252") {
		t.Errorf("a reply from 443 does not go via the LB: %s", got)
	}
	if got := route("203.0.113.9", "from", "198.51.100.21", "ipproto", "tcp", "sport", "40000", "dport", "443"); !strings.Contains(got, "via 198.51.100.1 ") {
		t.Errorf("a connection the host opens to port 443 goes via the LB: %s", got)
	}
	if got := route("203.0.113.9", "from", "192.0.2.10", "ipproto", "tcp", "sport", "443"); !strings.Contains(got, "via 198.51.100.1 ") {
		t.Errorf("a DSR reply from the VIP goes via the L7 LB: %s", got)
	}
	// A UDP service bound to the wildcard looks its reply route up with no
	// source address: that lookup goes via the LB too, a VIP-bound one not.
	if got := route("203.0.113.9", "ipproto", "udp", "sport", "53"); !strings.Contains(got, "via 198.51.100.252") {
		t.Errorf("a wildcard-bound UDP reply from 53 does not go via the LB: %s", got)
	}
	if got := route("203.0.113.9", "from", "192.0.2.10", "ipproto", "udp", "sport", "53"); !strings.Contains(got, "via 198.51.100.1 ") {
		t.Errorf("a UDP reply from the VIP goes via the L7 LB: %s", got)
	}

	th.requireDrift(returnViaCfg, "rule-missing", "ip", "rule", "del", "priority", "8558", "from", "198.51.100.21", "ipproto", "tcp", "sport", "443", "lookup", "8558")
	th.requireDrift(returnViaCfg, "route-wrong", "ip", "route", "replace", "default", "via", "198.51.100.77", "dev", "eth0.100", "table", "8558", "proto", "213")
	th.requireDrift(returnViaCfg, "route-missing", "ip", "-6", "route", "flush", "table", "8558")
	th.requireDrift(returnViaCfg, "rule-unexpected", "ip", "rule", "add", "priority", "8558", "from", "198.51.100.21", "ipproto", "tcp", "sport", "8443", "lookup", "8558", "proto", "213")

	// The whole default route, as the seed does: everything but the main
	// table's specific routes goes via the LB.
	whole := loopbackCfg + "return_via: {gateway: 198.51.100.252}\n"
	th.apply(whole)
	th.requireInSync(whole)
	if got := route("203.0.113.9", "from", "198.51.100.21"); !strings.Contains(got, "via 198.51.100.252") {
		t.Errorf("whole default route: not via the LB: %s", got)
	}
	if got := route("198.51.100.50"); strings.Contains(got, "via") {
		t.Errorf("whole default route: the LB's own segment is routed via a gateway: %s", got)
	}
	if strings.Contains(th.ns.Exec(t, "ip", "-6", "rule", "show"), "8558") {
		t.Error("IPv6 rules left after gateway6 was dropped from the config")
	}

	p, err := th.host.Remove()
	if err != nil {
		t.Fatal(err)
	}
	// The whole-default-route pair leaves in reverse lookup order: never
	// `lookup 8558` alone, which would send on-link traffic to the LB.
	if i, j := strings.Index(p.String(), "rule del priority 8558 from all"), strings.Index(p.String(), "rule del priority 8557"); i < 0 || j < 0 || i > j {
		t.Errorf("remove deletes the whole-default-route rules in the wrong order:\n%s", p)
	}
	if got := th.ns.Exec(t, "ip", "rule", "show") + th.ns.Exec(t, "ip", "-6", "rule", "show"); got != rulesBefore {
		t.Errorf("rules after remove:\n%s\nwant:\n%s", got, rulesBefore)
	}
	if got := th.ns.Exec(t, "ip", "route", "show", "table", "8558"); got != "" {
		t.Errorf("table 8558 after remove: %s", got)
	}
	if got := th.foreign(); got != foreign {
		t.Errorf("foreign state changed:\n%s\nwant:\n%s", got, foreign)
	}
	if !strings.Contains(th.ns.Exec(t, "ip", "route", "show", "table", "9000"), "203.0.113.0/24") {
		t.Error("a foreign table lost its route")
	}
}

// A table that already holds someone else's routes is refused, naming the
// field, and its routes are left alone -- but only the policy routing
// stands still: the VIPs and their suppression are still kept (the daemon
// must repair a deleted VIP whatever the state of the policy routing). A
// gateway off the LB-facing segment, or the host's own address, is a host
// mismatch.
func TestReturnViaRefusesForeignTableAndOffLinkGateway(t *testing.T) {
	th := newTestHost(t)
	th.ns.Exec(t, "ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.1", "table", "9000")
	rulesBefore := th.ns.Exec(t, "ip", "rule", "show")
	cfg := mustConfig(t, loopbackCfg+"return_via: {gateway: 198.51.100.252, table: 9000, ports: [{port: 443}]}\n")
	if _, err := th.host.Apply(cfg); err == nil || !strings.Contains(err.Error(), "return_via.table") || !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("apply into a foreign table: %v", err)
	}
	if got := th.ns.Exec(t, "ip", "route", "show", "table", "9000"); strings.TrimSpace(got) != "203.0.113.0/24 via 198.51.100.1 dev eth0.100" {
		t.Errorf("the foreign table changed: %s", got)
	}
	if got := th.ns.Exec(t, "ip", "rule", "show"); got != rulesBefore {
		t.Errorf("rules changed for a foreign table:\n%s", got)
	}
	th.requireAddr("lo", "192.0.2.10/32")
	if _, err := th.host.Status(cfg); err == nil || !strings.Contains(err.Error(), "return_via.table") {
		t.Errorf("status with a foreign table: %v", err)
	}
	cfg = mustConfig(t, loopbackCfg+"return_via: {gateway: 198.51.100.21, ports: [{port: 443}]}\n")
	if _, err := th.host.Apply(cfg); err == nil || !errors.Is(err, ErrHostMismatch) || !strings.Contains(err.Error(), "not this host's own") {
		t.Fatalf("the host's own address as gateway: %v", err)
	}
	cfg = mustConfig(t, loopbackCfg+"return_via: {gateway: 10.1.1.1, ports: [{port: 443}]}\n")
	if _, err := th.host.Apply(cfg); err == nil || !errors.Is(err, ErrHostMismatch) || !strings.Contains(err.Error(), "return_via.gateway") || !strings.Contains(err.Error(), `"10.1.1.1"`) {
		t.Fatalf("off-link gateway: %v", err)
	}
}
