package firewall

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// The rules dsr-agent builds, in nft syntax, so a drift script can re-create
// a chain or set by hand exactly as an operator would and change one thing.
const (
	arpGuardText = "arp htype 1 arp ptype ip arp hlen 6 arp plen 4"
	arpInRule    = arpGuardText + " arp daddr ip @vips counter drop"
	arpOutRule   = arpGuardText + " arp saddr ip @vips counter arp saddr ip set arp saddr ip map @vip2real"
	natTCPRule   = "meta l4proto tcp counter redirect to :ip daddr . meta l4proto . th dport map @vip_ports"
	guardInRule  = arpGuardText + " arp operation request arp daddr ip @vips arp saddr ip != @vips counter drop"
	guardOutRule = arpGuardText + " arp saddr ip @vips counter drop"
	nsJumpRule   = "icmpv6 type nd-neighbor-solicit jump ns_vips"
	natUDPRule   = "meta l4proto udp counter redirect to :ip daddr . meta l4proto . th dport map @vip_ports"
)

// nftScript runs script with `nft -f` inside the namespace: one
// transaction, as an operator's hand edit would be.
func nftScript(t *testing.T, ns *netnstest.NS, script string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "drift.nft")
	if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.Exec(t, "nft", "-f", f)
}

// driftCases are hand edits that leave every rule and element listed while
// changing what the table does (or may do later). want is what Diff must
// name.
var driftCases = []struct {
	name   string
	spec   func() Spec
	script string
	want   []string
}{
	// The table stays listed, rules and all, but its hooks are unregistered:
	// ARP for the VIP is answered.
	{"arp table dormant", func() Spec { return arpSpec() },
		"add table arp dsr-agent { flags dormant; }",
		[]string{"table flags dormant, want none"}},
	{"ip table dormant", func() Spec { return nat4Spec() },
		"add table ip dsr-agent { flags dormant; }",
		[]string{"table flags dormant, want none"}},
	{"ip6 table dormant", func() Spec { return nat6Spec() },
		"add table ip6 dsr-agent { flags dormant; }",
		[]string{"table flags dormant, want none"}},
	// input re-created on the output hook: the drop now filters outgoing
	// ARP and incoming ARP for the VIP is answered.
	{"arp input on hook output", func() Spec { return arpSpec() }, `
flush chain arp dsr-agent input
delete chain arp dsr-agent input
add chain arp dsr-agent input { type filter hook output priority filter; policy accept; }
add rule arp dsr-agent input ` + arpInRule + "\n",
		[]string{"chain input: hook output, want input"}},
	{"arp input priority", func() Spec { return arpSpec() }, `
flush chain arp dsr-agent input
delete chain arp dsr-agent input
add chain arp dsr-agent input { type filter hook input priority 10; policy accept; }
add rule arp dsr-agent input ` + arpInRule + "\n",
		[]string{"chain input: priority 10, want filter"}},
	// policy drop: every ARP is dropped, the host falls off the segment.
	{"arp input policy drop", func() Spec { return arpSpec() },
		"add chain arp dsr-agent input { type filter hook input priority filter; policy drop; }",
		[]string{"chain input: policy drop, want accept"}},
	// A regular chain of the same name, rules intact, is never called.
	{"arp input not a base chain", func() Spec { return arpSpec() }, `
flush chain arp dsr-agent input
delete chain arp dsr-agent input
add chain arp dsr-agent input
add rule arp dsr-agent input ` + arpInRule + "\n",
		[]string{"chain input: regular chain, want type filter hook input"}},
	{"arp set vips interval", func() Spec { return arpSpec() }, `
flush chain arp dsr-agent input
flush chain arp dsr-agent output
delete set arp dsr-agent vips
add set arp dsr-agent vips { type ipv4_addr; flags interval; elements = { 192.0.2.10, 192.0.2.11 }; }
add rule arp dsr-agent input ` + arpInRule + `
add rule arp dsr-agent output ` + arpOutRule + "\n",
		[]string{"set vips: flags interval, want none"}},
	// nft refuses the rewrite rule with a map of another data type, so the
	// rule goes too.
	{"arp map vip2real data type", func() Spec { return arpSpec() }, `
flush chain arp dsr-agent output
delete map arp dsr-agent vip2real
add map arp dsr-agent vip2real { type ipv4_addr : mark; elements = { 192.0.2.10 : 0xc6336415, 192.0.2.11 : 0xc6336415 }; }
`, []string{"map vip2real: data type mark (4 bytes), want ipv4_addr (4 bytes)", "chain output: 0 rules, want 1"}},
	{"arp extra set", func() Spec { return arpSpec() },
		"add set arp dsr-agent extra { type ipv4_addr; }",
		[]string{"unexpected set extra"}},
	{"arp extra chain", func() Spec { return arpSpec() },
		"add chain arp dsr-agent extra { type filter hook input priority -10; policy accept; }",
		[]string{"unexpected chain extra"}},
	{"arp extra rule", func() Spec { return arpSpec() },
		"insert rule arp dsr-agent input counter accept",
		[]string{"chain input: 2 rules, want 1"}},
	{"arp verdict accept", func() Spec { return arpSpec() }, `
flush chain arp dsr-agent input
add rule arp dsr-agent input ` + strings.TrimSuffix(arpInRule, "drop") + "accept\n",
		[]string{"chain input: rule 1: verdict accept, want drop"}},
	// A nat table re-created as filter: its rules cannot redirect any more.
	{"ip prerouting type filter", func() Spec { return nat4Spec() }, `
flush chain ip dsr-agent prerouting
delete chain ip dsr-agent prerouting
add chain ip dsr-agent prerouting { type filter hook prerouting priority dstnat; policy accept; }
`, []string{"chain prerouting: type filter, want nat"}},
	{"ip prerouting on hook output", func() Spec { return nat4Spec() }, `
flush chain ip dsr-agent prerouting
delete chain ip dsr-agent prerouting
add chain ip dsr-agent prerouting { type nat hook output priority -100; policy accept; }
add rule ip dsr-agent prerouting ` + natTCPRule + `
add rule ip dsr-agent prerouting ` + natUDPRule + "\n",
		[]string{"chain prerouting: hook output, want prerouting"}},
	{"ip prerouting policy drop", func() Spec { return nat4Spec() },
		"add chain ip dsr-agent prerouting { type nat hook prerouting priority dstnat; policy drop; }",
		[]string{"chain prerouting: policy drop, want accept"}},
	// firewalld mode's ARP guard: switched off, or back to the arptables
	// mode's rule (which also drops the director's gratuitous ARP).
	{"arp guard dormant", func() Spec { return arpGuardSpec() },
		"add table arp dsr-agent { flags dormant; }",
		[]string{"table flags dormant, want none"}},
	{"arp guard drops every ARP for a VIP", func() Spec { return arpGuardSpec() }, `
flush chain arp dsr-agent input
add rule arp dsr-agent input ` + arpInRule + "\n",
		[]string{"chain input: rule 1: changed"}},
	{"arp guard input accepts", func() Spec { return arpGuardSpec() }, `
flush chain arp dsr-agent input
add rule arp dsr-agent input ` + strings.TrimSuffix(guardInRule, "drop") + "accept\n",
		[]string{"chain input: rule 1: verdict accept, want drop"}},
	{"arp guard output gone", func() Spec { return arpGuardSpec() }, `
delete chain arp dsr-agent output
`, []string{"chain output missing"}},
	{"arp guard output on hook input", func() Spec { return arpGuardSpec() }, `
delete chain arp dsr-agent output
add chain arp dsr-agent output { type filter hook input priority filter; policy accept; }
add rule arp dsr-agent output ` + guardOutRule + "\n",
		[]string{"chain output: hook input, want output"}},
	// The Neighbour Solicitation guard in firewalld mode's ip6 table.
	{"ns guard gone", func() Spec { return nat6GuardSpec() }, `
delete chain ip6 dsr-agent input
`, []string{"chain input missing"}},
	{"ns guard loses a VIP", func() Spec { return nat6GuardSpec() }, `
flush chain ip6 dsr-agent ns_vips
add rule ip6 dsr-agent ns_vips @th,64,128 0x20010db8000000000000000000000010 counter drop
`, []string{"chain ns_vips: 1 rules, want 2"}},
	{"ns guard on hook output", func() Spec { return nat6GuardSpec() }, `
delete chain ip6 dsr-agent input
add chain ip6 dsr-agent input { type filter hook output priority filter; policy accept; }
add rule ip6 dsr-agent input ` + nsJumpRule + "\n",
		[]string{"chain input: hook output, want input"}},
	{"ns guard jumps on NA instead", func() Spec { return nat6GuardSpec() }, `
flush chain ip6 dsr-agent input
add rule ip6 dsr-agent input icmpv6 type nd-neighbor-advert jump ns_vips
`, []string{"chain input: rule 1: changed"}},
	{"ns guard per-VIP rule accepts", func() Spec { return nat6GuardSpec() }, `
flush chain ip6 dsr-agent ns_vips
add rule ip6 dsr-agent ns_vips @th,64,128 0x20010db8000000000000000000000010 counter accept
add rule ip6 dsr-agent ns_vips @th,64,128 0x20010db8000000000000000000000011 counter drop
`, []string{"chain ns_vips: rule 1: verdict accept, want drop"}},
	// Elements that expire: the redirects vanish an hour later.
	{"ip map vip_ports timeout", func() Spec { return nat4Spec() }, `
flush chain ip dsr-agent prerouting
delete map ip dsr-agent vip_ports
add map ip dsr-agent vip_ports { type ipv4_addr . inet_proto . inet_service : inet_service; flags timeout; timeout 1h; elements = { 192.0.2.10 . tcp . 80 : 8080, 192.0.2.10 . udp . 53 : 5353 }; }
add rule ip dsr-agent prerouting ` + natTCPRule + `
add rule ip dsr-agent prerouting ` + natUDPRule + "\n",
		[]string{"map vip_ports: flags timeout, want none", "timeout 1h0m0s, want none"}},
}

