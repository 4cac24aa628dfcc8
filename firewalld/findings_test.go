package firewalld

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/dsr-agent/dsr-agent/internal/golden"
	"github.com/dsr-agent/dsr-agent/internal/inet"
)

// public is Debian's and RHEL's default zone as firewalld 1.3 reports it.
var public = Zone{Name: "public", Target: "default", Services: []string{"ssh", "dhcpv6-client"}}

var stock = map[string]Service{
	"ssh":           {Name: "ssh", Ports: []PortProto{{"22", "tcp"}}},
	"dhcpv6-client": {Name: "dhcpv6-client", Ports: []PortProto{{"546", "udp"}}, Destination: map[string]string{"ipv6": "fe80::/64"}},
	"dsr-agent":     {Name: "dsr-agent", Ports: []PortProto{{"8558", "tcp"}, {"3333", "tcp"}}},
	"web":           {Name: "web", Includes: []string{"http"}},
	"http":          {Name: "http", Ports: []PortProto{{"80", "tcp"}}},
	"loop-a":        {Name: "loop-a", Includes: []string{"loop-b"}},
	"loop-b":        {Name: "loop-b", Includes: []string{"loop-a"}},
}

func TestZoneAllows(t *testing.T) {
	with := func(f func(z *Zone)) Zone {
		z := public
		z.Services = append([]string(nil), public.Services...)
		f(&z)
		return z
	}
	for _, tc := range []struct {
		name   string
		zone   Zone
		port   uint16
		proto  string
		status Status
		how    string
	}{
		{"default zone closes health", public, 8558, "tcp", Closed, "not in the ports or services of zone public (target default)"},
		{"service opens ssh (control)", public, 22, "tcp", Open, "service ssh"},
		{"protocol matters", public, 22, "udp", Closed, "not in the ports or services of zone public (target default)"},
		{"empty protocol is tcp", public, 22, "", Open, "service ssh"},
		{"dsr-agent service", with(func(z *Zone) { z.Services = append(z.Services, "dsr-agent") }), 3333, "tcp", Open, "service dsr-agent"},
		{"port", with(func(z *Zone) { z.Ports = []PortProto{{"80", "tcp"}} }), 80, "tcp", Open, "port 80/tcp"},
		{"port range", with(func(z *Zone) { z.Ports = []PortProto{{"8000-8600", "tcp"}} }), 8558, "tcp", Open, "port 8000-8600/tcp"},
		{"port range edge", with(func(z *Zone) { z.Ports = []PortProto{{"8000-8557", "tcp"}} }), 8558, "tcp", Closed, "not in the ports or services of zone public (target default)"},
		{"udp port is not tcp", with(func(z *Zone) { z.Ports = []PortProto{{"53", "udp"}} }), 53, "tcp", Closed, "not in the ports or services of zone public (target default)"},
		{"whole protocol", with(func(z *Zone) { z.Protocols = []string{"udp"} }), 53, "udp", Open, "protocol udp"},
		{"included service", with(func(z *Zone) { z.Services = []string{"web"} }), 80, "tcp", Open, "service web (includes http)"},
		{"include loop ends", with(func(z *Zone) { z.Services = []string{"loop-a"} }), 80, "tcp", Closed, "not in the ports or services of zone public (target default)"},
		{"target ACCEPT", Zone{Name: "trusted", Target: "ACCEPT"}, 1, "udp", Open, "zone target ACCEPT"},
		{"target DROP", Zone{Name: "drop", Target: "DROP"}, 80, "tcp", Closed, "not in the ports or services of zone drop (target DROP)"},
		{"rich rules are unknown, not open", with(func(z *Zone) {
			z.RichRules = []string{`rule family="ipv4" port port="80" protocol="tcp" accept`}
		}), 80, "tcp", Unknown, "1 rich rule(s) not evaluated"},
		{"destination-limited service is unknown", public, 546, "udp", Unknown, "service dhcpv6-client opens it only for destination ipv6 fe80::/64"},
		{"unreadable service is unknown", with(func(z *Zone) { z.Services = []string{"gone"} }), 80, "tcp", Unknown, "service gone not readable"},
		{"a port beats an unknown", with(func(z *Zone) {
			z.Services = []string{"gone"}
			z.Ports = []PortProto{{"80", "tcp"}}
		}), 80, "tcp", Open, "port 80/tcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := ZoneAllows(tc.zone, stock, tc.port, tc.proto)
			if v.Status != tc.status || v.How != tc.how {
				t.Errorf("ZoneAllows(%s, %d/%s) = %s %q; want %s %q", tc.zone.Name, tc.port, tc.proto, v.Status, v.How, tc.status, tc.how)
			}
		})
	}
}

