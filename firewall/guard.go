package firewall

import (
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The proxy guards: firewalld mode never configures a VIP, so arp_ignore
// cannot keep the kernel quiet about it; proxy ARP (proxy_arp,
// proxy_arp_pvlan, a proxy neighbour entry) and proxy NDP answer for
// addresses that are not local (arp.ProxyRules). These rules drop what would
// make the kernel answer, without touching the sysctls or entries, which are
// the host's own (Docker and routers need them).

// ARPGuard is firewalld mode's table arp dsr-agent. Unlike ARPTable (the
// arptables mode's) it rewrites nothing: the VIPs are not local, so this
// host has no ARP of its own to send from them.
//
//   - input drops ARP requests whose target is a VIP, unless the sender is a
//     VIP too. NF_ARP_IN runs in arp_rcv before arp_process, so a dropped
//     request is never answered, neither at once nor later from the proxy
//     queue (pneigh_enqueue re-runs arp_process on the queued request, past
//     the hook). Only requests: arp_process proxies nothing else, and the
//     replies this host gets when it looks up a VIP itself (a service here
//     calling the VIP through the director) have the VIP as sender, not as
//     target. Not a gratuitous ARP (sender = target = VIP): keepalived
//     announces a VIP, after a failover too, with an ARP *request* from
//     the VIP to the VIP; dropping it would leave this host's own neighbour
//     entry for the VIP on the failed director's MAC until NUD notices.
//   - output drops every ARP with a VIP as sender: the VIP is not an
//     address of this host, so such a packet can only be a proxy reply (to
//     the gratuitous requests input lets through, when proxy_arp is on, or
//     from anything input does not see). arp_send goes through NF_ARP_OUT
//     (arp_xmit), the delayed replies too.
type ARPGuard struct {
	VIPs []netip.Addr
	// Prefixes are whole prefixes redirected as VIPs (AnyIP): the same two
	// rules over an interval set, beside the host set's.
	Prefixes []netip.Prefix
}

func (g *ARPGuard) prefixSet(t *nftables.Table) (*nftables.Set, []nftables.SetElement) {
	if len(g.Prefixes) == 0 {
		return nil, nil
	}
	ps := sortedCopy(g.Prefixes, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	s := &nftables.Set{Table: t, Name: "vip_prefixes", KeyType: nftables.TypeIPAddr, KeyByteOrder: binaryutil.BigEndian, Interval: true}
	return s, intervalElements(ps)
}

// prefixRules: a request for an address of a prefix, unless from one
// (the director's gratuitous ARP), is dropped; ARP from one, sent, too.
func (g *ARPGuard) prefixRules(ps *nftables.Set) (in, out []expr.Any) {
	in, out = g.rules(ps)
	return in, out
}

// Family implements Spec.
func (*ARPGuard) Family() Family { return nftables.TableFamilyARP }

// arpOpRequest is ARPOP_REQUEST, compared together with hlen and plen: nft
// merges "arp hlen 6 arp plen 4 arp operation request" into one 4-byte load.
var arpHLenPLenRequest = []byte{6, 4, 0, 1}

func (g *ARPGuard) set(t *nftables.Table) (*nftables.Set, []nftables.SetElement) {
	s := &nftables.Set{Table: t, Name: "vips", KeyType: nftables.TypeIPAddr, KeyByteOrder: binaryutil.BigEndian}
	var elems []nftables.SetElement
	for _, v := range sortedAddrs(g.VIPs) {
		elems = append(elems, nftables.SetElement{Key: v.AsSlice()})
	}
	return s, elems
}

func (g *ARPGuard) rules(vips *nftables.Set) (in, out []expr.Any) {
	// arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp operation request
	// arp daddr ip @vips arp saddr ip != @vips counter drop
	notVIP := lookup(1, vips)
	notVIP.Invert = true
	in = []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffHType, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x00, 0x01, 0x08, 0x00}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffHLen, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: arpHLenPLenRequest},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffTargetIP, Len: 4},
		lookup(1, vips),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffSenderIP, Len: 4},
		notVIP,
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
	// arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ip @vips counter drop
	out = append(arpGuard(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffSenderIP, Len: 4},
		lookup(1, vips),
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
	return in, out
}

