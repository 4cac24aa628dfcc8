package firewall

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/golden"
	"github.com/dsr-agent/dsr-agent/internal/inet"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

func arpSpec() *ARPTable {
	return &ARPTable{Entries: []ARPEntry{
		{VIP: netip.MustParseAddr("192.0.2.11"), Real: netip.MustParseAddr("198.51.100.21")},
		{VIP: netip.MustParseAddr("192.0.2.10"), Real: netip.MustParseAddr("198.51.100.21")},
	}}
}

func nat4Spec() *NATTable {
	return &NATTable{Redirects: []Redirect{
		{VIP: netip.MustParseAddr("192.0.2.10"), Proto: inet.TCP, Port: 80, ToPort: 8080},
		{VIP: netip.MustParseAddr("192.0.2.10"), Proto: inet.UDP, Port: 53, ToPort: 5353},
	}}
}

func nat6Spec() *NATTable {
	return &NATTable{IPv6: true, Redirects: []Redirect{
		{VIP: netip.MustParseAddr("2001:db8::10"), Proto: inet.TCP, Port: 443, ToPort: 8443},
	}}
}

// arpGuardSpec is firewalld mode's ARP table (VIPs unsorted, one twice).
func arpGuardSpec() *ARPGuard {
	return &ARPGuard{VIPs: []netip.Addr{netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")}}
}

// nat6GuardSpec is firewalld mode's ip6 table with the Neighbour
// Solicitation guard: two VIPs, one with two ports.
func nat6GuardSpec() *NATTable {
	return &NATTable{IPv6: true, DropNS: true, Redirects: []Redirect{
		{VIP: netip.MustParseAddr("2001:db8::11"), Proto: inet.TCP, Port: 443, ToPort: 8443},
		{VIP: netip.MustParseAddr("2001:db8::10"), Proto: inet.TCP, Port: 443, ToPort: 8443},
		{VIP: netip.MustParseAddr("2001:db8::10"), Proto: inet.UDP, Port: 53, ToPort: 5353},
	}}
}

// nsGuardSpec is the standalone Neighbour Solicitation guard (loopback and
// arptables modes' IPv6 VIPs on lo).
func nsGuardSpec() *NSGuard {
	return &NSGuard{VIPs: []netip.Addr{netip.MustParseAddr("2001:db8::11"), netip.MustParseAddr("2001:db8::10")}}
}

// mss6GuardSpec is tunnel mode's ip6 table with the guard.
func mss6GuardSpec() *MSSTable {
	m := mss6Spec()
	m.DropNS = true
	return m
}

// goldenName is the testdata name of a spec's table.
func goldenName(s Spec) string {
	switch s := s.(type) {
	case *ARPTable:
		if len(s.Prefixes) > 0 {
			return "arpprefix"
		}
		return "arp"
	case *ARPGuard:
		if len(s.Prefixes) > 0 {
			return "arpguardprefix"
		}
		return "arpguard"
	case *NSGuard:
		return "nsguard"
	case *MSSTable:
		switch {
		case s.IPv6 && s.DropNS && len(s.Prefixes) > 0:
			return "mss6guardprefix"
		case len(s.Prefixes) > 0:
			return "mss4prefix"
		case s.IPv6 && s.DropNS:
			return "mss6guard"
		case s.IPv6:
			return "mss6"
		}
		return "mss4"
	case *NATTable:
		switch {
		case s.IPv6 && s.DropNS && len(s.Prefixes) > 0:
			return "nat6guardprefix"
		case s.IPv6 && s.DropNS:
			return "nat6guard"
		case s.IPv6:
			return "nat6"
		}
		if len(s.Prefixes) > 0 {
			return "nat4prefix"
		}
		return "nat4"
	}
	return "unknown"
}

func TestRenderGolden(t *testing.T) {
	golden.Assert(t, "arp.render.nft", RenderReplace(arpSpec()))
	golden.Assert(t, "nat4.render.nft", RenderReplace(nat4Spec()))
	golden.Assert(t, "nat6.render.nft", RenderReplace(nat6Spec()))
	golden.Assert(t, "arpguard.render.nft", RenderReplace(arpGuardSpec()))
	golden.Assert(t, "nat6guard.render.nft", RenderReplace(nat6GuardSpec()))
	golden.Assert(t, "nsguard.render.nft", RenderReplace(nsGuardSpec()))
	golden.Assert(t, "mss6guard.render.nft", RenderReplace(mss6GuardSpec()))
	// The guard is IPv6's only: IPv4 tables ignore DropNS.
	v4 := nat4Spec()
	v4.DropNS = true
	if RenderReplace(v4) != RenderReplace(nat4Spec()) {
		t.Error("DropNS changed the IPv4 nat table")
	}
	m4 := mss4Spec()
	m4.DropNS = true
	if RenderReplace(m4) != RenderReplace(mss4Spec()) {
		t.Error("DropNS changed the IPv4 MSS table")
	}
}

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// listTable is the kernel's own rendering, counters zeroed.
func listTable(t *testing.T, ns *netnstest.NS, f Family) string {
	out := ns.Exec(t, "nft", "list", "table", FamilyName(f), TableName)
	return counterRE.ReplaceAllString(out, "counter packets 0 bytes 0")
}

// TestReplaceMatchesKernel builds each table in a fresh namespace and checks
// the kernel's view (nft list) against testdata, that the rendered script is
// accepted by nft itself, and that the table compares equal to its spec.
func TestReplaceMatchesKernel(t *testing.T) {
	for _, spec := range []Spec{arpSpec(), nat4Spec(), nat6Spec(), arpGuardSpec(), nat6GuardSpec(), nsGuardSpec(), mss6GuardSpec()} {
		name := goldenName(spec)
		t.Run(name, func(t *testing.T) { replaceRoundTrip(t, name, spec) })
	}
}

// replaceRoundTrip builds spec in a fresh namespace: Diff sees it missing,
// the kernel's listing after Replace (twice: still one table) and after
// nft -f of the rendered plan is the golden name.kernel.nft, and Diff is in
// sync after each. It returns the namespace's manager.
func replaceRoundTrip(t *testing.T, name string, spec Spec) *Manager {
	t.Helper()
	ns := netnstest.New(t)
	m := &Manager{Conn: ns.NFT(t)}
	inSync := func(when string) {
		t.Helper()
		if d, err := m.Diff(spec); err != nil || d != "" {
			t.Fatalf("Diff after %s = %q, %v; want in sync", when, d, err)
		}
	}
	if d, err := m.Diff(spec); err != nil || d != TableMissing {
		t.Fatalf("Diff before Replace = %q, %v; want table missing", d, err)
	}
	for _, when := range []string{"Replace", "a second Replace"} {
		if err := m.Replace(spec); err != nil {
			t.Fatal(err)
		}
		golden.Assert(t, name+".kernel.nft", listTable(t, ns, spec.Family()))
		inSync(when)
	}
	// The rendered plan is valid nft input, and what nft builds from it is
	// what Replace builds.
	nftScript(t, ns, strings.TrimSuffix(strings.TrimPrefix(RenderReplace(spec), "nft -f - <<'EOF'\n"), "EOF\n"))
	golden.Assert(t, name+".kernel.nft", listTable(t, ns, spec.Family()))
	inSync("nft -f of the rendered plan")
	return m
}

func TestDiffDetectsHandEdits(t *testing.T) {
	edits := map[string][]string{
		"element added":   {"add", "element", "arp", TableName, "vips", "{ 192.0.2.99 }"},
		"element deleted": {"delete", "element", "arp", TableName, "vips", "{ 192.0.2.10 }"},
		"map value":       {"add", "element", "arp", TableName, "vip2real", "{ 192.0.2.99 : 198.51.100.1 }"},
		"chain flushed":   {"flush", "chain", "arp", TableName, "input"},
		"rule added":      {"add", "rule", "arp", TableName, "input", "counter", "accept"},
		"chain added":     {"add", "chain", "arp", TableName, "extra"},
		"table flushed":   {"flush", "table", "arp", TableName},
		"table deleted":   {"delete", "table", "arp", TableName},
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			ns := netnstest.New(t)
			m := &Manager{Conn: ns.NFT(t)}
			spec := arpSpec()
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			ns.Exec(t, "nft", edit...)
			d, err := m.Diff(spec)
			if err != nil {
				t.Fatal(err)
			}
			if d == "" {
				t.Fatalf("hand edit %v not detected", edit)
			}
			t.Logf("%s: %s", name, d)
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			if d, _ := m.Diff(spec); d != "" {
				t.Fatalf("after repair Diff = %q", d)
			}
		})
	}
}

