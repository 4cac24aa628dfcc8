package firewall

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/golden"
	"github.com/dsr-agent/dsr-agent/internal/inet"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// arpPrefixSpec is arptables mode with prefix VIPs (AnyIP) beside the host
// VIPs: two adjacent prefixes (an interval's end and the next one's start
// share a key) and a third apart.
func arpPrefixSpec() *ARPTable {
	a := arpSpec()
	a.Prefixes = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("192.0.2.192/26"), netip.MustParsePrefix("192.0.2.128/26")}
	a.PrefixReal = netip.MustParseAddr("198.51.100.21")
	return a
}

// Issue 21: the arp table's interval set of prefixes: rendered (golden),
// built by Replace and by nft from the rendering alike (the kernel's
// listing is the golden), in sync with its spec, and every hand edit of the
// prefix set or its rules seen as drift and repaired. The rule count does
// not grow with the prefixes.
func TestARPTablePrefixes(t *testing.T) {
	spec := arpPrefixSpec()
	golden.Assert(t, "arpprefix.render.nft", RenderReplace(spec))
	replaceRoundTrip(t, "arpprefix", spec)

	few, many := arpPrefixSpec(), arpPrefixSpec()
	few.Prefixes = few.Prefixes[:1]
	for i := range 200 {
		many.Prefixes = append(many.Prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24))
	}
	if a, b := len(few.expected().chains[0].rules), len(many.expected().chains[0].rules); a != 2 || b != 2 {
		t.Errorf("input rules: %d with one prefix, %d with 203; want 2 each", a, b)
	}

	for name, edit := range map[string][]string{
		"prefix deleted":  {"delete", "element", "arp", TableName, "vip_prefixes", "{ 192.0.2.128/26 }"},
		"prefix added":    {"add", "element", "arp", TableName, "vip_prefixes", "{ 10.0.0.0/24 }"},
		"input flushed":   {"flush", "chain", "arp", TableName, "input"},
		"prefix narrowed": {"delete", "element", "arp", TableName, "vip_prefixes", "{ 203.0.113.0/24 }", ";", "add", "element", "arp", TableName, "vip_prefixes", "{ 203.0.113.0/25 }"},
	} {
		t.Run(name, func(t *testing.T) {
			ns := netnstest.New(t)
			m := &Manager{Conn: ns.NFT(t)}
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			ns.Exec(t, "nft", edit...)
			if d, err := m.Diff(spec); err != nil || d == "" {
				t.Fatalf("hand edit %v not detected (%v)", edit, err)
			} else {
				t.Logf("%s: %s", name, d)
			}
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			if d, _ := m.Diff(spec); d != "" {
				t.Fatalf("after repair Diff = %q", d)
			}
		})
	}
}

// nat4PrefixSpec is firewalld mode's ip table with prefix redirects beside
// the single VIPs': two protocols, one prefix with two ports.
func nat4PrefixSpec() *NATTable {
	n := nat4Spec()
	n.Prefixes = []PrefixRedirect{
		{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Proto: inet.TCP, Port: 443, ToPort: 8443},
		{Prefix: netip.MustParsePrefix("192.0.2.128/25"), Proto: inet.TCP, Port: 80, ToPort: 8080},
		{Prefix: netip.MustParsePrefix("192.0.2.128/25"), Proto: inet.UDP, Port: 53, ToPort: 5353},
	}
	return n
}

func arpGuardPrefixSpec() *ARPGuard {
	g := arpGuardSpec()
	g.Prefixes = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("192.0.2.128/25")}
	return g
}

