// Package ndprobe asks who has an address, by ARP or by IPv6 Neighbour
// Solicitation, from a packet socket, and reads every answer on the wire
// (not only the one the asking kernel would keep in its neighbour table):
// the one probe the DSR lab (internal/lab) and the kernel tests share.
package ndprobe

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// EthPAll is ETH_P_ALL in network byte order, as AF_PACKET wants it.
var EthPAll = htons(unix.ETH_P_ALL)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// ARPRequest is a broadcast "who has target, tell sender" from mac, padded
// to the Ethernet minimum. sender == target is a gratuitous ARP.
func ARPRequest(mac net.HardwareAddr, sender, target netip.Addr) []byte {
	f := make([]byte, 0, 60)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	f = append(f, mac...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_ARP)
	f = append(f, 0, 1, 0x08, 0x00, 6, 4, 0, 1) // Ethernet, IPv4, hlen 6, plen 4, request
	f = append(f, mac...)
	f = append(f, sender.AsSlice()...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	f = append(f, target.AsSlice()...)
	return append(f, make([]byte, 60-len(f))...)
}

// NeighbourSolicitation is a Neighbour Solicitation for target from src
// (at mac) to target's solicited-node multicast group, as a kernel sends it.
func NeighbourSolicitation(mac net.HardwareAddr, src, target netip.Addr) []byte {
	v := target.As16()
	dst := netip.AddrFrom16([16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: v[13], 14: v[14], 15: v[15]})
	icmp := append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, v[:]...)
	icmp = append(icmp, 1, 1) // option: source link-layer address, 8 bytes
	icmp = append(icmp, mac...)
	binary.BigEndian.PutUint16(icmp[2:4], ICMPv6Checksum(src, dst, icmp))
	f := []byte{0x33, 0x33, 0xff, v[13], v[14], v[15]}
	f = append(f, mac...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_IPV6)
	f = append(f, 0x60, 0, 0, 0)
	f = binary.BigEndian.AppendUint16(f, uint16(len(icmp)))
	f = append(f, unix.IPPROTO_ICMPV6, 255) // hop limit 255, as NDP requires
	f = append(f, src.AsSlice()...)
	f = append(f, dst.AsSlice()...)
	return append(f, icmp...)
}

// ICMPv6Checksum is the ICMPv6 checksum of msg (its checksum field zero)
// from src to dst (RFC 4443 2.3: over the IPv6 pseudo-header).
func ICMPv6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	b := append(src.AsSlice(), dst.AsSlice()...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
	b = append(b, 0, 0, 0, unix.IPPROTO_ICMPV6)
	b = append(b, msg...)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var s uint32
	for i := 0; i < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// Answer parses an ARP reply (addr is its sender IP) or a Neighbour
// Advertisement (addr is its target); mac is the frame's Ethernet source.
func Answer(f []byte) (addr netip.Addr, mac string, ok bool) {
	if len(f) < 14 {
		return addr, "", false
	}
	mac = net.HardwareAddr(f[6:12]).String()
	switch binary.BigEndian.Uint16(f[12:14]) {
	case unix.ETH_P_ARP:
		if len(f) >= 42 && binary.BigEndian.Uint16(f[20:22]) == 2 {
			return netip.AddrFrom4([4]byte(f[28:32])), mac, true
		}
	case unix.ETH_P_IPV6:
		if len(f) >= 14+40+24 && f[14+6] == unix.IPPROTO_ICMPV6 && f[54] == 136 {
			return netip.AddrFrom16([16]byte(f[62:78])), mac, true
		}
	}
	return addr, "", false
}

// Request parses an ARP request: its sender and target IPs and the
// Ethernet source.
func Request(f []byte) (sender, target netip.Addr, mac string, ok bool) {
	if len(f) < 42 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_ARP || binary.BigEndian.Uint16(f[20:22]) != 1 {
		return sender, target, "", false
	}
	return netip.AddrFrom4([4]byte(f[28:32])), netip.AddrFrom4([4]byte(f[38:42])), net.HardwareAddr(f[6:12]).String(), true
}
