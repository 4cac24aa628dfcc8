package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// MSSTable is the tunnel-mode table of one family. Client packets reach this
// host encapsulated (IPIP/GUE), so a client that sends full-size segments
// makes the director's encapsulated packets exceed the path MTU. The MSS the
// host advertises in the SYN-ACKs it sends from a VIP is therefore lowered
// to MSS; the client then never sends larger segments. Only SYN-ACKs are
// clamped: a real server never opens a connection from a VIP, so a bare SYN
// from one is not dsr-agent's business. It is the same table name as the
// firewalld mode's nat table: the modes are exclusive.
type MSSTable struct {
	IPv6 bool
	VIPs []netip.Addr
	// Prefixes are whole prefixes served as VIPs (AnyIP): SYN-ACKs from any
	// address of them are clamped too, by one more rule on an interval set
	// whatever their number.
	Prefixes []netip.Prefix
	MSS      uint16
	// DropNS adds, to the IPv6 table, the chains that drop Neighbour
	// Solicitations for the VIPs (see NSGuard): tunnel mode's IPv6 VIPs are
	// on lo, which proxy NDP does not count as local to the NIC.
	DropNS bool
}

// NewMSSClamp is the tunnel-mode table of the family of ipv6: SYN-ACKs from
// any of vips, or any address of prefixes, advertise at most mss. Those of
// the other family are ignored, so one list can feed both tables.
func NewMSSClamp(ipv6 bool, vips []netip.Addr, mss uint16, prefixes ...netip.Prefix) *MSSTable {
	var own []netip.Addr
	for _, v := range vips {
		if v.Unmap().Is6() == ipv6 {
			own = append(own, v.Unmap())
		}
	}
	var ps []netip.Prefix
	for _, p := range prefixes {
		if p.Addr().Is6() == ipv6 {
			ps = append(ps, p.Masked())
		}
	}
	return &MSSTable{IPv6: ipv6, VIPs: own, Prefixes: ps, MSS: mss}
}

// nsVIPs are the VIPs the Neighbour Solicitation guard covers (none unless
// DropNS on the IPv6 table).
func (m *MSSTable) nsVIPs() []netip.Addr {
	if !m.IPv6 || !m.DropNS {
		return nil
	}
	return m.VIPs
}

// nsPrefixes are the prefixes the guard covers, likewise.
func (m *MSSTable) nsPrefixes() []netip.Prefix {
	if !m.IPv6 || !m.DropNS {
		return nil
	}
	return m.Prefixes
}

// nsGuard: the guard's chains are there for a VIP or a prefix.
func (m *MSSTable) nsGuard() bool { return len(m.nsVIPs())+len(m.nsPrefixes()) > 0 }

// prefixSet is the interval set of the prefixes (nil: none), as the arp
// table's.
func (m *MSSTable) prefixSet(t *nftables.Table) (*nftables.Set, []nftables.SetElement) {
	if len(m.Prefixes) == 0 {
		return nil, nil
	}
	s := &nftables.Set{Table: t, Name: "vip_prefixes", KeyType: ipAddrType(m.IPv6), KeyByteOrder: binaryutil.BigEndian, Interval: true}
	return s, intervalElements(sortedPrefixes(m.Prefixes))
}

// rules are the clamp's rules: the VIPs', then the prefixes' if any.
func (m *MSSTable) rules(vips, prefixes *nftables.Set) [][]expr.Any {
	out := [][]expr.Any{m.rule(vips)}
	if prefixes != nil {
		out = append(out, m.rule(prefixes))
	}
	return out
}

// Family implements Spec.
func (m *MSSTable) Family() Family { return ipFamily(m.IPv6) }

// mssPriority is mangle (-150): rewriting a packet is mangle's job (iptables'
// TCPMSS target lives in the mangle table), and running before every
// filter-priority output chain means whatever inspects the packet later (an
// operator's filter or log rules, firewalld's output chains, NFQUEUE) sees
// the header that really leaves. The chain is of type filter, not route: a
// new MSS changes nothing a route lookup depends on.
var mssPriority = nftables.ChainPriorityMangle

// The TCP header and the MSS option (kind 2, length 4, value at offset 2).
const (
	tcpOffFlags = 13
	tcpFlagSYN  = 0x02
	tcpFlagACK  = 0x10
	tcpOptMSS   = 2
)

// vips is sorted and without duplicates: the kernel refuses a set element
// added twice in one transaction.
func (m *MSSTable) vips() []netip.Addr {
	return slices.Compact(sortedCopy(m.VIPs, func(a, b netip.Addr) int { return a.Compare(b) }))
}

func (m *MSSTable) set(t *nftables.Table) (*nftables.Set, []nftables.SetElement) {
	s := &nftables.Set{Table: t, Name: "vips", KeyType: ipAddrType(m.IPv6), KeyByteOrder: binaryutil.BigEndian}
	var elems []nftables.SetElement
	for _, v := range m.vips() {
		elems = append(elems, nftables.SetElement{Key: v.AsSlice()})
	}
	return s, elems
}