// TestDiffSeesDrift makes each drift with the real nft command, checks that
// Diff names it, that Replace repairs it, and that the repaired table is
// exactly the one Replace builds in a fresh namespace (golden), active.
func TestDiffSeesDrift(t *testing.T) {
	for _, tc := range driftCases {
		t.Run(tc.name, func(t *testing.T) {
			ns := netnstest.New(t)
			m := &Manager{Conn: ns.NFT(t)}
			spec := tc.spec()
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			// Negative control: the untouched table is in sync.
			if d, err := m.Diff(spec); err != nil || d != "" {
				t.Fatalf("Diff of a fresh table = %q, %v; want in sync", d, err)
			}
			nftScript(t, ns, tc.script)
			d, err := m.Diff(spec)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("Diff: %s", d)
			if d == "" {
				t.Fatalf("drift not detected:\n%s", listTable(t, ns, spec.Family()))
			}
			for _, w := range tc.want {
				if !strings.Contains(d, w) {
					t.Errorf("Diff = %q, want it to name %q", d, w)
				}
			}
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			if d, err := m.Diff(spec); err != nil || d != "" {
				t.Fatalf("after Replace Diff = %q, %v; want in sync", d, err)
			}
			assertActive(t, ns, spec)
		})
	}
}

// assertActive checks nft's own view: no table flags at all, and the table
// is the one Replace builds (testdata/*.kernel.nft).
func assertActive(t *testing.T, ns *netnstest.NS, spec Spec) {
	t.Helper()
	got := listTable(t, ns, spec.Family())
	// dsr-agent's tables have no flags at all, neither on the table
	// (dormant) nor on a set.
	if strings.Contains(got, "flags") {
		t.Fatalf("flags left after Replace:\n%s", got)
	}
	name := goldenName(spec)
	want, err := os.ReadFile(filepath.Join("testdata", name+".kernel.nft"))
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("table after Replace is not the desired one\n--- got\n%s--- want\n%s", got, want)
	}
}

