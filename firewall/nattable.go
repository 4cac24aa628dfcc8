package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/dsr-agent/dsr-agent/internal/inet"
)

// Redirect sends VIP:Port/Proto to the local ToPort.
type Redirect struct {
	VIP    netip.Addr
	Proto  inet.Protocol // TCP or UDP
	Port   uint16
	ToPort uint16
}

// NATTable is the firewalld-mode table of one family: packets to a VIP's
// port are redirected to a local port through one concatenated map, so the
// VIP never has to be configured on the host. One rule whatever the size.
type NATTable struct {
	IPv6      bool
	Redirects []Redirect
	// Prefixes are whole prefixes redirected per port (AnyIP in firewalld
	// mode): an interval map beside vip_ports, one more rule per protocol
	// whatever their number.
	Prefixes []PrefixRedirect
	// DropNS adds, to the IPv6 table, the input chain that drops Neighbour
	// Solicitations for the redirected VIPs (see buildNSGuard): firewalld
	// mode's answer to proxy NDP. Ignored for IPv4 (ARPGuard's job).
	DropNS bool
}

// nsVIPs are the VIPs the Neighbour Solicitation guard covers (none unless
// DropNS on the IPv6 table).
func (n *NATTable) nsVIPs() []netip.Addr {
	if !n.IPv6 || !n.DropNS {
		return nil
	}
	var out []netip.Addr
	for _, r := range n.Redirects {
		out = append(out, r.VIP)
	}
	return sortedAddrs(out)
}

// PrefixRedirect sends every address of Prefix, Port/Proto to the local
// ToPort.
type PrefixRedirect struct {
	Prefix netip.Prefix
	Proto  inet.Protocol
	Port   uint16
	ToPort uint16
}

func (n *NATTable) prefixRedirects() []PrefixRedirect {
	return sortedCopy(n.Prefixes, func(a, b PrefixRedirect) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		if a.Proto != b.Proto {
			return int(a.Proto.Number()) - int(b.Proto.Number())
		}
		return int(a.Port) - int(b.Port)
	})
}

// concatKey is addr . proto . port, each component padded to a register.
func concatKey(a netip.Addr, p inet.Protocol, port uint16) []byte {
	key := append([]byte{}, a.AsSlice()...)
	key = append(key, p.Number(), 0, 0, 0)
	return append(key, byte(port>>8), byte(port), 0, 0)
}

// prefixSet is the interval map of the prefixes (nil: none): each element
// a range from the prefix's first address to its last (KeyEnd, inclusive:
// the concatenated-range backend, pipapo, as nft sends it).
func (n *NATTable) prefixSet(t *nftables.Table) (*nftables.Set, []nftables.SetElement) {
	if len(n.Prefixes) == 0 {
		return nil, nil
	}
	s := &nftables.Set{Table: t, Name: "prefix_ports", IsMap: true, Concatenation: true, Interval: true,
		KeyType:      nftables.MustConcatSetType(ipAddrType(n.IPv6), nftables.TypeInetProto, nftables.TypeInetService),
		DataType:     nftables.TypeInetService,
		KeyByteOrder: binaryutil.BigEndian}
	var elems []nftables.SetElement
	for _, r := range n.prefixRedirects() {
		elems = append(elems, nftables.SetElement{Key: concatKey(r.Prefix.Masked().Addr(), r.Proto, r.Port),
			KeyEnd: concatKey(lastAddr(r.Prefix), r.Proto, r.Port), Val: []byte{byte(r.ToPort >> 8), byte(r.ToPort)}})
	}
	return s, elems
}

// nsPrefixes are the prefixes the Neighbour Solicitation guard covers.
func (n *NATTable) nsPrefixes() []netip.Prefix {
	if !n.IPv6 || !n.DropNS {
		return nil
	}
	var out []netip.Prefix
	for _, r := range n.Prefixes {
		if !slices.Contains(out, r.Prefix) {
			out = append(out, r.Prefix)
		}
	}
	return out
}

// Family implements Spec.
func (n *NATTable) Family() Family { return ipFamily(n.IPv6) }

// NAT priority dstnat (-100): before the routing decision, so the redirected
// packet is delivered locally.
var natPriority = nftables.ChainPriorityNATDest