func (g *ARPGuard) build(c *nftables.Conn, t *nftables.Table) error {
	vips, elems := g.set(t)
	if err := addSet(c, vips, elems); err != nil {
		return fmt.Errorf("set vips: %w", err)
	}
	ps, psElems := g.prefixSet(t)
	if ps != nil {
		if err := addSet(c, ps, psElems); err != nil {
			return fmt.Errorf("set vip_prefixes: %w", err)
		}
	}
	inRule, outRule := g.rules(vips)
	in := c.AddChain(arpChain(t, "input", arpHookIn))
	out := c.AddChain(arpChain(t, "output", arpHookOut))
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: inRule})
	c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: outRule})
	if ps != nil {
		pin, pout := g.prefixRules(ps)
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: pin})
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: pout})
	}
	return nil
}

func (g *ARPGuard) expected() tableContent {
	vips, elems := g.set(nil)
	in, out := g.rules(vips)
	ins, outs := [][]expr.Any{in}, [][]expr.Any{out}
	sets := []setContent{setContentOf(vips, elems)}
	if ps, psElems := g.prefixSet(nil); ps != nil {
		pin, pout := g.prefixRules(ps)
		ins, outs = append(ins, pin), append(outs, pout)
		sets = append(sets, setContentOf(ps, psElems))
	}
	return tableContent{
		chains: []chainContent{
			{name: "input", base: true, typ: nftables.ChainTypeFilter, hook: arpHookIn, priority: int32(*nftables.ChainPriorityFilter), policy: nftables.ChainPolicyAccept, rules: ins},
			{name: "output", base: true, typ: nftables.ChainTypeFilter, hook: arpHookOut, priority: int32(*nftables.ChainPriorityFilter), policy: nftables.ChainPolicyAccept, rules: outs},
		},
		sets: sets,
	}
}

// Render implements Spec.
func (g *ARPGuard) Render() string {
	var vips []string
	for _, v := range sortedAddrs(g.VIPs) {
		vips = append(vips, v.String())
	}
	guard := "arp htype 1 arp ptype ip arp hlen 6 arp plen 4"
	var b strings.Builder
	fmt.Fprintf(&b, "table arp %s {\n", TableName)
	b.WriteString("\t# VIPs this host serves through a redirect: never local, never to be claimed\n")
	b.WriteString("\tset vips {\n\t\ttype ipv4_addr\n")
	writeElements(&b, vips)
	b.WriteString("\t}\n\n")
	var prefixes []string
	if ps, _ := g.prefixSet(nil); ps != nil {
		for _, p := range sortedCopy(g.Prefixes, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) }) {
			prefixes = append(prefixes, p.String())
		}
		b.WriteString("\t# prefixes redirected as VIPs (AnyIP): never local, never to be claimed\n")
		b.WriteString("\tset vip_prefixes {\n\t\ttype ipv4_addr\n\t\tflags interval\n")
		writeElements(&b, prefixes)
		b.WriteString("\t}\n\n")
	}
	b.WriteString("\t# requests for a VIP never reach proxy ARP; the director's gratuitous ARP (sender = target = VIP) does\n")
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\t%s arp operation request arp daddr ip @vips arp saddr ip != @vips counter drop\n", guard)
	if len(prefixes) > 0 {
		fmt.Fprintf(&b, "\t\t%s arp operation request arp daddr ip @vip_prefixes arp saddr ip != @vip_prefixes counter drop\n", guard)
	}
	b.WriteString("\t}\n\n")
	b.WriteString("\t# a VIP is not this host's address: ARP from it can only be a proxy reply\n")
	b.WriteString("\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\t%s arp saddr ip @vips counter drop\n", guard)
	if len(prefixes) > 0 {
		fmt.Fprintf(&b, "\t\t%s arp saddr ip @vip_prefixes counter drop\n", guard)
	}
	b.WriteString("\t}\n")
	b.WriteString("}\n")
	return b.String()
}