// Table flags of the kernel (linux/netfilter/nf_tables.h); nft 1.0.6 cannot
// set persist, so the tests below speak netlink themselves.
const (
	testTableFlagOwner   = 0x2
	testTableFlagPersist = 0x4
)

// newTableRaw creates dsr-agent's table of family f with the given table
// flags through a netlink socket of its own, as a newer nft or another
// daemon would, and returns that socket: while it is open, a table with the
// owner flag belongs to it.
func newTableRaw(t *testing.T, ns *netnstest.NS, f Family, flags uint32) *netlink.Conn {
	t.Helper()
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: int(ns.Handle)})
	if err != nil {
		t.Fatalf("dial netfilter netlink: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	nfgen := func(family uint8, resID uint16) []byte {
		b := []byte{family, unix.NFNETLINK_V0, 0, 0}
		binary.BigEndian.PutUint16(b[2:], resID)
		return b
	}
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: []byte(TableName + "\x00")},
		{Type: unix.NFTA_TABLE_FLAGS, Data: binary.BigEndian.AppendUint32(nil, flags)},
	})
	if err != nil {
		t.Fatal(err)
	}
	msgs := []netlink.Message{
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN), Flags: netlink.Request},
			Data: nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE),
			Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl},
			Data: append(nfgen(uint8(f), 0), attrs...)},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_END), Flags: netlink.Request},
			Data: nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)},
	}
	if _, err := c.SendMessages(msgs); err != nil {
		t.Fatalf("send new table: %v", err)
	}
	if _, err := c.Receive(); err != nil {
		t.Fatalf("new table with flags %#x: %v", flags, err)
	}
	return c
}