func TestRedirectsRule(t *testing.T) {
	for _, tc := range []struct {
		ver, strict string
		accepted    bool
	}{
		{"0.9.3", "", true},
		{"1.3.3", "", true},
		{"2.2.1", "", true},
		{"2.3.0", "no", true},
		{"2.3.0", "yes", false},
		{"2.3.0rc1", "YES", false},
		{"3.0.0", "true", false},
		{"3.0.0", "no", true},
	} {
		maj, min, err := parseVersion(tc.ver)
		if err != nil {
			t.Fatal(err)
		}
		r := redirectsRule(tc.ver, maj, min, tc.strict)
		if r.Accepted != tc.accepted || !strings.Contains(r.Why, tc.ver) {
			t.Errorf("firewalld %s StrictForwardPorts=%q: accepted %v (%s); want %v", tc.ver, tc.strict, r.Accepted, r.Why, tc.accepted)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string][2]int{"1.3.3": {1, 3}, "2.3": {2, 3}, "2.10.0": {2, 10}, "2.3rc1": {2, 3}} {
		maj, min, err := parseVersion(in)
		if err != nil || maj != want[0] || min != want[1] {
			t.Errorf("parseVersion(%q) = %d, %d, %v; want %v", in, maj, min, err, want)
		}
	}
	for _, bad := range []string{"", "1", "x.3", "1.x"} {
		if _, _, err := parseVersion(bad); err == nil {
			t.Errorf("parseVersion(%q): no error", bad)
		}
	}
}

// TestZoneFromDict decodes a reply as firewalld 1.3 sends it (captured from
// the real firewalld of real_test.go with `busctl`-equivalent types): empty
// keys are left out, ports are a(ss).
func TestZoneFromDict(t *testing.T) {
	m := map[string]dbus.Variant{
		"target":    dbus.MakeVariant("default"),
		"services":  dbus.MakeVariant([]string{"ssh", "dsr-agent"}),
		"ports":     dbus.MakeVariant([][]any{{"80", "tcp"}, {"8000-8100", "udp"}}),
		"rules_str": dbus.MakeVariant([]string{`rule port port="1" protocol="tcp" accept`}),
		"forward":   dbus.MakeVariant(true),
	}
	z, err := zoneFromDict("public", m)
	if err != nil {
		t.Fatal(err)
	}
	if z.Target != "default" || len(z.Services) != 2 || len(z.Ports) != 2 || z.Ports[1] != (PortProto{"8000-8100", "udp"}) || len(z.RichRules) != 1 || z.Protocols != nil {
		t.Fatalf("decoded %+v", z)
	}
	// A key of the wrong type is an error, not an empty list.
	m["services"] = dbus.MakeVariant(uint32(7))
	if _, err := zoneFromDict("public", m); err == nil {
		t.Fatal("services of type u: no error")
	}
	m["services"] = dbus.MakeVariant([]string{})
	m["ports"] = dbus.MakeVariant([][]any{{"80"}})
	if _, err := zoneFromDict("public", m); err == nil {
		t.Fatal("a port entry of one field: no error")
	}
	// Missing target means firewalld's default.
	z, err = zoneFromDict("x", map[string]dbus.Variant{})
	if err != nil || z.Target != "default" {
		t.Fatalf("empty dict: %+v %v", z, err)
	}
	s, err := serviceFromDict("dhcpv6-client", map[string]dbus.Variant{
		"ports":       dbus.MakeVariant([][]any{{"546", "udp"}}),
		"destination": dbus.MakeVariant(map[string]string{"ipv6": "fe80::/64"}),
	})
	if err != nil || s.Destination["ipv6"] != "fe80::/64" || len(s.Ports) != 1 {
		t.Fatalf("service: %+v %v", s, err)
	}
}

func TestFindings(t *testing.T) {
	vip := Want{Kind: VIPPort, Iface: "ens32", Addr: "192.0.2.10", Port: 80}
	vipUDP := Want{Kind: VIPPort, Iface: "ens32", Addr: "2001:db8::10", Port: 53, Proto: inet.UDP}
	health := Want{Kind: Health, Iface: "ens32", Addr: "192.0.2.21", Port: 8558}
	healthOdd := Want{Kind: Health, Iface: "ens32", Addr: "192.0.2.21", Port: 9000}
	agent := Want{Kind: AgentCheck, Iface: "ens32", Addr: "192.0.2.21", Port: 3333}
	closed := Admission{Closed, "not in the ports or services of zone public (target default)"}
	open := Admission{Open, "service dsr-agent"}

	cases := []struct {
		name string
		in   Input
	}{
		{"not running: nothing", Input{Running: false, Checked: []Checked{{Want: vip, Zone: "public", Admission: closed}}}},
		{"loopback, default zone closes everything", Input{Running: true, Service: ServiceLoaded, Checked: []Checked{
			{Want: vip, Zone: "public", DefaultZone: true, Admission: closed},
			{Want: vipUDP, Zone: "public", DefaultZone: true, Admission: closed},
			{Want: health, Zone: "public", DefaultZone: true, Admission: closed},
			{Want: agent, Zone: "public", DefaultZone: true, Admission: closed},
		}}},
		{"all open: nothing", Input{Running: true, Checked: []Checked{
			{Want: vip, Zone: "internal", Admission: Admission{Open, "port 80/tcp"}},
			{Want: health, Zone: "internal", Admission: open},
		}}},
		{"health on a port the service lacks: add-port", Input{Running: true, Service: ServiceLoaded, Checked: []Checked{
			{Want: healthOdd, Zone: "dmz", Admission: closed},
		}}},
		{"unknown and errors", Input{Running: true, Checked: []Checked{
			{Want: vip, Zone: "public", Admission: Admission{Unknown, "1 rich rule(s) not evaluated"}},
			{Want: health, Err: errors.New("firewalld org.fedoraproject.FirewallD1.zone.getZoneOfInterface[ens32]: org.fedoraproject.FirewallD1.Exception: NOT_AUTHORIZED")},
		}}},
		{"firewalld mode, strict forward ports", Input{Running: true, Checked: []Checked{{Want: health, Zone: "public", Admission: open}},
			Redirects: &Redirects{Accepted: false, Version: "2.3.1", StrictForwardPorts: "yes", Why: "firewalld 2.3.1 has StrictForwardPorts=yes: it rejects traffic NATed by rules it did not create"},
		}},
		{"firewalld mode, 1.3 accepts", Input{Running: true, Redirects: &Redirects{Accepted: true, Version: "1.3.3", Why: "firewalld 1.3.3 accepts NATed traffic (ct status dnat accept in filter_INPUT)"}}},
		{"service installed while firewalld ran: permanent, then reload", Input{Running: true, Service: ServiceInstalled, Checked: []Checked{
			{Want: health, Zone: "public", Admission: closed},
		}}},
		{"no service installed: add-port", Input{Running: true, Service: ServiceAbsent, Checked: []Checked{
			{Want: health, Zone: "public", Admission: closed},
			{Want: agent, Zone: "public", Admission: closed},
		}}},
		{"firewalld mode, unreadable", Input{Running: true, RedirectsErr: errors.New("firewalld org.freedesktop.DBus.Properties.Get: timeout")}},
	}
	var b strings.Builder
	for _, tc := range cases {
		b.WriteString("== " + tc.name + "\n")
		for _, f := range Findings(tc.in) {
			b.WriteString(f.Severity.String() + " " + f.String() + "\n")
		}
	}
	golden.Assert(t, "findings.golden", b.String())

	// The shape the golden file shows, asserted directly so a bad -update
	// cannot bless it.
	f := Findings(cases[1].in)
	if len(f) != 4 {
		t.Fatalf("default zone: %d findings, want 4", len(f))
	}
	wantFix := [][]string{
		{"firewall-cmd --zone=public --add-port=80/tcp", "firewall-cmd --permanent --zone=public --add-port=80/tcp"},
		{"firewall-cmd --zone=public --add-port=53/udp", "firewall-cmd --permanent --zone=public --add-port=53/udp"},
		{"firewall-cmd --zone=public --add-service=dsr-agent", "firewall-cmd --permanent --zone=public --add-service=dsr-agent"},
		{"firewall-cmd --zone=public --add-service=dsr-agent", "firewall-cmd --permanent --zone=public --add-service=dsr-agent"},
	}
	for i := range f {
		if strings.Join(f[i].Fix, "|") != strings.Join(wantFix[i], "|") || f[i].Severity != Warning {
			t.Errorf("finding %d (%s): fix %q, want %q", i, f[i].Subject, f[i].Fix, wantFix[i])
		}
	}
	if f := Findings(cases[3].in); len(f) != 1 || f[0].Fix[0] != "firewall-cmd --zone=dmz --add-port=9000/tcp" {
		t.Errorf("health on 9000: %v; want --add-port=9000/tcp (the service covers 8558 only)", f)
	}
	if f := Findings(cases[5].in); len(f) != 1 || f[0].Subject != "redirects" || !strings.Contains(f[0].Fix[0], "StrictForwardPorts=no") {
		t.Errorf("strict forward ports: %v", f)
	}
	if f := Findings(cases[7].in); len(f) != 1 || strings.Join(f[0].Fix, "|") != "firewall-cmd --permanent --zone=public --add-service=dsr-agent|firewall-cmd --reload" {
		t.Errorf("service installed, not loaded: %v", f)
	}
	if f := Findings(cases[8].in); len(f) != 2 || f[1].Fix[0] != "firewall-cmd --zone=public --add-port=3333/tcp" {
		t.Errorf("no service: %v", f)
	}
	// An administrator's override of the service (health moved to 9000 in
	// /etc/firewalld/services/dsr-agent.xml): the definition in force
	// decides, not the packaged ports.
	over := &Service{Name: "dsr-agent", Ports: []PortProto{{"9000", "tcp"}, {"3333", "tcp"}}}
	in := Input{Running: true, Service: ServiceLoaded, ServiceDef: over, Checked: []Checked{
		{Want: healthOdd, Zone: "dmz", Admission: closed},
		{Want: health, Zone: "dmz", Admission: closed},
	}}
	if f := Findings(in); len(f) != 2 || f[0].Fix[0] != "firewall-cmd --zone=dmz --add-service=dsr-agent" || f[1].Fix[0] != "firewall-cmd --zone=dmz --add-port=8558/tcp" {
		t.Errorf("overridden service: %v", f)
	}
	if f := Findings(cases[0].in); f != nil {
		t.Errorf("firewalld not running: %v; want nothing", f)
	}
}

// TestServiceXML: the packaged service opens exactly the ports Findings
// fixes with --add-service (a port changed in one place only would print a
// fix that does not fix).
func TestServiceXML(t *testing.T) {
	b, err := os.ReadFile("../packaging/firewalld/dsr-agent.xml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`<port protocol="tcp" port="8558"/>`, `<port protocol="tcp" port="3333"/>`, "<short>dsr-agent</short>"} {
		if !strings.Contains(s, want) {
			t.Errorf("packaging/firewalld/dsr-agent.xml lacks %s", want)
		}
	}
	if n := strings.Count(s, "<port "); n != 2 {
		t.Errorf("dsr-agent.xml has %d ports, want 2", n)
	}
}

func TestIsInvalidService(t *testing.T) {
	if !isInvalidService(fmt.Errorf("x: %w", dbus.Error{Name: "org.fedoraproject.FirewallD1.Exception", Body: []any{"INVALID_SERVICE: dsr-agent"}})) {
		t.Error("INVALID_SERVICE not recognised")
	}
	for _, e := range []error{
		dbus.Error{Name: "org.fedoraproject.FirewallD1.Exception", Body: []any{"INVALID_ZONE: x"}},
		dbus.Error{Name: "org.fedoraproject.FirewallD1.NotAuthorizedException", Body: []any{"INVALID_SERVICE"}},
		errors.New("INVALID_SERVICE"),
	} {
		if isInvalidService(e) {
			t.Errorf("%v taken for INVALID_SERVICE", e)
		}
	}
}

func TestIsNotAuthorized(t *testing.T) {
	refused := dbus.Error{Name: "org.fedoraproject.FirewallD1.NotAuthorizedException", Body: []any{"Not Authorized(uid): org.fedoraproject.FirewallD1.config.info"}}
	wrapped := fmt.Errorf("zone public: %w", fmt.Errorf("firewalld getZoneSettings2(\"public\"): %w", refused))
	if !IsNotAuthorized(wrapped) {
		t.Error("firewalld's NotAuthorizedException, wrapped: not recognised")
	}
	if !IsNotAuthorized(&dbus.Error{Name: "org.freedesktop.DBus.Error.AccessDenied"}) {
		t.Error("the bus's AccessDenied: not recognised")
	}
	// Negative controls: another firewalld error, a plain error.
	if IsNotAuthorized(dbus.Error{Name: "org.fedoraproject.FirewallD1.Exception", Body: []any{"INVALID_ZONE: nope"}}) {
		t.Error("INVALID_ZONE taken for a refusal")
	}
	if IsNotAuthorized(errors.New("NotAuthorizedException")) {
		t.Error("a plain error taken for a refusal")
	}
}

// TestCheckWithoutBus: a host without a system bus (a container, a minimal
// install) has no firewalld and nothing to report; it is not an error.
func TestCheckWithoutBus(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+t.TempDir()+"/no-bus")
	f, err := Check(context.Background(), Request{Wants: []Want{{Kind: Health, Iface: "eth0", Port: 8558}}})
	if err != nil || f != nil {
		t.Fatalf("no bus: %v, %v; want nothing", f, err)
	}
	// Negative control: a malformed address is an error, not "no bus".
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "bogus")
	if _, err := Check(context.Background(), Request{}); err == nil {
		t.Fatal("malformed bus address: no error")
	}
}

func TestFindingJSON(t *testing.T) {
	b, err := json.Marshal(Finding{Warning, "redirects", "m", nil})
	if err != nil || string(b) != `{"severity":"warning","subject":"redirects","message":"m"}` {
		t.Fatalf("%s %v", b, err)
	}
}
