package firewall

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// ARP hook numbers. google/nftables' ChainHook constants are the inet
// family's; in an arp table input is NF_ARP_IN (0) and output NF_ARP_OUT (1).
// ChainHookInput (1) here would silently make an output chain.
const (
	arpHookIn  nftables.ChainHook = 0
	arpHookOut nftables.ChainHook = 1
)

// ARP header offsets from the network header (Ethernet/IPv4 ARP).
const (
	arpOffHType    = 0
	arpOffHLen     = 4
	arpOffSenderIP = 14
	arpOffTargetIP = 24
)

// ARPEntry is one VIP and the real IP that replaces it as ARP sender.
type ARPEntry struct {
	VIP  netip.Addr
	Real netip.Addr
}

// ARPTable is the arptables-mode table: ARP for a VIP is dropped on input,
// and ARP leaving with a VIP as sender is rewritten to the real IP. Two rules
// whatever the number of VIPs: the VIPs live in a set and a map.
type ARPTable struct {
	Entries []ARPEntry
	// Prefixes are whole prefixes served as VIPs (AnyIP): ARP for any
	// address of them is dropped, and ARP sent from one leaves with
	// PrefixReal as sender. They live in an interval set beside the host
	// set: two more rules when there are any, whatever their number.
	Prefixes   []netip.Prefix
	PrefixReal netip.Addr
}

// Family implements Spec.
func (*ARPTable) Family() Family { return nftables.TableFamilyARP }

func (a *ARPTable) entries() []ARPEntry {
	return sortedCopy(a.Entries, func(x, y ARPEntry) int { return x.VIP.Compare(y.VIP) })
}

func (a *ARPTable) sets(t *nftables.Table) (vips, vip2real *nftables.Set, vipElems, mapElems []nftables.SetElement) {
	vips = &nftables.Set{Table: t, Name: "vips", KeyType: nftables.TypeIPAddr, KeyByteOrder: binaryutil.BigEndian}
	vip2real = &nftables.Set{Table: t, Name: "vip2real", IsMap: true, KeyType: nftables.TypeIPAddr,
		DataType: nftables.TypeIPAddr, KeyByteOrder: binaryutil.BigEndian}
	for _, e := range a.entries() {
		vipElems = append(vipElems, nftables.SetElement{Key: e.VIP.AsSlice()})
		mapElems = append(mapElems, nftables.SetElement{Key: e.VIP.AsSlice(), Val: e.Real.AsSlice()})
	}
	return vips, vip2real, vipElems, mapElems
}

// prefixSet is the interval set of the prefixes (nil: none). Each prefix is
// a range: its first address, and the address after its last flagged as
// the interval's end (what nft sends for `elements = { 192.0.2.128/25 }`).
func (a *ARPTable) prefixSet(t *nftables.Table) (*nftables.Set, []nftables.SetElement) {
	if len(a.Prefixes) == 0 {
		return nil, nil
	}
	s := &nftables.Set{Table: t, Name: "vip_prefixes", KeyType: nftables.TypeIPAddr, KeyByteOrder: binaryutil.BigEndian, Interval: true}
	return s, intervalElements(a.prefixes())
}

func (a *ARPTable) prefixes() []netip.Prefix {
	return sortedCopy(a.Prefixes, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
}

// intervalElements are the elements of an interval set holding ps (sorted,
// not overlapping, none ending at the family's last address).
//
// nft opens the set with an interval end at the zero address (what the
// rbtree backend needs to see the gap before the first range): sent here
// too, a table loaded from the rendered plan compares equal to Replace's.
func intervalElements(ps []netip.Prefix) []nftables.SetElement {
	if len(ps) == 0 {
		return nil
	}
	zero := make([]byte, ps[0].Addr().BitLen()/8)
	out := []nftables.SetElement{{Key: zero, IntervalEnd: true}}
	for _, p := range ps {
		out = append(out, nftables.SetElement{Key: p.Masked().Addr().AsSlice()},
			nftables.SetElement{Key: lastAddr(p).Next().AsSlice(), IntervalEnd: true})
	}
	return out
}

// lastAddr is the prefix's last address.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// prefixRules are input's and output's rule for the prefixes.
func (a *ARPTable) prefixRules(ps *nftables.Set) (in, out []expr.Any) {
	// arp daddr ip @vip_prefixes counter drop
	in = append(arpGuard(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffTargetIP, Len: 4},
		lookup(1, ps),
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
	// arp saddr ip @vip_prefixes counter arp saddr ip set <real>
	out = append(arpGuard(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffSenderIP, Len: 4},
		lookup(1, ps),
		&expr.Counter{},
		&expr.Immediate{Register: 1, Data: a.PrefixReal.AsSlice()},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffSenderIP, Len: 4},
	)
	return in, out
}

// arpGuard matches Ethernet/IPv4 ARP only (htype 1, ptype 0x0800, hlen 6,
// plen 4), so the fixed offsets below hold. Adjacent fields are compared in
// two loads, exactly as nft builds "arp htype 1 arp ptype ip arp hlen 6
// arp plen 4", so a table written by hand from the rendered plan compares
// equal to ours.
func arpGuard() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffHType, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x00, 0x01, 0x08, 0x00}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffHLen, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6, 4}},
	}
}