// The Neighbour Solicitation guard: a chain "input" in the ip6 table that
// drops NS whose target is a VIP. Proxy NDP answers only an NS
// (ndisc_recv_ns), and an NS reaches it only through the input hook
// (ip6_input: NF_INET_LOCAL_IN, also for the unicast NS ip6_forward hands
// to ip6_input when it proxies), so nothing else needs dropping; the
// director's unsolicited Neighbour Advertisements (type 136) pass. The chain
// is a filter chain at priority filter and can share the nat table's
// ip6 dsr-agent.
//
// nft 1.0.6 has no "icmpv6 taddr": the target is read raw (@th,64,128, 16
// bytes at offset 8 of the ICMPv6 header), which nft compares only with
// numbers. A named set of them needs "typeof" user data that
// google/nftables cannot write, and an anonymous set without it lists in
// decimal where nft's own lists in hex. So NS (and only NS) jump to a chain
// with one rule per VIP, listed the same whoever loaded it; the cost, N
// comparisons, is paid by Neighbour Solicitations alone.

// NSGuard is the table ip6 dsr-agent holding the Neighbour Solicitation
// guard alone, for the modes that have no other ip6 table (loopback,
// arptables): their IPv6 VIPs are on lo, which ndisc_recv_ns does not count
// as an address of the NIC, so proxy NDP answers for them as for a VIP that
// is not configured at all. firewalld mode uses NATTable.DropNS, tunnel
// mode MSSTable.DropNS (one table per family).
type NSGuard struct {
	VIPs []netip.Addr
}

// Family implements Spec.
func (*NSGuard) Family() Family { return nftables.TableFamilyIPv6 }

func (g *NSGuard) build(c *nftables.Conn, t *nftables.Table) error {
	buildNSGuard(c, t, g.VIPs)
	return nil
}

func (g *NSGuard) expected() tableContent { return tableContent{chains: nsGuardContent(g.VIPs)} }

// Render implements Spec.
func (g *NSGuard) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip6 %s {\n", TableName)
	renderNSGuard(&b, g.VIPs)
	b.WriteString("}\n")
	return b.String()
}

// icmpv6NeighborSolicit is ICMPv6 type 135.
const icmpv6NeighborSolicit = 135

// nsChainName is the regular chain holding one rule per VIP.
const nsChainName = "ns_vips"

// nsPrefixRule is a prefix's rule: the target's first bits (@th,64,bits)
// compared, as nft builds it: a load of the whole bytes they span, masked
// when bits is not a multiple of 8.
func nsPrefixRule(p netip.Prefix) []expr.Any {
	n := uint32((p.Bits() + 7) / 8)
	a := p.Masked().Addr().AsSlice()[:n]
	e := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 8, Len: n}}
	if p.Bits()%8 != 0 {
		// net.CIDRMask makes only 32- and 128-bit masks.
		mask := net.CIDRMask(p.Bits(), 128)[:n]
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a}, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
}

// nsPrefixValue is nft's spelling of a prefix's rule: @th,64,bits and the
// number the first bits make.
func nsPrefixValue(p netip.Prefix) string {
	v := new(big.Int).SetBytes(p.Masked().Addr().AsSlice())
	return fmt.Sprintf("@th,64,%d 0x%s", p.Bits(), v.Rsh(v, uint(128-p.Bits())).Text(16))
}

func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	return sortedCopy(ps, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
}

