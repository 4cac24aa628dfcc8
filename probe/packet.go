package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Encap is how the director forwards to a real server.
type Encap struct {
	Kind Kind
	Port uint16 // GUE's UDP destination port
}

// Kind names a forwarding method.
type Kind string

// Forwarding methods: LVS-DR (rewrite the destination MAC), IPIP (IPv4 in
// IPv4, IPv6 in IPv6, or mixed: the outer family is the real server's) and
// GUE (the same inside a 4-byte GUE header over UDP).
const (
	L2   Kind = "l2"
	IPIP Kind = "ipip"
	GUE  Kind = "gue"
)

func (e Encap) String() string {
	if e.Kind == GUE {
		return fmt.Sprintf("gue:%d", e.Port)
	}
	return string(e.Kind)
}

// Overhead is the number of bytes the encapsulation adds to each packet for
// an outer header of the real server's family.
func (e Encap) Overhead(outer6 bool) int {
	ip := 20
	if outer6 {
		ip = 40
	}
	switch e.Kind {
	case IPIP:
		return ip
	case GUE:
		return ip + 8 + gueHeaderLen
	}
	return 0
}

// gueHeaderLen is GUE version 0 without options: version/C/hlen, the inner
// protocol, 16 bits of flags (draft-ietf-intarea-gue, what IPVS sends and
// the kernel's fou module in GUE mode decapsulates).
const gueHeaderLen = 4

// Flow is one probe's addresses and ports, fixed before anything is sent.
type Flow struct {
	Proto    Proto
	Src      netip.Addr // the director's own address (the client side)
	VIP      netip.Addr
	SrcPort  uint16
	Port     uint16 // the service port on the VIP
	Seq      uint32 // TCP initial sequence number
	MSS      uint16 // MSS option on the SYN
	Real     netip.Addr
	OuterSrc netip.Addr // L3: the director's address towards Real
	Encap    Encap
	GUESport uint16 // L3 GUE: outer UDP source port (entropy, as IPVS sets it)
	SrcMAC   net.HardwareAddr
	DstMAC   net.HardwareAddr // the real server (L2) or the next hop (L3)
}

// Proto is the probed transport protocol.
type Proto string

// Transport protocols.
const (
	TCP Proto = "tcp"
	UDP Proto = "udp"
)

var serializeOpts = gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}

// ipLayer returns the IP header from src to dst carrying proto.
func ipLayer(src, dst netip.Addr, proto layers.IPProtocol, id uint16) gopacket.NetworkLayer {
	if dst.Is4() {
		return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: id, Flags: layers.IPv4DontFragment,
			Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	}
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
}

func etherType(a netip.Addr) layers.EthernetType {
	if a.Is4() {
		return layers.EthernetTypeIPv4
	}
	return layers.EthernetTypeIPv6
}

// innerProto is the IP protocol number of an inner packet of a's family.
func innerProto(a netip.Addr) layers.IPProtocol {
	if a.Is4() {
		return layers.IPProtocolIPv4
	}
	return layers.IPProtocolIPv6
}

// frame serialises the inner packet (the client's packet to the VIP: ip,
// transport, payload) as the director sends it: behind the Ethernet header
// alone (L2) or inside the outer IP (+UDP+GUE) header addressed to the real
// server (L3).
func (f *Flow) frame(ip gopacket.NetworkLayer, l4 gopacket.SerializableLayer, payload []byte) ([]byte, error) {
	var ls []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: f.SrcMAC, DstMAC: f.DstMAC}
	switch f.Encap.Kind {
	case L2, "":
		eth.EthernetType = etherType(f.VIP)
		ls = append(ls, eth)
	case IPIP:
		eth.EthernetType = etherType(f.Real)
		ls = append(ls, eth, ipLayer(f.OuterSrc, f.Real, innerProto(f.VIP), uint16(f.Seq)).(gopacket.SerializableLayer))
	case GUE:
		eth.EthernetType = etherType(f.Real)
		outer := ipLayer(f.OuterSrc, f.Real, layers.IPProtocolUDP, uint16(f.Seq))
		udp := &layers.UDP{SrcPort: layers.UDPPort(f.GUESport), DstPort: layers.UDPPort(f.Encap.Port)}
		if err := udp.SetNetworkLayerForChecksum(outer); err != nil {
			return nil, fmt.Errorf("gue: %w", err)
		}
		gue := gopacket.Payload{0, byte(innerProto(f.VIP)), 0, 0}
		ls = append(ls, eth, outer.(gopacket.SerializableLayer), udp, gue)
	default:
		return nil, fmt.Errorf("unknown encapsulation %q", f.Encap.Kind)
	}
	ls = append(ls, ip.(gopacket.SerializableLayer), l4)
	if payload != nil {
		ls = append(ls, gopacket.Payload(payload))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, serializeOpts, ls...); err != nil {
		return nil, fmt.Errorf("serialise probe frame: %w", err)
	}
	return buf.Bytes(), nil
}