func lookup(reg uint32, s *nftables.Set) *expr.Lookup {
	return &expr.Lookup{SourceRegister: reg, SetName: s.Name, SetID: s.ID}
}

// rules returns input's and output's rule.
func (a *ARPTable) rules(vips, vip2real *nftables.Set) (in, out []expr.Any) {
	// arp daddr ip @vips counter drop
	in = append(arpGuard(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffTargetIP, Len: 4},
		lookup(1, vips),
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
	// arp saddr ip @vips counter arp saddr ip set arp saddr ip map @vip2real
	mapLookup := lookup(1, vip2real)
	mapLookup.DestRegister, mapLookup.IsDestRegSet = 1, true
	out = append(arpGuard(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffSenderIP, Len: 4},
		lookup(1, vips),
		&expr.Counter{},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffSenderIP, Len: 4},
		mapLookup,
		// ARP has no checksum to fix up.
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: arpOffSenderIP, Len: 4},
	)
	return in, out
}

func arpChain(t *nftables.Table, name string, hook nftables.ChainHook) *nftables.Chain {
	return &nftables.Chain{Table: t, Name: name, Type: nftables.ChainTypeFilter, Hooknum: ptr(hook),
		Priority: nftables.ChainPriorityFilter, Policy: ptr(nftables.ChainPolicyAccept)}
}

func (a *ARPTable) build(c *nftables.Conn, t *nftables.Table) error {
	vips, vip2real, vipElems, mapElems := a.sets(t)
	if err := addSet(c, vips, vipElems); err != nil {
		return fmt.Errorf("set vips: %w", err)
	}
	if err := addSet(c, vip2real, mapElems); err != nil {
		return fmt.Errorf("map vip2real: %w", err)
	}
	ps, psElems := a.prefixSet(t)
	if ps != nil {
		if err := addSet(c, ps, psElems); err != nil {
			return fmt.Errorf("set vip_prefixes: %w", err)
		}
	}
	inRule, outRule := a.rules(vips, vip2real)
	in := c.AddChain(arpChain(t, "input", arpHookIn))
	out := c.AddChain(arpChain(t, "output", arpHookOut))
	c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: inRule})
	c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: outRule})
	if ps != nil {
		pin, pout := a.prefixRules(ps)
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: pin})
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: pout})
	}
	return nil
}

func (a *ARPTable) expected() tableContent {
	vips, vip2real, vipElems, mapElems := a.sets(nil)
	in, out := a.rules(vips, vip2real)
	ins, outs := [][]expr.Any{in}, [][]expr.Any{out}
	sets := []setContent{
		setContentOf(vips, vipElems),
		setContentOf(vip2real, mapElems),
	}
	if ps, psElems := a.prefixSet(nil); ps != nil {
		pin, pout := a.prefixRules(ps)
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
func (a *ARPTable) Render() string {
	var vips, pairs []string
	for _, e := range a.entries() {
		vips = append(vips, e.VIP.String())
		pairs = append(pairs, e.VIP.String()+" : "+e.Real.String())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table arp %s {\n", TableName)
	b.WriteString("\t# VIPs this host serves but must never claim in ARP\n")
	b.WriteString("\tset vips {\n\t\ttype ipv4_addr\n")
	writeElements(&b, vips)
	b.WriteString("\t}\n\n")
	b.WriteString("\t# ARP this host sends with a VIP as sender goes out with the real IP instead\n")
	b.WriteString("\tmap vip2real {\n\t\ttype ipv4_addr : ipv4_addr\n")
	writeElements(&b, pairs)
	b.WriteString("\t}\n\n")
	var prefixes []string
	for _, p := range a.prefixes() {
		prefixes = append(prefixes, p.String())
	}
	if len(prefixes) > 0 {
		b.WriteString("\t# prefixes served as VIPs (AnyIP): never claimed, their ARP sent with the real IP\n")
		b.WriteString("\tset vip_prefixes {\n\t\ttype ipv4_addr\n\t\tflags interval\n")
		writeElements(&b, prefixes)
		b.WriteString("\t}\n\n")
	}
	guard := "arp htype 1 arp ptype ip arp hlen 6 arp plen 4"
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\t%s arp daddr ip @vips counter drop\n", guard)
	if len(prefixes) > 0 {
		fmt.Fprintf(&b, "\t\t%s arp daddr ip @vip_prefixes counter drop\n", guard)
	}
	b.WriteString("\t}\n\n")
	b.WriteString("\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\t%s arp saddr ip @vips counter arp saddr ip set arp saddr ip map @vip2real\n", guard)
	if len(prefixes) > 0 {
		fmt.Fprintf(&b, "\t\t%s arp saddr ip @vip_prefixes counter arp saddr ip set %s\n", guard, a.PrefixReal)
	}
	b.WriteString("\t}\n")
	b.WriteString("}\n")
	return b.String()
}

func writeElements(b *strings.Builder, elems []string) {
	if len(elems) == 0 {
		return
	}
	b.WriteString("\t\telements = { ")
	b.WriteString(strings.Join(elems, ",\n\t\t\t     "))
	b.WriteString(" }\n")
}
