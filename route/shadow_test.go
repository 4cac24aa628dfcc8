package route

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/inet"
)

func nlRule(prio, table int, mod func(*netlink.Rule)) netlink.Rule {
	r := netlink.NewRule()
	r.Priority, r.Table = prio, table
	if mod != nil {
		mod(r)
	}
	return *r
}

func cidr(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// The judgment of fib_rule_match and the rule's action for replies from
// 198.51.100.21 tcp port 443, in the cases the kernel test does not build
// (the kernel test checks the same judgment against `ip route get`).
func TestShadowsJudgment(t *testing.T) {
	w := Rule{Priority: 8558, Src: netip.MustParsePrefix("198.51.100.21/32"), IPProto: inet.TCP, SPort: 443, Table: 8558, SuppressPrefixLen: -1}
	whole := Rule{Priority: 8558, Table: 8558, SuppressPrefixLen: -1}
	own := []netip.Addr{netip.MustParseAddr("198.51.100.21")}
	tables := map[int][]netlink.Route{
		100:                 {{Dst: nil}},
		200:                 {{Dst: cidr("10.60.0.0/24")}},
		unix.RT_TABLE_MAIN:  {{Dst: nil}, {Dst: cidr("198.51.100.0/24")}},
		unix.RT_TABLE_LOCAL: {{Dst: cidr("198.51.100.21/32")}},
	}
	routes := func(t int) ([]netlink.Route, error) { return tables[t], nil }
	mark := uint32(0xff)
	for _, tc := range []struct {
		name   string
		want   Rule
		rule   netlink.Rule
		in     bool
		partly string
	}{
		{"the local table", w, nlRule(0, unix.RT_TABLE_LOCAL, func(r *netlink.Rule) { r.Protocol = unix.RTPROT_KERNEL }), false, ""},
		{"lookup 100", w, nlRule(8000, 100, nil), true, ""},
		{"after ours", w, nlRule(8559, 100, nil), false, ""},
		{"our own table", w, nlRule(8000, 8558, nil), false, ""},
		{"a table with specific routes only", w, nlRule(8000, 200, nil), true, "to 10.60.0.0/24"},
		{"to a subnet", w, nlRule(8000, 100, func(r *netlink.Rule) { r.Dst = cidr("203.0.113.0/24") }), true, "to 203.0.113.0/24"},
		{"dport", w, nlRule(8000, 100, func(r *netlink.Rule) { r.Dport = netlink.NewRulePortRange(1024, 2048) }), true, "to client ports 1024-2048"},
		{"uidrange", w, nlRule(8000, 100, func(r *netlink.Rule) { r.UIDRange = netlink.NewRuleUIDRange(1000, 1000) }), true, "of uids 1000-1000"},
		{"fwmark", w, nlRule(8000, 100, func(r *netlink.Rule) { r.Mark = 1 }), false, ""},
		{"fwmark 0/0xff", w, nlRule(8000, 100, func(r *netlink.Rule) { r.Mask = &mark }), true, ""},
		{"oif", w, nlRule(8000, 100, func(r *netlink.Rule) { r.OifName = "eth1" }), false, ""},
		{"iif lo", w, nlRule(8000, 100, func(r *netlink.Rule) { r.IifName = "lo" }), true, ""},
		{"tos", w, nlRule(8000, 100, func(r *netlink.Rule) { r.Tos = 0x10 }), false, ""},
		{"main without suppress", w, nlRule(8000, unix.RT_TABLE_MAIN, nil), true, ""},
		{"main suppress_prefixlength 0", w, nlRule(8000, unix.RT_TABLE_MAIN, func(r *netlink.Rule) { r.SuppressPrefixlen = 0 }), true, "to 198.51.100.0/24"},
		{"goto past ours", w, nlRule(8000, 0, func(r *netlink.Rule) { r.Goto = 9000 }), true, ""},
		{"goto before ours", w, nlRule(8000, 0, func(r *netlink.Rule) { r.Goto = 8100 }), false, ""},
		{"not from another subnet", w, nlRule(8000, 100, func(r *netlink.Rule) { r.Src, r.Invert = cidr("10.50.0.0/24"), true }), true, ""},
		{"not from all", w, nlRule(8000, 100, func(r *netlink.Rule) { r.Invert = true }), false, ""},
		{"the VRF's l3mdev rule", w, nlRule(1000, 0, func(r *netlink.Rule) { r.Protocol = unix.RTPROT_KERNEL }), false, ""},
		{"unreachable", w, nlRule(1000, 0, nil), true, "drops them"},
		{"whole: from an own address", whole, nlRule(8000, 100, func(r *netlink.Rule) { r.Src = cidr("198.51.100.21/32") }), true, ""},
		{"whole: from another subnet", whole, nlRule(8000, 100, func(r *netlink.Rule) { r.Src = cidr("10.50.0.0/24") }), false, ""},
		{"whole: ssh kept direct", whole, nlRule(100, unix.RT_TABLE_MAIN, func(r *netlink.Rule) {
			r.IPProto, r.Sport = unix.IPPROTO_TCP, netlink.NewRulePortRange(22, 22)
		}), false, ""},
	} {
		got, err := shadows([]netlink.Rule{tc.rule}, tc.want, own, routes)
		if err != nil {
			t.Fatal(err)
		}
		if (len(got) > 0) != tc.in {
			t.Errorf("%s (%s): shadows = %v, want in the way: %v", tc.name, ruleText(tc.rule), got, tc.in)
			continue
		}
		if tc.in && !strings.Contains(got[0].Partly, tc.partly) {
			t.Errorf("%s: partly = %q, want %q", tc.name, got[0].Partly, tc.partly)
		}
		if tc.in && tc.partly == "" && got[0].Partly != "" {
			t.Errorf("%s: partly = %q, want every reply", tc.name, got[0].Partly)
		}
	}
}

// The kernel inserts a rule after those of its priority already there: a
// foreign rule of the same priority is in the way only when it comes first.
func TestShadowsOrderWithinPriority(t *testing.T) {
	w := Rule{Priority: 8558, Src: netip.MustParsePrefix("198.51.100.21/32"), IPProto: inet.TCP, SPort: 443, Table: 8558, SuppressPrefixLen: -1}
	ours := *w.netlink()
	foreign := nlRule(8558, 100, nil)
	routes := func(int) ([]netlink.Route, error) { return []netlink.Route{{}}, nil }
	if got, _ := shadows([]netlink.Rule{ours, foreign}, w, nil, routes); len(got) != 0 {
		t.Errorf("a foreign rule after ours: %v", got)
	}
	if got, _ := shadows([]netlink.Rule{foreign, ours}, w, nil, routes); len(got) != 1 {
		t.Errorf("a foreign rule before ours: %v", got)
	}
	if got, _ := shadows([]netlink.Rule{foreign}, w, nil, routes); len(got) != 1 {
		t.Errorf("a foreign rule where ours will go: %v", got)
	}
}
