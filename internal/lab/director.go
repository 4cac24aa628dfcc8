package lab

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names of the director's nftables objects (netdev family, table DirectorTable).
const (
	DirectorTable = "lvsdr"
	// CounterRequests counts client→VIP TCP packets the director forwarded.
	CounterRequests = "requests"
	// CounterReplies counts VIP→client TCP packets that reached the director.
	// In DSR this must stay 0: replies go straight from real server to client.
	CounterReplies = "replies"
	// CounterRequestsUDP and CounterRepliesUDP are the same for UDP (DNS).
	CounterRequestsUDP = "udp_requests"
	CounterRepliesUDP  = "udp_replies"
	backendsMap        = "backends"
)

// nftables register numbers (NFT_REG32_xx are 4-byte registers; NFT_REG_1 is
// the 16-byte register covering NFT_REG32_00..03).
const (
	reg32_00 = 8  // hash input start, then hash output
	reg32_04 = 12 // source port after a 16-byte IPv6 address
	regMAC   = 2  // NFT_REG_2 (= NFT_REG32_04..07): looked-up MAC
	regDev   = 1  // NFT_REG_1: output ifindex for dup
)

// setupDirector puts the VIPs on the director's NIC (so its kernel answers
// ARP and NDP for them, like an LVS director) and installs the DR chain.
func (l *Lab) setupDirector() error {
	d := l.Director
	nic, err := d.Link()
	if err != nil {
		return err
	}
	for _, vip := range []netip.Prefix{netip.PrefixFrom(VIP4, 32), netip.PrefixFrom(VIP6, 128)} {
		if err := addAddr(d, nic, vip); err != nil {
			return err
		}
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(d.Handle)))
	if err != nil {
		return fmt.Errorf("director: nftables conn: %w", err)
	}
	defer c.CloseLasting()

	t := c.AddTable(&nftables.Table{Name: DirectorTable, Family: nftables.TableFamilyNetdev})
	ch := c.AddChain(&nftables.Chain{
		Name:     "ingress",
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookIngress,
		Priority: nftables.ChainPriorityFilter,
		Device:   NIC,
	})
	for _, name := range []string{CounterRequests, CounterReplies, CounterRequestsUDP, CounterRepliesUDP} {
		c.AddObj(&nftables.CounterObj{Table: t, Name: name})
	}
	// Map: jhash bucket (host-endian u32, as the hash expression writes it) →
	// real server MAC.
	m := &nftables.Set{
		Table:        t,
		Name:         backendsMap,
		IsMap:        true,
		KeyType:      nftables.TypeInteger,
		DataType:     nftables.TypeEtherAddr,
		KeyByteOrder: binaryutil.NativeEndian,
	}
	var elems []nftables.SetElement
	for i, rs := range l.Servers {
		elems = append(elems, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)), Val: rs.MAC})
	}
	if err := c.AddSet(m, elems); err != nil {
		return fmt.Errorf("director: add map: %w", err)
	}
	for _, vip := range []netip.Prefix{netip.PrefixFrom(VIP4, 32), netip.PrefixFrom(VIP6, 128), AnyIP4} {
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: forwardExprs(vip, proto, len(l.Servers), d.MAC, nic.Attrs().Index)})
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: replyExprs(vip, proto)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("director: install DR chain: %w", err)
	}
	return nil
}

// counterNames maps a protocol to its (requests, replies) counters.
func counterNames(proto byte) (requests, replies string) {
	if proto == unix.IPPROTO_UDP {
		return CounterRequestsUDP, CounterRepliesUDP
	}
	return CounterRequests, CounterReplies
}

// ipMatch returns expressions matching an IPv4/IPv6 packet of the transport
// protocol proto (TCP or UDP) whose address at the given header offset (v4,
// v6) equals a.
func ipMatch(p netip.Prefix, proto byte, off4, off6 uint32) []expr.Any {
	a := p.Masked().Addr()
	ethertype := []byte{0x08, 0x00}
	off, n := off4, uint32(4)
	if a.Is6() {
		ethertype = []byte{0x86, 0xdd}
		off, n = off6, 16
	}
	var mask []expr.Any
	if !p.IsSingleIP() {
		// A whole prefix: the address masked, then compared.
		m := net.CIDRMask(p.Bits(), a.BitLen())
		mask = []expr.Any{&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: m, Xor: make([]byte, n)}}
	}
	return append(append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ethertype},
		// Only TCP and UDP: ICMPv6 to the VIP (unicast Neighbour
		// Solicitations for reachability checks) must reach the director's
		// own stack.
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
	}, mask...), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()})
}