// rule is, expression for expression, what nft 1.0.6 builds from
//
//	ip saddr @vips tcp flags & (syn | ack) == (syn | ack) tcp option maxseg size > MSS counter tcp option maxseg size set MSS
//
// so a table loaded from the rendered plan compares equal to Replace's.
// The comparison is a memcmp of the register, hence big-endian bytes; the
// kernel fixes the TCP checksum when it writes the option.
func (m *MSSTable) rule(s *nftables.Set) []expr.Any {
	saddrOff, saddrLen := uint32(12), uint32(4)
	if m.IPv6 {
		saddrOff, saddrLen = 8, 16
	}
	mss := binaryutil.BigEndian.PutUint16(m.MSS)
	synack := byte(tcpFlagSYN | tcpFlagACK)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddrOff, Len: saddrLen},
		lookup(1, s),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpOffFlags, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{synack}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{synack}},
		// A SYN-ACK without the option, or already at most MSS, is left alone:
		// the clamp only ever lowers.
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, DestRegister: 1, Type: tcpOptMSS, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpGt, Register: 1, Data: mss},
		&expr.Counter{},
		&expr.Immediate{Register: 1, Data: mss},
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, SourceRegister: 1, Type: tcpOptMSS, Offset: 2, Len: 2},
	}
}

func mssChain(t *nftables.Table) *nftables.Chain {
	return &nftables.Chain{Table: t, Name: "output", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookOutput,
		Priority: mssPriority, Policy: ptr(nftables.ChainPolicyAccept)}
}

func (m *MSSTable) build(c *nftables.Conn, t *nftables.Table) error {
	if m.MSS == 0 {
		return errors.New("mss clamp: MSS 0 would stall every connection to a VIP")
	}
	s, elems := m.set(t)
	if err := addSet(c, s, elems); err != nil {
		return fmt.Errorf("set vips: %w", err)
	}
	ps, psElems := m.prefixSet(t)
	if ps != nil {
		if err := addSet(c, ps, psElems); err != nil {
			return fmt.Errorf("set vip_prefixes: %w", err)
		}
	}
	ch := c.AddChain(mssChain(t))
	for _, r := range m.rules(s, ps) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
	}
	if m.nsGuard() {
		buildNSGuard(c, t, m.nsVIPs(), m.nsPrefixes()...)
	}
	return nil
}

func (m *MSSTable) expected() tableContent {
	s, elems := m.set(nil)
	ps, psElems := m.prefixSet(nil)
	tc := tableContent{
		chains: []chainContent{{name: "output", base: true, typ: nftables.ChainTypeFilter, hook: *nftables.ChainHookOutput,
			priority: int32(*mssPriority), policy: nftables.ChainPolicyAccept, rules: m.rules(s, ps)}},
		sets: []setContent{setContentOf(s, elems)},
	}
	if ps != nil {
		tc.sets = append(tc.sets, setContentOf(ps, psElems))
	}
	if m.nsGuard() {
		tc.chains = append(tc.chains, nsGuardContent(m.nsVIPs(), m.nsPrefixes()...)...)
	}
	return tc
}

// Render implements Spec.
func (m *MSSTable) Render() string {
	fam, addrType := FamilyName(m.Family()), ipAddrType(m.IPv6).Name
	var elems []string
	for _, v := range m.vips() {
		elems = append(elems, v.String())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", fam, TableName)
	b.WriteString("\t# VIPs whose SYN-ACKs advertise a smaller MSS: client packets arrive encapsulated\n")
	fmt.Fprintf(&b, "\tset vips {\n\t\ttype %s\n", addrType)
	writeElements(&b, elems)
	b.WriteString("\t}\n\n")
	var prefixes []string
	for _, p := range sortedPrefixes(m.Prefixes) {
		prefixes = append(prefixes, p.String())
	}
	if len(prefixes) > 0 {
		b.WriteString("\t# prefixes served as VIPs (AnyIP), clamped alike\n")
		fmt.Fprintf(&b, "\tset vip_prefixes {\n\t\ttype %s\n\t\tflags interval\n", addrType)
		writeElements(&b, prefixes)
		b.WriteString("\t}\n\n")
	}
	b.WriteString("\tchain output {\n\t\ttype filter hook output priority mangle; policy accept;\n")
	fmt.Fprintf(&b, "\t\t%s saddr @vips tcp flags & (syn | ack) == (syn | ack) tcp option maxseg size > %d counter tcp option maxseg size set %d\n", fam, m.MSS, m.MSS)
	if len(prefixes) > 0 {
		fmt.Fprintf(&b, "\t\t%s saddr @vip_prefixes tcp flags & (syn | ack) == (syn | ack) tcp option maxseg size > %d counter tcp option maxseg size set %d\n", fam, m.MSS, m.MSS)
	}
	b.WriteString("\t}\n")
	if m.nsGuard() {
		b.WriteString("\n")
		renderNSGuard(&b, m.nsVIPs(), m.nsPrefixes()...)
	}
	b.WriteString("}\n")
	return b.String()
}
