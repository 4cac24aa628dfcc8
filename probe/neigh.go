package probe

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
)

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// neighMAC returns the link-layer address the director's kernel already
// knows for a on link ifindex, if the entry is usable. Reading the table
// changes nothing; a missing entry is resolved by solicit instead of by the
// kernel, so the probe never creates one.
func neighMAC(h *netlink.Handle, ifindex int, a netip.Addr) net.HardwareAddr {
	fam := netlink.FAMILY_V4
	if a.Is6() {
		fam = netlink.FAMILY_V6
	}
	ns, err := h.NeighList(ifindex, fam)
	if err != nil {
		return nil
	}
	const usable = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT
	for _, n := range ns {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || ip.Unmap() != a || n.State&usable == 0 || len(n.HardwareAddr) != 6 {
			continue
		}
		return n.HardwareAddr
	}
	return nil
}

// solicitation is the frame asking who has target: an ARP request (IPv4) or
// a Neighbour Solicitation to target's solicited-node group (IPv6), sent
// from the director's own address and MAC.
func solicitation(srcMAC net.HardwareAddr, src, target netip.Addr) ([]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	if target.Is4() {
		p, err := arp.NewPacket(arp.OperationRequest, srcMAC, src, net.HardwareAddr{0, 0, 0, 0, 0, 0}, target)
		if err != nil {
			return nil, fmt.Errorf("arp request for %s: %w", target, err)
		}
		b, err := p.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("arp request for %s: %w", target, err)
		}
		eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: broadcast, EthernetType: layers.EthernetTypeARP}
		if err := gopacket.SerializeLayers(buf, serializeOpts, eth, gopacket.Payload(b)); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	group, err := ndp.SolicitedNodeMulticast(target)
	if err != nil {
		return nil, fmt.Errorf("solicited-node group of %s: %w", target, err)
	}
	ns := &ndp.NeighborSolicitation{TargetAddress: target,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: srcMAC}}}
	body, err := ndp.MarshalMessageChecksum(ns, src, group)
	if err != nil {
		return nil, fmt.Errorf("neighbour solicitation for %s: %w", target, err)
	}
	g := group.As16()
	dst := net.HardwareAddr{0x33, 0x33, g[12], g[13], g[14], g[15]}
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dst, EthernetType: layers.EthernetTypeIPv6}
	// NDP messages must carry hop limit 255 (RFC 4861 7.1.1).
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: src.AsSlice(), DstIP: group.AsSlice()}
	if err := gopacket.SerializeLayers(buf, serializeOpts, eth, ip, gopacket.Payload(body)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// neighAnswer is an ARP reply or a Neighbour Advertisement: target is the
// address it vouches for, mac the link-layer address it gives (the NA's
// target link-layer option, else the frame's source), from the frame's source.
type neighAnswer struct {
	target netip.Addr
	mac    net.HardwareAddr
	from   net.HardwareAddr
}

// parseNeighAnswer decodes an ARP reply or a Neighbour Advertisement; ok is
// false for anything else (requests, solicitations, other traffic).
func parseNeighAnswer(data []byte) (neighAnswer, bool) {
	if len(data) < 14 {
		return neighAnswer{}, false
	}
	from := net.HardwareAddr(bytes.Clone(data[6:12]))
	switch uint16(data[12])<<8 | uint16(data[13]) {
	case 0x0806:
		var p arp.Packet
		if err := p.UnmarshalBinary(data[14:]); err != nil || p.Operation != arp.OperationReply {
			return neighAnswer{}, false
		}
		return neighAnswer{target: p.SenderIP, mac: p.SenderHardwareAddr, from: from}, true
	case 0x86dd:
		pkt := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
		ip, ok := pkt.NetworkLayer().(*layers.IPv6)
		if !ok || ip.NextHeader != layers.IPProtocolICMPv6 {
			return neighAnswer{}, false
		}
		m, err := ndp.ParseMessage(ip.Payload)
		if err != nil {
			return neighAnswer{}, false
		}
		na, ok := m.(*ndp.NeighborAdvertisement)
		if !ok {
			return neighAnswer{}, false
		}
		mac := from
		for _, o := range na.Options {
			if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == ndp.Target {
				mac = l.Addr
			}
		}
		return neighAnswer{target: na.TargetAddress, mac: mac, from: from}, true
	}
	return neighAnswer{}, false
}