// TestForeignTablesUntouched: other tables, including one in the same family
// and a firewalld-like inet table, survive Replace and Delete unchanged.
func TestForeignTablesUntouched(t *testing.T) {
	ns := netnstest.New(t)
	ns.Exec(t, "nft", "add table inet firewalld; add chain inet firewalld filter_INPUT { type filter hook input priority filter + 10; policy accept; }; add rule inet firewalld filter_INPUT tcp dport 22 accept")
	ns.Exec(t, "nft", "add table ip filter; add chain ip filter input { type filter hook input priority 0; }; add rule ip filter input ip saddr 203.0.113.0/24 drop")
	ns.Exec(t, "nft", "add table arp other; add chain arp other input { type filter hook input priority 0; }")
	before := ns.Exec(t, "nft", "list", "ruleset")
	m := &Manager{Conn: ns.NFT(t)}
	for _, s := range []Spec{arpSpec(), nat4Spec(), nat6Spec()} {
		if err := m.Replace(s); err != nil {
			t.Fatal(err)
		}
	}
	present, err := m.Present()
	if err != nil {
		t.Fatal(err)
	}
	if len(present) != 3 {
		t.Fatalf("Present = %v, want arp, ip, ip6", present)
	}
	for _, f := range Families {
		if err := m.Delete(f); err != nil {
			t.Fatal(err)
		}
		if err := m.Delete(f); err != nil { // idempotent
			t.Fatal(err)
		}
	}
	after := ns.Exec(t, "nft", "list", "ruleset")
	if before != after {
		t.Fatalf("foreign tables changed\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// TestNSGuardManyVIPs: one rule per IPv6 VIP in ns_vips, so a large list is
// a large batch; it must go through in one transaction and compare equal.
func TestNSGuardManyVIPs(t *testing.T) {
	ns := netnstest.New(t)
	conn, err := Dial(int(ns.Handle)) // as dsr-agent opens it: a send buffer for large batches
	if err != nil {
		t.Fatal(err)
	}
	m := &Manager{Conn: conn}
	spec := nat6Many(5000, true)
	if err := m.Replace(spec); err != nil {
		t.Fatal(err)
	}
	if d, err := m.Diff(spec); err != nil || d != "" {
		t.Fatalf("Diff = %q, %v; want in sync", d, err)
	}
	if n := strings.Count(ns.Exec(t, "nft", "list", "chain", "ip6", TableName, nsChainName), "drop"); n != 5000 {
		t.Fatalf("ns_vips has %d rules, want 5000", n)
	}
}