// SYN is the client's first segment: from the director's own address and a
// random port, with a random sequence number and an MSS option.
func (f *Flow) SYN() ([]byte, error) {
	ip := ipLayer(f.Src, f.VIP, layers.IPProtocolTCP, uint16(f.Seq>>16))
	mss := binary.BigEndian.AppendUint16(nil, f.MSS)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(f.SrcPort), DstPort: layers.TCPPort(f.Port), Seq: f.Seq,
		SYN: true, Window: 64240,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: mss}}}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, err
	}
	return f.frame(ip, tcp, nil)
}

// RST answers a SYN-ACK so the real server keeps no half-open connection.
// Its sequence number is the SYN-ACK's acknowledgement (our ISN + 1), which
// the real server accepts as in-window (RFC 9293 3.10.7.4).
func (f *Flow) RST() ([]byte, error) { return f.RSTSeq(f.Seq + 1) }

// RSTSeq is an RST with sequence number seq: for a stale SYN-ACK, its
// acknowledgement number (RFC 9293 3.10.7.3: a SYN-ACK whose ACK is not
// acceptable gets <SEQ=SEG.ACK><CTL=RST>).
func (f *Flow) RSTSeq(seq uint32) ([]byte, error) {
	ip := ipLayer(f.Src, f.VIP, layers.IPProtocolTCP, uint16(f.Seq>>16)+1)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(f.SrcPort), DstPort: layers.TCPPort(f.Port), Seq: seq, RST: true}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, err
	}
	return f.frame(ip, tcp, nil)
}

// Datagram is the UDP probe carrying payload.
func (f *Flow) Datagram(payload []byte) ([]byte, error) {
	ip := ipLayer(f.Src, f.VIP, layers.IPProtocolUDP, uint16(f.Seq>>16))
	udp := &layers.UDP{SrcPort: layers.UDPPort(f.SrcPort), DstPort: layers.UDPPort(f.Port)}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, err
	}
	return f.frame(ip, udp, payload)
}

// AnswerKind is what came back.
type AnswerKind int

// Answers the parser recognises.
const (
	AnswerNone   AnswerKind = iota
	AnswerSYNACK            // TCP SYN-ACK
	AnswerRST               // TCP RST
	AnswerUDP               // a UDP datagram back to our port
	AnswerICMP              // ICMP/ICMPv6 destination unreachable (or packet too big) about our packet
	// AnswerStaleSYNACK is a SYN-ACK for our ports that acknowledges
	// another sequence number: the real server still holds a half-open
	// connection of an earlier probe from the same port. Its Ack is in Seq.
	AnswerStaleSYNACK
)

// Answer is one received packet that belongs to the probe's flow.
type Answer struct {
	Kind     AnswerKind
	From     netip.Addr // the IP source of the answer
	Seq      uint32     // SYN-ACK: the server's sequence number
	MSS      uint16     // SYN-ACK: the advertised MSS (0: no option)
	Window   uint16     // SYN-ACK: the advertised window
	ICMPType uint8
	ICMPCode uint8
	Payload  []byte // UDP: the answer
}