// Issue 21 in firewalld mode: the nat table's interval concatenation
// (prefix . protocol . port : local port) and the ARP guard's prefix set,
// rendered, built by Replace and by nft from the rendering alike, in sync,
// and a hand edit of either prefix set seen as drift.
func TestFirewalldPrefixTables(t *testing.T) {
	for name, spec := range map[string]Spec{"nat4prefix": nat4PrefixSpec(), "arpguardprefix": arpGuardPrefixSpec()} {
		t.Run(name, func(t *testing.T) {
			golden.Assert(t, name+".render.nft", RenderReplace(spec))
			replaceRoundTrip(t, name, spec)
		})
	}
	for name, edit := range map[string][]string{
		"nat prefix deleted": {"delete", "element", "ip", TableName, "prefix_ports", "{ 192.0.2.128/25 . tcp . 80 }"},
		"nat prefix added":   {"add", "element", "ip", TableName, "prefix_ports", "{ 10.0.0.0/24 . tcp . 80 : 80 }"},
		"guard prefix gone":  {"delete", "element", "arp", TableName, "vip_prefixes", "{ 192.0.2.128/25 }"},
	} {
		t.Run(name, func(t *testing.T) {
			spec := Spec(nat4PrefixSpec())
			if strings.HasPrefix(name, "guard") {
				spec = arpGuardPrefixSpec()
			}
			ns := netnstest.New(t)
			m := &Manager{Conn: ns.NFT(t)}
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			ns.Exec(t, "nft", edit...)
			if d, err := m.Diff(spec); err != nil || d == "" {
				t.Fatalf("hand edit %v not detected (%v)", edit, err)
			} else {
				t.Logf("%s: %s", name, d)
			}
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			if d, _ := m.Diff(spec); d != "" {
				t.Fatalf("after repair Diff = %q", d)
			}
		})
	}
}

// nat6GuardPrefixSpec is firewalld mode's ip6 table with IPv6 prefixes: the
// redirect's interval map and the Neighbour Solicitation guard's rules for
// a /64, a /60 (not a whole number of bytes: masked) and a /48.
func nat6GuardPrefixSpec() *NATTable {
	n := nat6GuardSpec()
	n.Prefixes = []PrefixRedirect{
		{Prefix: netip.MustParsePrefix("2001:db8:100::/64"), Proto: inet.TCP, Port: 443, ToPort: 8443},
		{Prefix: netip.MustParsePrefix("2001:db8:100::/64"), Proto: inet.UDP, Port: 53, ToPort: 53},
		{Prefix: netip.MustParsePrefix("2001:db8:200::/60"), Proto: inet.TCP, Port: 443, ToPort: 8443},
		{Prefix: netip.MustParsePrefix("2001:db9::/48"), Proto: inet.TCP, Port: 80, ToPort: 80},
	}
	return n
}

// IPv6 prefixes in firewalld mode: the ip6 table round trip (Replace and
// nft -f of the rendering list the same, in sync), and a hand edit of the
// NS guard's prefix rules is drift.
func TestNSGuardPrefixes(t *testing.T) {
	spec := nat6GuardPrefixSpec()
	golden.Assert(t, "nat6guardprefix.render.nft", RenderReplace(spec))
	replaceRoundTrip(t, "nat6guardprefix", spec)
}

// The NS guard covers prefixes (issue 21, firewalld mode): proxy NDP
// answers for addresses of a /64 and a /60 it has entries for (the negative
// control), and for none of them with the ip6 table's prefix rules; the
// server's own address is answered throughout (each probe's barrier).
func TestNSGuardPrefixesDropProxyNDP(t *testing.T) {
	l := newProxyLab(t)
	l.exposeAll(t)
	targets := []string{"2001:db8:100::1", "2001:db8:100::ffff:1", "2001:db8:200:f::7", "2001:db8:200::1"}
	for _, a := range targets {
		l.setEntry(t, a, l.eth0, true)
		if got := l.answers(t, a); len(got) == 0 {
			t.Fatalf("negative control: proxy NDP does not answer for %s; the test could not fail", a)
		}
	}
	m := &Manager{Conn: l.srv.NFT(t)}
	if err := m.Replace(&NATTable{IPv6: true, DropNS: true, Prefixes: []PrefixRedirect{
		{Prefix: netip.MustParsePrefix("2001:db8:100::/64"), Proto: inet.TCP, Port: 80, ToPort: 80},
		{Prefix: netip.MustParsePrefix("2001:db8:200::/60"), Proto: inet.TCP, Port: 80, ToPort: 80},
	}}); err != nil {
		t.Fatal(err)
	}
	for _, a := range targets {
		if got := l.answers(t, a); len(got) != 0 {
			t.Errorf("%s answered by %v with the prefix rules in place", a, got)
		}
	}
	// Just outside the /60: still answered (the mask is the prefix's).
	l.setEntry(t, "2001:db8:200:10::1", l.eth0, true)
	if got := l.answers(t, "2001:db8:200:10::1"); len(got) == 0 {
		t.Error("2001:db8:200:10::1, outside 2001:db8:200::/60, is dropped too")
	}
}