func nsRules(vips []netip.Addr, prefixes ...netip.Prefix) (in []expr.Any, perVIP [][]expr.Any) {
	// icmpv6 type nd-neighbor-solicit jump ns_vips
	in = []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{icmpv6NeighborSolicit}},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: nsChainName},
	}
	for _, v := range sortedAddrs(vips) {
		// @th,64,128 0x20010db8000000000000000000000010 counter drop
		perVIP = append(perVIP, []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 8, Len: 16},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: v.AsSlice()},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop},
		})
	}
	for _, p := range sortedPrefixes(prefixes) {
		perVIP = append(perVIP, nsPrefixRule(p))
	}
	return in, perVIP
}

func nsInputChain(t *nftables.Table) *nftables.Chain {
	return &nftables.Chain{Table: t, Name: "input", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput,
		Priority: nftables.ChainPriorityFilter, Policy: ptr(nftables.ChainPolicyAccept)}
}

// buildNSGuard adds the chains in the order the rendered script declares
// them (nft lists chains in creation order), then their rules.
func buildNSGuard(c *nftables.Conn, t *nftables.Table, vips []netip.Addr, prefixes ...netip.Prefix) {
	in := c.AddChain(nsInputChain(t))
	per := c.AddChain(&nftables.Chain{Table: t, Name: nsChainName})
	inRule, perVIP := nsRules(vips, prefixes...)
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: inRule})
	for _, r := range perVIP {
		c.AddRule(&nftables.Rule{Table: t, Chain: per, Exprs: r})
	}
}

func nsGuardContent(vips []netip.Addr, prefixes ...netip.Prefix) []chainContent {
	in, perVIP := nsRules(vips, prefixes...)
	return []chainContent{
		{name: "input", base: true, typ: nftables.ChainTypeFilter, hook: *nftables.ChainHookInput,
			priority: int32(*nftables.ChainPriorityFilter), policy: nftables.ChainPolicyAccept, rules: [][]expr.Any{in}},
		{name: nsChainName, rules: perVIP},
	}
}

func renderNSGuard(b *strings.Builder, vips []netip.Addr, prefixes ...netip.Prefix) {
	b.WriteString("\t# Neighbour Solicitations for a VIP never reach proxy NDP\n")
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n")
	fmt.Fprintf(b, "\t\ticmpv6 type nd-neighbor-solicit jump %s\n\t}\n\n", nsChainName)
	b.WriteString("\t# one rule per VIP: the NS target address, 16 bytes at offset 8 (nft 1.0.6 has no icmpv6 taddr)\n")
	fmt.Fprintf(b, "\tchain %s {\n", nsChainName)
	for _, v := range sortedAddrs(vips) {
		// nft's spelling of a number: hex without leading zeros.
		fmt.Fprintf(b, "\t\t@th,64,128 0x%s counter drop\n", new(big.Int).SetBytes(v.AsSlice()).Text(16))
	}
	for _, p := range sortedPrefixes(prefixes) {
		fmt.Fprintf(b, "\t\t%s counter drop\n", nsPrefixValue(p))
	}
	b.WriteString("\t}\n")
}

// sortedAddrs returns the distinct addresses, sorted.
func sortedAddrs(a []netip.Addr) []netip.Addr {
	s := sortedCopy(a, func(x, y netip.Addr) int { return x.Compare(y) })
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// Suppresses reports whether a table keeps the host from answering ARP or
// Neighbour Solicitations for a VIP: its drift is an ARP-suppression gap
// (status: "ARP suppression is NOT fully in force", health down), and it
// belongs in the phase that runs before any VIP is added. The arp tables
// always; an ip6 table when it carries the Neighbour Solicitation guard.
func Suppresses(s Spec) bool {
	switch s := s.(type) {
	case *ARPTable, *ARPGuard, *NSGuard:
		return true
	case *NATTable:
		return s.IPv6 && s.DropNS
	case *MSSTable:
		return len(s.nsVIPs()) > 0
	}
	return false
}