// nftables registers: concatenation components go into consecutive 32-bit
// registers starting at NFT_REG32_00 (8); the map result into NFT_REG_1.
const (
	reg32First = 8
	regResult  = 1
	// NF_NAT_RANGE_PROTO_SPECIFIED: the redirect carries a port.
	natRangeProtoSpecified = 0x2
)

func (n *NATTable) redirects() []Redirect {
	return sortedCopy(n.Redirects, func(a, b Redirect) int {
		if c := a.VIP.Compare(b.VIP); c != 0 {
			return c
		}
		if a.Proto != b.Proto {
			return int(a.Proto.Number()) - int(b.Proto.Number())
		}
		return int(a.Port) - int(b.Port)
	})
}

func (n *NATTable) set(t *nftables.Table) (*nftables.Set, []nftables.SetElement) {
	s := &nftables.Set{Table: t, Name: "vip_ports", IsMap: true, Concatenation: true,
		KeyType:      nftables.MustConcatSetType(ipAddrType(n.IPv6), nftables.TypeInetProto, nftables.TypeInetService),
		DataType:     nftables.TypeInetService,
		KeyByteOrder: binaryutil.BigEndian}
	var elems []nftables.SetElement
	for _, r := range n.redirects() {
		// Each concatenated component is padded to a 4-byte register.
		key := append([]byte{}, r.VIP.AsSlice()...)
		key = append(key, r.Proto.Number(), 0, 0, 0)
		key = append(key, byte(r.Port>>8), byte(r.Port), 0, 0)
		elems = append(elems, nftables.SetElement{Key: key, Val: []byte{byte(r.ToPort >> 8), byte(r.ToPort)}})
	}
	return s, elems
}

// canonReg is how the kernel reports a 32-bit register in dumps: one that
// starts a 16-byte register is named by the 16-byte one (NFT_REG32_00 is
// NFT_REG_1). Building rules with the same names lets a dump compare equal.
func canonReg(reg32 uint32) uint32 {
	if (reg32-reg32First)%4 == 0 {
		return (reg32-reg32First)/4 + 1
	}
	return reg32
}

// protos lists the transport protocols in use, in a stable order.
func (n *NATTable) protos() []inet.Protocol {
	var out []inet.Protocol
	for _, p := range []inet.Protocol{inet.TCP, inet.UDP} {
		if slices.ContainsFunc(n.Redirects, func(r Redirect) bool { return r.Proto == p }) {
			out = append(out, p)
		}
	}
	return out
}

// prefixProtos lists the prefixes' transport protocols, in a stable order.
func (n *NATTable) prefixProtos() []inet.Protocol {
	var out []inet.Protocol
	for _, p := range []inet.Protocol{inet.TCP, inet.UDP} {
		if slices.ContainsFunc(n.Prefixes, func(r PrefixRedirect) bool { return r.Proto == p }) {
			out = append(out, p)
		}
	}
	return out
}

// rules returns one rule per protocol in use: nft requires a transport
// protocol match before a redirect that sets a port.
func (n *NATTable) rules(s, ps *nftables.Set) [][]expr.Any {
	var out [][]expr.Any
	for _, p := range n.protos() {
		r := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p.Number()}},
		}
		out = append(out, append(r, n.redirectExprs(s)...))
	}
	if ps == nil {
		return out
	}
	for _, p := range n.prefixProtos() {
		r := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p.Number()}},
		}
		out = append(out, append(r, n.redirectExprs(ps)...))
	}
	return out
}

func (n *NATTable) redirectExprs(s *nftables.Set) []expr.Any {
	daddrOff, daddrLen, regs := uint32(16), uint32(4), uint32(1)
	if n.IPv6 {
		daddrOff, daddrLen, regs = 24, 16, 4
	}
	m := lookup(canonReg(reg32First), s)
	m.DestRegister, m.IsDestRegSet = regResult, true
	// counter redirect to :ip daddr . meta l4proto . th dport map @vip_ports
	return []expr.Any{
		&expr.Counter{},
		&expr.Payload{DestRegister: canonReg(reg32First), Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: daddrLen},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: canonReg(reg32First + regs)},
		&expr.Payload{DestRegister: canonReg(reg32First + regs + 1), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		m,
		// Min and max are the same port, as nft itself builds it.
		&expr.Redir{RegisterProtoMin: regResult, RegisterProtoMax: regResult, Flags: natRangeProtoSpecified},
	}
}

