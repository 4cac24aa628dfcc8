package agent

import (
	"errors"
	"strings"
	"testing"
)

const shadowCfg = loopbackCfg + "return_via: {gateway: 198.51.100.252, ports: [{port: 443}]}\n"

// routeGet is the kernel's own routing decision for a reply from the
// host's address and port 443 to an off-link client.
func (th *testHost) routeGet() string {
	// An unreachable rule makes the lookup fail: that is its answer.
	out, err := th.ns.ExecErr("ip", "route", "get", "203.0.113.9", "from", "198.51.100.21", "ipproto", "tcp", "sport", "443")
	if err != nil {
		return out + err.Error()
	}
	return out
}

// A foreign policy rule that takes return_via's replies before dsr-agent's
// rule (issue 17.1, "a foreign route or rule in the way") is refused before
// the first change, and the refusal agrees with the kernel: with
// dsr-agent's rule put in by hand, `ip route get` answers from the foreign
// table. A rule after ours, or one whose selectors cannot match our
// replies (a multi-homing `from 10.50.0.0/24 lookup 100`), is not refused,
// and the kernel then routes the reply via the LB.
func TestReturnViaForeignRuleInTheWay(t *testing.T) {
	th := newTestHost(t)
	th.ns.Exec(t, "ip", "route", "add", "default", "via", "198.51.100.3", "dev", "eth0.100", "table", "100")
	for _, tc := range []struct {
		rule []string
		in   bool
	}{
		{[]string{"priority", "8558", "from", "all", "lookup", "100"}, true},
		{[]string{"priority", "8557", "from", "all", "lookup", "100"}, true},
		{[]string{"priority", "1000", "from", "198.51.100.0/24", "ipproto", "tcp", "lookup", "100"}, true},
		{[]string{"priority", "1000", "from", "all", "sport", "400-500", "lookup", "100"}, true},
		{[]string{"priority", "1000", "from", "all", "unreachable"}, true},
		{[]string{"priority", "8559", "from", "all", "lookup", "100"}, false},
		{[]string{"priority", "1000", "from", "10.50.0.0/24", "lookup", "100"}, false},
		{[]string{"priority", "1000", "from", "all", "ipproto", "udp", "lookup", "100"}, false},
		{[]string{"priority", "1000", "from", "all", "sport", "8000", "lookup", "100"}, false},
		{[]string{"priority", "1000", "from", "all", "iif", "eth0.100", "lookup", "100"}, false},
		{[]string{"priority", "1000", "from", "all", "lookup", "101"}, false}, // an empty table: falls through
	} {
		name := strings.Join(tc.rule, " ")
		// The kernel's verdict with dsr-agent's rules in place (the
		// route first: an unreachable rule fails the gateway's check).
		th.ns.Exec(t, "ip", "route", "replace", "default", "via", "198.51.100.252", "dev", "eth0.100", "table", "8558", "proto", "213")
		th.ns.Exec(t, "ip", append([]string{"rule", "add"}, tc.rule...)...)
		th.ns.Exec(t, "ip", "rule", "add", "priority", "8558", "from", "198.51.100.21", "ipproto", "tcp", "sport", "443", "lookup", "8558", "proto", "213")
		got := th.routeGet()
		if kernelIn := !strings.Contains(got, "via 198.51.100.252"); kernelIn != tc.in {
			t.Fatalf("%s: the kernel routes the reply %q: the test's expectation is wrong", name, got)
		}
		if tc.in {
			st := th.status(shadowCfg)
			if !hasDiffWith(st, "rule-shadowed", "return_via: ip rule \""+name) {
				t.Errorf("%s after our rules: status lacks rule-shadowed:\n%s", name, st)
			}
		}
		th.ns.Exec(t, "ip", "rule", "del", "priority", "8558", "from", "198.51.100.21", "ipproto", "tcp", "sport", "443", "lookup", "8558")
		th.ns.Exec(t, "ip", "route", "flush", "table", "8558")

		if tc.in {
			th.requireRefused(shadowCfg, "return_via")
			if _, err := th.host.Apply(mustConfig(t, shadowCfg)); err == nil || !strings.Contains(err.Error(), "ip rule") {
				t.Errorf("%s: the refusal does not name the foreign rule: %v", name, err)
			}
		} else {
			th.apply(shadowCfg)
			th.requireInSync(shadowCfg)
			if got := th.routeGet(); !strings.Contains(got, "via 198.51.100.252") {
				t.Errorf("%s: applied, but the reply does not go via the LB: %s", name, got)
			}
			if _, err := th.host.Remove(); err != nil {
				t.Fatal(err)
			}
		}
		th.ns.Exec(t, "ip", append([]string{"rule", "del"}, tc.rule...)...)
	}

	// The whole default route: a rule before its pair that takes
	// everything is refused; the multi-homing rule is not.
	whole := loopbackCfg + "return_via: {gateway: 198.51.100.252}\n"
	th.ns.Exec(t, "ip", "rule", "add", "priority", "8557", "from", "all", "lookup", "100")
	th.requireRefused(whole, "priority 8557 from all lookup 100")
	th.ns.Exec(t, "ip", "rule", "del", "priority", "8557", "from", "all", "lookup", "100")
	th.ns.Exec(t, "ip", "rule", "add", "priority", "1000", "from", "10.50.0.0/24", "lookup", "100")
	th.apply(whole)
	th.requireInSync(whole)
	if got := th.routeGet(); !strings.Contains(got, "via 198.51.100.252") {
		t.Errorf("whole default route: not via the LB: %s", got)
	}
}