var errNotOurs = errors.New("not for this probe")

// Parse decodes a received Ethernet frame and returns the answer it carries
// for flow f, or errNotOurs. Answers are matched on the flow's addresses and
// ports; ICMP errors on the packet they quote (our source port and the VIP).
func (f *Flow) Parse(data []byte) (Answer, error) {
	pkt := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	var src, dst netip.Addr
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
	case *layers.IPv6:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
	default:
		return Answer{}, errNotOurs
	}
	if dst != f.Src {
		return Answer{}, errNotOurs
	}
	switch l := pkt.TransportLayer().(type) {
	case *layers.TCP:
		if f.Proto != TCP || uint16(l.DstPort) != f.SrcPort || uint16(l.SrcPort) != f.Port {
			return Answer{}, errNotOurs
		}
		a := Answer{From: src, Seq: l.Seq, Window: l.Window}
		switch {
		case l.SYN && l.ACK && l.Ack == f.Seq+1:
			a.Kind = AnswerSYNACK
			for _, o := range l.Options {
				if o.OptionType == layers.TCPOptionKindMSS && len(o.OptionData) == 2 {
					a.MSS = binary.BigEndian.Uint16(o.OptionData)
				}
			}
		case l.SYN && l.ACK:
			a.Kind, a.Seq = AnswerStaleSYNACK, l.Ack
		case l.RST:
			a.Kind = AnswerRST
		default:
			return Answer{}, errNotOurs
		}
		return a, nil
	case *layers.UDP:
		if f.Proto != UDP || uint16(l.DstPort) != f.SrcPort || uint16(l.SrcPort) != f.Port {
			return Answer{}, errNotOurs
		}
		return Answer{Kind: AnswerUDP, From: src, Payload: append([]byte(nil), l.Payload...)}, nil
	}
	if l := pkt.Layer(layers.LayerTypeICMPv4); l != nil {
		ic := l.(*layers.ICMPv4)
		t := ic.TypeCode.Type()
		if t != layers.ICMPv4TypeDestinationUnreachable {
			return Answer{}, errNotOurs
		}
		if !f.quotes(ic.Payload, layers.LayerTypeIPv4) {
			return Answer{}, errNotOurs
		}
		return Answer{Kind: AnswerICMP, From: src, ICMPType: t, ICMPCode: ic.TypeCode.Code()}, nil
	}
	if l := pkt.Layer(layers.LayerTypeICMPv6); l != nil {
		ic := l.(*layers.ICMPv6)
		t := ic.TypeCode.Type()
		if t != layers.ICMPv6TypeDestinationUnreachable && t != layers.ICMPv6TypePacketTooBig {
			return Answer{}, errNotOurs
		}
		// The ICMPv6 error body starts with 4 unused (or MTU) bytes.
		if len(ic.Payload) < 4 || !f.quotes(ic.Payload[4:], layers.LayerTypeIPv6) {
			return Answer{}, errNotOurs
		}
		return Answer{Kind: AnswerICMP, From: src, ICMPType: t, ICMPCode: ic.TypeCode.Code()}, nil
	}
	return Answer{}, errNotOurs
}

// quotes reports whether an ICMP error's quoted packet is ours: to the VIP
// from our source port.
func (f *Flow) quotes(b []byte, first gopacket.LayerType) bool {
	q := gopacket.NewPacket(b, first, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	var dst netip.Addr
	switch ip := q.NetworkLayer().(type) {
	case *layers.IPv4:
		dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
	case *layers.IPv6:
		dst, _ = netip.AddrFromSlice(ip.DstIP)
	default:
		return false
	}
	if dst != f.VIP {
		return false
	}
	// The quote may be truncated to 8 bytes of transport header: read the
	// source port from the raw bytes rather than a fully decoded layer.
	tl := q.NetworkLayer().LayerPayload()
	return len(tl) >= 4 && binary.BigEndian.Uint16(tl) == f.SrcPort && binary.BigEndian.Uint16(tl[2:]) == f.Port
}