func natChain(t *nftables.Table) *nftables.Chain {
	return &nftables.Chain{Table: t, Name: "prerouting", Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting,
		Priority: natPriority, Policy: ptr(nftables.ChainPolicyAccept)}
}

func (n *NATTable) build(c *nftables.Conn, t *nftables.Table) error {
	s, elems := n.set(t)
	if err := addSet(c, s, elems); err != nil {
		return fmt.Errorf("map vip_ports: %w", err)
	}
	ps, psElems := n.prefixSet(t)
	if ps != nil {
		if err := addSet(c, ps, psElems); err != nil {
			return fmt.Errorf("map prefix_ports: %w", err)
		}
	}
	ch := c.AddChain(natChain(t))
	for _, r := range n.rules(s, ps) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
	}
	if vips, ps := n.nsVIPs(), n.nsPrefixes(); len(vips)+len(ps) > 0 {
		buildNSGuard(c, t, vips, ps...)
	}
	return nil
}

func (n *NATTable) expected() tableContent {
	s, elems := n.set(nil)
	ps, psElems := n.prefixSet(nil)
	tc := tableContent{
		chains: []chainContent{{name: "prerouting", base: true, typ: nftables.ChainTypeNAT, hook: *nftables.ChainHookPrerouting,
			priority: int32(*natPriority), policy: nftables.ChainPolicyAccept, rules: n.rules(s, ps)}},
		sets: []setContent{setContentOf(s, elems)},
	}
	if ps != nil {
		tc.sets = append(tc.sets, setContentOf(ps, psElems))
	}
	if vips, ps := n.nsVIPs(), n.nsPrefixes(); len(vips)+len(ps) > 0 {
		tc.chains = append(tc.chains, nsGuardContent(vips, ps...)...)
	}
	return tc
}

// Render implements Spec.
func (n *NATTable) Render() string {
	fam, addrType := FamilyName(n.Family()), ipAddrType(n.IPv6).Name
	daddr := fam + " daddr"
	var elems []string
	for _, r := range n.redirects() {
		elems = append(elems, fmt.Sprintf("%s . %s . %d : %d", r.VIP, r.Proto, r.Port, r.ToPort))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", fam, TableName)
	b.WriteString("\t# VIP . protocol . port : local port; the VIP itself is never on this host\n")
	fmt.Fprintf(&b, "\tmap vip_ports {\n\t\ttype %s . inet_proto . inet_service : inet_service\n", addrType)
	writeElements(&b, elems)
	b.WriteString("\t}\n\n")
	if len(n.Prefixes) > 0 {
		var pelems []string
		for _, r := range n.prefixRedirects() {
			pelems = append(pelems, fmt.Sprintf("%s . %s . %d : %d", r.Prefix.Masked(), r.Proto, r.Port, r.ToPort))
		}
		b.WriteString("\t# prefix . protocol . port : local port; every address of the prefix (AnyIP), never on this host\n")
		fmt.Fprintf(&b, "\tmap prefix_ports {\n\t\ttype %s . inet_proto . inet_service : inet_service\n\t\tflags interval\n", addrType)
		writeElements(&b, pelems)
		b.WriteString("\t}\n\n")
	}
	b.WriteString("\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
	for _, p := range n.protos() {
		fmt.Fprintf(&b, "\t\tmeta l4proto %s counter redirect to :%s . meta l4proto . th dport map @vip_ports\n", p, daddr)
	}
	if len(n.Prefixes) > 0 {
		for _, p := range n.prefixProtos() {
			fmt.Fprintf(&b, "\t\tmeta l4proto %s counter redirect to :%s . meta l4proto . th dport map @prefix_ports\n", p, daddr)
		}
	}
	b.WriteString("\t}\n")
	if vips, ps := n.nsVIPs(), n.nsPrefixes(); len(vips)+len(ps) > 0 {
		b.WriteString("\n")
		renderNSGuard(&b, vips, ps...)
	}
	b.WriteString("}\n")
	return b.String()
}