func hasDiffWith(r *Report, kind DriftKind, detail string) bool {
	for _, d := range r.Differences {
		if d.Kind == kind && strings.Contains(d.Subject+" "+d.Detail, detail) {
			return true
		}
	}
	return false
}

// A foreign rule that appears in front of an applied return_via is a status
// difference (rule-shadowed), never touched; the daemon's repair pass still
// repairs the VIPs and fails naming the rule.
func TestReturnViaRuleShadowedLater(t *testing.T) {
	th := newTestHost(t)
	cfg := mustConfig(t, shadowCfg)
	th.apply(shadowCfg)
	th.ns.Exec(t, "ip", "route", "add", "default", "via", "198.51.100.3", "dev", "eth0.100", "table", "100")
	// Of our priority but after our rules: the kernel never reaches it.
	th.ns.Exec(t, "ip", "rule", "add", "priority", "8558", "from", "all", "lookup", "100")
	if got := th.routeGet(); !strings.Contains(got, "via 198.51.100.252") {
		t.Fatalf("a rule after ours takes the reply: %s", got)
	}
	th.requireInSync(shadowCfg)
	th.ns.Exec(t, "ip", "rule", "add", "priority", "8000", "from", "all", "lookup", "100")
	if got := th.routeGet(); !strings.Contains(got, "via 198.51.100.3") {
		t.Fatalf("the foreign rule does not take the reply: %s", got)
	}
	st := th.status(shadowCfg)
	if st.InSync || !hasDiffWith(st, "rule-shadowed", "priority 8000 from all lookup 100") {
		t.Errorf("status with a foreign rule in front of ours:\n%s", st)
	}
	th.ns.Exec(t, "ip", "addr", "del", "192.0.2.10/32", "dev", "lo")
	done, _, err := th.host.Converge(cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "priority 8000 from all lookup 100") {
		t.Errorf("repair pass with a foreign rule in the way: %v", err)
	}
	if errors.Is(err, ErrInvalidConfig) {
		t.Errorf("a repair pass that changed the host says exit 2: %v", err)
	}
	if !strings.Contains(done.String(), "ip addr add 192.0.2.10/32 dev lo") {
		t.Errorf("the repair pass did not repair the VIP:\n%s", done)
	}
	th.requireAddr("lo", "192.0.2.10/32")
	if !strings.Contains(th.ns.Exec(t, "ip", "rule", "show"), "8000:\tfrom all lookup 100") {
		t.Errorf("the foreign rule was touched:\n%s", th.ns.Exec(t, "ip", "rule", "show"))
	}
}