// TestDiffSeesPersistTable: a table created with owner+persist outlives its
// owner with the persist flag; Diff names it and Replace re-creates the table
// without it.
func TestDiffSeesPersistTable(t *testing.T) {
	ns := netnstest.New(t)
	m := &Manager{Conn: ns.NFT(t)}
	spec := arpSpec()
	c := newTableRaw(t, ns, spec.Family(), testTableFlagOwner|testTableFlagPersist)
	c.Close() // the owner goes away; the table stays, flagged persist
	// dsr-agent's own sets, chains and rules go into it, so only the flag
	// differs. (nft 1.0.6 cannot: any "table" block it sends asks to clear
	// persist, which the kernel refuses.)
	if err := spec.build(m.Conn, &nftables.Table{Name: TableName, Family: spec.Family()}); err != nil {
		t.Fatal(err)
	}
	if err := m.Conn.Flush(); err != nil {
		t.Fatalf("fill the persist table: %v", err)
	}
	d, err := m.Diff(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Diff: %s", d)
	if !strings.Contains(d, "table flags persist, want none") {
		t.Fatalf("Diff = %q, want it to name the persist flag\n%s", d, listTable(t, ns, spec.Family()))
	}
	if err := m.Replace(spec); err != nil {
		t.Fatal(err)
	}
	if d, err := m.Diff(spec); err != nil || d != "" {
		t.Fatalf("after Replace Diff = %q, %v; want in sync", d, err)
	}
	assertActive(t, ns, spec)
}

// TestOwnedTable: while another process owns the table, Diff names the owner
// flag and Replace fails saying why, instead of a bare EPERM.
func TestOwnedTable(t *testing.T) {
	ns := netnstest.New(t)
	m := &Manager{Conn: ns.NFT(t)}
	spec := arpSpec()
	newTableRaw(t, ns, spec.Family(), testTableFlagOwner) // kept open until cleanup
	d, err := m.Diff(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Diff: %s", d)
	if !strings.Contains(d, "table flags owner, want none") {
		t.Fatalf("Diff = %q, want it to name the owner flag", d)
	}
	err = m.Replace(spec)
	t.Logf("Replace: %v", err)
	if err == nil || !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "owned by another process") {
		t.Fatalf("Replace of an owned table = %v, want EPERM naming the owner", err)
	}
}

// TestRenderedPlanRepairsDormant: the plan an operator sees (RenderReplace)
// repairs a dormant table too when run by hand: nft's "add table" without
// flags wakes the table, then it is deleted and re-created, all in one
// transaction.
func TestRenderedPlanRepairsDormant(t *testing.T) {
	for _, spec := range []Spec{arpSpec(), nat4Spec(), nat6Spec()} {
		t.Run(FamilyName(spec.Family()), func(t *testing.T) {
			ns := netnstest.New(t)
			m := &Manager{Conn: ns.NFT(t)}
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			ns.Exec(t, "nft", "add table "+TableRef(spec.Family())+" { flags dormant; }")
			if d, err := m.Diff(spec); err != nil || d == "" {
				t.Fatalf("Diff of the dormant table = %q, %v; want a difference", d, err)
			}
			script := RenderReplace(spec)
			nftScript(t, ns, strings.TrimSuffix(strings.TrimPrefix(script, "nft -f - <<'EOF'\n"), "EOF\n"))
			if d, err := m.Diff(spec); err != nil || d != "" {
				t.Fatalf("after the rendered plan Diff = %q, %v; want in sync", d, err)
			}
			assertActive(t, ns, spec)
		})
	}
}
