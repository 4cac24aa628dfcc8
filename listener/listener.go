// Package listener reads which TCP and UDP sockets can receive a service's
// traffic, through netlink sock_diag (NETLINK_SOCK_DIAG, inet_diag): the
// listening TCP sockets and the bound, unconnected UDP sockets, IPv4 and
// IPv6. It is a read-only kernel surface: dsr-agent never changes sockets,
// it only says whether something serves each VIP port.
//
// One dump per protocol and address family, filtered by state in the
// kernel (TCP LISTEN, UDP unconnected), so the many established
// connections of a busy server are never copied out. CountEstablished
// (the agent-check weight's connections signal) dumps established TCP
// sockets, filtered by local address or port in the kernel, and copies out
// only those to the VIPs.
package listener

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/inet"
)

// Socket is one socket that can receive new traffic: a listening TCP
// socket or an unconnected UDP socket.
type Socket struct {
	Proto inet.Protocol
	// Addr is the bound address as the kernel has it: an IPv6 socket's
	// address stays IPv6 (:: or ::ffff:a.b.c.d for a v4-mapped bind).
	Addr netip.Addr
	Port uint16
	// V6Only is IPV6_V6ONLY on an IPv6 socket: without it a socket on ::
	// also receives IPv4.
	V6Only bool
	// Ifindex is the interface the socket is bound to (SO_BINDTODEVICE), 0
	// for any.
	Ifindex uint32
}

// String renders the socket as ss(8) would: 0.0.0.0:80/tcp, [::]:53/udp.
func (s Socket) String() string {
	out := netip.AddrPortFrom(s.Addr, s.Port).String() + "/" + string(s.Proto)
	if s.Addr.Is6() && s.Addr.IsUnspecified() && s.V6Only {
		out += " (v6only)"
	}
	if s.Ifindex != 0 {
		out += " (bound to ifindex " + strconv.Itoa(int(s.Ifindex)) + ")"
	}
	return out
}

// Wildcard reports whether the socket is bound to no particular address.
func (s Socket) Wildcard() bool { return s.Addr.IsUnspecified() }

// Receives reports whether the socket receives packets of proto sent to dst
// (the destination as the kernel sees it when the socket is looked up,
// i.e. after any NAT): same protocol and port, and the bound address is
// dst, the wildcard of dst's family, or an IPv6 wildcard without
// IPV6_V6ONLY for an IPv4 dst (and a v4-mapped bind for its IPv4 address).
// A socket bound to an interface is for the caller to judge (Ifindex).
func (s Socket) Receives(proto inet.Protocol, dst netip.AddrPort) bool {
	if s.Proto != proto || s.Port != dst.Port() {
		return false
	}
	a, want := s.Addr, dst.Addr().Unmap()
	switch {
	case a.Is4():
		return want.Is4() && (a.IsUnspecified() || a == want)
	case want.Is6():
		return a.IsUnspecified() || a == want
	case s.V6Only: // an IPv4 destination and an IPv6-only socket
		return false
	case a.IsUnspecified():
		return true
	default:
		return a.Is4In6() && a.Unmap() == want
	}
}

// Diag is a sock_diag netlink socket in one network namespace.
type Diag struct {
	conn *netlink.Conn
}

// Open opens a sock_diag socket in the network namespace nsFD (-1: the
// calling thread's own). Reading sockets needs no privileges.
func Open(nsFD int) (*Diag, error) {
	cfg := &netlink.Config{}
	if nsFD >= 0 {
		cfg.NetNS = nsFD
	}
	c, err := netlink.Dial(unix.NETLINK_SOCK_DIAG, cfg)
	if err != nil {
		return nil, fmt.Errorf("open sock_diag: %w", err)
	}
	return &Diag{conn: c}, nil
}

// Close releases the socket.
func (d *Diag) Close() error { return d.conn.Close() }

// Kernel states (include/net/tcp_states.h): a listening TCP socket, and an
// unconnected UDP socket (UDP uses TCP_CLOSE for it, TCP_ESTABLISHED once
// connected).
const (
	tcpListen = 10
	tcpClose  = 7
)

// inet_diag attribute for IPV6_V6ONLY (include/uapi/linux/inet_diag.h).
const inetDiagSKV6Only = 11

const (
	sizeofReq = 56 // struct inet_diag_req_v2
	sizeofMsg = 72 // struct inet_diag_msg
)

// maxRetries bounds the repeats of a dump the kernel marks interrupted.
const maxRetries = 5

// List dumps the sockets of protos that can receive new traffic, IPv4 (when
// v4) and IPv6: one dump per protocol and family.
func (d *Diag) List(protos []inet.Protocol, v4 bool) ([]Socket, error) {
	var out []Socket
	fams := []uint8{unix.AF_INET6}
	if v4 {
		fams = []uint8{unix.AF_INET, unix.AF_INET6}
	}
	for _, p := range protos {
		for _, fam := range fams {
			socks, err := d.dump(p, fam)
			if err != nil {
				return nil, err
			}
			out = append(out, socks...)
		}
	}
	return out, nil
}

var errInterrupted = errors.New("dump interrupted")

func (d *Diag) dump(p inet.Protocol, family uint8) ([]Socket, error) {
	for i := 0; ; i++ {
		socks, err := d.dumpOnce(p, family)
		if !errors.Is(err, errInterrupted) || i == maxRetries {
			return socks, err
		}
	}
}

func (d *Diag) dumpOnce(p inet.Protocol, family uint8) ([]Socket, error) {
	state := uint32(1) << tcpListen
	if p == inet.UDP {
		state = 1 << tcpClose
	}
	req := make([]byte, sizeofReq)
	req[0], req[1] = family, p.Number()
	binary.NativeEndian.PutUint32(req[4:], state)
	msgs, err := d.conn.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.SOCK_DIAG_BY_FAMILY, Flags: netlink.Request | netlink.Dump},
		Data:   req,
	})
	fam := "ipv4"
	if family == unix.AF_INET6 {
		fam = "ipv6"
	}
	if err != nil {
		return nil, fmt.Errorf("sock_diag dump %s %s: %w", p, fam, err)
	}
	var out []Socket
	interrupted := false
	for _, m := range msgs {
		if m.Header.Flags&netlink.DumpInterrupted != 0 {
			interrupted = true
		}
		s, ok := parse(p, m.Data)
		if ok {
			out = append(out, s)
		}
	}
	if interrupted {
		return out, fmt.Errorf("sock_diag dump %s %s: %w", p, fam, errInterrupted)
	}
	return out, nil
}

// parse decodes one struct inet_diag_msg and its attributes.
func parse(p inet.Protocol, b []byte) (Socket, bool) {
	if len(b) < sizeofMsg {
		return Socket{}, false
	}
	s := Socket{Proto: p, Port: binary.BigEndian.Uint16(b[4:6]), Ifindex: binary.NativeEndian.Uint32(b[40:44])}
	switch b[0] {
	case unix.AF_INET:
		s.Addr = netip.AddrFrom4([4]byte(b[8:12]))
	case unix.AF_INET6:
		s.Addr = netip.AddrFrom16([16]byte(b[8:24]))
	default:
		return Socket{}, false
	}
	if ad, err := netlink.NewAttributeDecoder(b[sizeofMsg:]); err == nil {
		for ad.Next() {
			if ad.Type() == inetDiagSKV6Only {
				s.V6Only = ad.Uint8() != 0
			}
		}
	}
	return s, true
}