// forwardExprs is, in nft syntax (IPv4; for UDP "udp sport" and the counter
// "udp_requests"):
//
//	ip daddr VIP meta l4proto tcp
//	  ether daddr set jhash ip saddr . tcp sport mod N map @backends
//	  ether saddr set DIRECTOR-MAC counter name "requests"
//	  dup to "eth0" drop
//
// The hash is per flow, never per packet: SYN and the following segments of
// one connection (for UDP: the datagrams of one client socket) must reach the
// same server. Both TCP and UDP have the source port in the first two bytes
// of the transport header. The source MAC must become the
// director's own, or the bridge would learn the client's MAC on the director's
// port and send the server's replies to the director. google/nftables v0.3.0
// has no fwd expression, so the rewritten packet is cloned out of the NIC with
// dup and the original dropped: the same effect at the cost of one clone.
func forwardExprs(vips netip.Prefix, proto byte, n int, own net.HardwareAddr, ifindex int) []expr.Any {
	vip := vips.Addr()
	e := ipMatch(vips, proto, 16, 24)
	requests, _ := counterNames(proto)
	saddrOff, saddrLen, sportReg, hashLen := uint32(12), uint32(4), uint32(reg32_00+1), uint32(8)
	if vip.Is6() {
		saddrOff, saddrLen, sportReg, hashLen = 8, 16, reg32_04, 20
	}
	e = append(e,
		// Concatenation "saddr . sport": each part padded to 4 bytes, as nft does.
		&expr.Payload{DestRegister: reg32_00, Base: expr.PayloadBaseNetworkHeader, Offset: saddrOff, Len: saddrLen},
		&expr.Payload{DestRegister: sportReg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Hash{Type: expr.HashTypeJenkins, SourceRegister: reg32_00, Length: hashLen, Modulus: uint32(n), DestRegister: reg32_00},
		&expr.Lookup{SourceRegister: reg32_00, SetName: backendsMap, DestRegister: regMAC, IsDestRegSet: true},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: regMAC, Base: expr.PayloadBaseLLHeader, Offset: 0, Len: 6},
		&expr.Immediate{Register: regMAC, Data: own},
		&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: regMAC, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		&expr.Objref{Type: int(nftables.ObjTypeCounter), Name: requests},
		&expr.Immediate{Register: regDev, Data: binary.NativeEndian.AppendUint32(nil, uint32(ifindex))},
		&expr.Dup{RegDev: regDev, IsRegDevSet: true},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
	return e
}

// replyExprs counts packets of proto from the VIP that reach the director:
// proof that replies bypass it (DSR) when the counter stays at zero.
func replyExprs(vip netip.Prefix, proto byte) []expr.Any {
	_, replies := counterNames(proto)
	return append(ipMatch(vip, proto, 12, 8), &expr.Objref{Type: int(nftables.ObjTypeCounter), Name: replies})
}

// Counter is a packet and byte count.
type Counter struct{ Packets, Bytes uint64 }

func (c Counter) String() string { return fmt.Sprintf("%d packets, %d bytes", c.Packets, c.Bytes) }

// Sub returns c - o (counts since a snapshot o).
func (c Counter) Sub(o Counter) Counter {
	return Counter{Packets: c.Packets - o.Packets, Bytes: c.Bytes - o.Bytes}
}

// readCounter reads a named counter of a table in a node's namespace.
func readCounter(n *Node, t *nftables.Table, name string) (Counter, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(n.Handle)))
	if err != nil {
		return Counter{}, fmt.Errorf("%s: nftables conn: %w", n.Name, err)
	}
	defer c.CloseLasting()
	o, err := c.GetObject(&nftables.CounterObj{Table: t, Name: name})
	if err != nil {
		return Counter{}, fmt.Errorf("%s: read counter %s %s: %w", n.Name, t.Name, name, err)
	}
	co, ok := o.(*nftables.CounterObj)
	if !ok {
		return Counter{}, fmt.Errorf("%s: counter %s %s: unexpected object %T", n.Name, t.Name, name, o)
	}
	return Counter{Packets: co.Packets, Bytes: co.Bytes}, nil
}

// DirectorCounter reads one of the director's counters (CounterRequests,
// CounterReplies, CounterRequestsUDP, CounterRepliesUDP).
func (l *Lab) DirectorCounter(name string) (Counter, error) {
	return readCounter(l.Director, &nftables.Table{Name: DirectorTable, Family: nftables.TableFamilyNetdev}, name)
}
