package agent

import (
	"errors"
	"os"
	"path/filepath"
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

// A table that already holds someone else's routes is refused before any
// change (issue 17.2): exit 2 means the host is as it was, the VIPs not
// added, the sysctls not set, on a clean host and on one already serving
// (whose VIPs stay). The daemon's Load (start, reload) refuses it too. A
// gateway off the LB-facing segment, or the host's own address, is a host
// mismatch, equally refused before any change.
func TestReturnViaRefusesForeignTableAndOffLinkGateway(t *testing.T) {
	th := newTestHost(t)
	th.ns.Exec(t, "ip", "route", "add", "203.0.113.0/24", "via", "198.51.100.1", "table", "9000")
	foreignCfg := loopbackCfg + "return_via: {gateway: 198.51.100.252, table: 9000, ports: [{port: 443}]}\n"
	th.requireRefused(foreignCfg, "return_via.table")
	if got := th.ns.Exec(t, "ip", "route", "show", "table", "9000"); strings.TrimSpace(got) != "203.0.113.0/24 via 198.51.100.1 dev eth0.100" {
		t.Errorf("the foreign table changed: %s", got)
	}
	th.requireNoVIPs()
	if _, err := th.host.Status(mustConfig(t, foreignCfg)); err == nil || !strings.Contains(err.Error(), "return_via.table") {
		t.Errorf("status with a foreign table: %v", err)
	}
	if _, err := th.host.Plan(mustConfig(t, foreignCfg)); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("apply --dry-run with a foreign table: %v", err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(foreignCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := th.host.Load(path, ""); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "return_via.table") {
		t.Errorf("Load (the daemon's start and reload) with a foreign table: %v", err)
	}

	// The case: the default table 8558 taken by someone else, on a
	// host already serving its VIPs.
	th.apply(loopbackCfg)
	th.ns.Exec(t, "ip", "route", "add", "10.60.0.0/24", "via", "198.51.100.1", "table", "8558")
	th.requireRefused("mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: 192.0.2.12}]\nreturn_via: {gateway: 198.51.100.252}\n", "return_via.table")
	th.requireInSync(loopbackCfg)

	for _, tc := range []struct{ gw, want string }{
		{"198.51.100.21", "not this host's own"},
		{"10.1.1.1", `return_via.gateway: "10.1.1.1"`},
	} {
		fresh := newTestHost(t)
		fresh.requireRefused(loopbackCfg+"return_via: {gateway: "+tc.gw+", ports: [{port: 443}]}\n", tc.want)
		if _, err := fresh.host.Apply(mustConfig(t, loopbackCfg+"return_via: {gateway: "+tc.gw+", ports: [{port: 443}]}\n")); !errors.Is(err, ErrHostMismatch) {
			t.Errorf("gateway %s: %v, want a host mismatch", tc.gw, err)
		}
	}
}

// The daemon's repair pass (Converge) is not apply: a foreign route that
// appears in the table of a running config stops only the policy routing.
// The VIPs and their suppression are still repaired, and the pass fails
// naming return_via.table (health reports it) without touching the route.
func TestReturnViaForeignRouteBlocksOnlyItsSurfaceInTheDaemon(t *testing.T) {
	th := newTestHost(t)
	cfg := mustConfig(t, returnViaCfg)
	th.apply(returnViaCfg)
	th.ns.Exec(t, "ip", "route", "add", "10.60.0.0/24", "via", "198.51.100.1", "table", "8558")
	th.ns.Exec(t, "ip", "addr", "del", "192.0.2.10/32", "dev", "lo")
	th.ns.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=0")
	done, _, err := th.host.Converge(cfg, nil)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "return_via.table") {
		t.Errorf("repair pass with a foreign route: %v, want the return_via.table error", err)
	}
	if !strings.Contains(done.String(), "ip addr add 192.0.2.10/32 dev lo") || !strings.Contains(done.String(), "arp_ignore=1") {
		t.Errorf("the repair pass did not repair the VIP and its suppression:\n%s", done)
	}
	th.requireAddr("lo", "192.0.2.10/32")
	if got := th.ns.Exec(t, "ip", "route", "show", "table", "8558"); !strings.Contains(got, "10.60.0.0/24 via 198.51.100.1") {
		t.Errorf("the foreign route was touched: %s", got)
	}
}
