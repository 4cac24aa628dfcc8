package tunnel

// Header sizes, bytes.
const (
	ipv4Header = 20
	ipv6Header = 40
	udpHeader  = 8
	// gueHeader is GUE's base header (variant 0, no optional fields): IPVS
	// and Katran send exactly that.
	gueHeader = 4
	tcpHeader = 20
)

// Overhead is what the director's encapsulation adds to each client packet:
// the outer IP header (IPv4 20, IPv6 40), plus UDP 8 and GUE 4 for GUE.
//
//	IPIP, IPv4 outer: 20     GUE, IPv4 outer: 20+8+4 = 32
//	IPIP, IPv6 outer: 40     GUE, IPv6 outer: 40+8+4 = 52
//
// The director does not fragment what it encapsulates (IPVS answers an
// oversized DF packet with ICMP "fragmentation needed" to the client, which a
// filtering firewall may eat; Katran does not fragment either). So a client segment
// that fills a 1500-byte path MTU no longer fits the director -> real server
// path once wrapped.
func Overhead(encap Encap, ipv6 bool) int {
	n := ipv4Header
	if ipv6 {
		n = ipv6Header
	}
	if encap == EncapGUE {
		n += udpHeader + gueHeader
	}
	return n
}

// DefaultMSS is the largest TCP MSS whose segments still fit, encapsulated,
// into ifaceMTU (the MTU of the path between director and real server, by
// default the real server's LB-facing NIC): MTU - Overhead - inner IP header
// (20, IPv6 40) - TCP header (20). Inner and outer headers are taken to be of
// the same family (tunl0 carries IPv4 in IPv4, ip6tnl0 IPv6 in IPv6).
//
//	MTU 1500: IPIP/IPv4 1440, GUE/IPv4 1428, IPIP/IPv6 1400, GUE/IPv6 1388
//
// The real server advertises it in its SYN-ACK (the MSS clamp on output,
// firewall/'s job), and the client then never sends a segment the
// encapsulation would push over the MTU. Katran's documentation asks for the
// real servers' MSS to be lowered by the encapsulation overhead (or for a
// larger MTU between load balancer and servers); Cloudflare's "Path MTU
// discovery in practice" shows why PMTU discovery is no substitute behind a
// load balancer: the ICMP "too big" reaches the load balancer or another
// server, not the one holding the connection.
// Configured as tunnel.mss, a smaller value (1400 is a common round figure)
// leaves room for further encapsulation on the way.
func DefaultMSS(ifaceMTU int, encap Encap, ipv6 bool) int {
	inner := ipv4Header
	if ipv6 {
		inner = ipv6Header
	}
	return ifaceMTU - Overhead(encap, ipv6) - inner - tcpHeader
}
