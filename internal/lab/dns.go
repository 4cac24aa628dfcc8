package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DNS over DSR. The director balances UDP like TCP (per flow: client address
// and port), so every query from a new socket may reach another real server.
// The reply must leave the real server *from the VIP*: the client sent its
// query to the VIP, and a stub resolver (a connected UDP socket) accepts
// answers only from there. A UDP server bound to the wildcard address without
// IP_PKTINFO / IPV6_RECVPKTINFO lets the kernel pick the reply's source by
// route, which is the server's own address: the answer is dropped by the
// client. TCP has no such trap (an accepted socket is bound to the address
// the client connected to).

// DNSPort is the port clients query on the VIP; in firewalld mode it is
// redirected to DNSRedirectPort.
const (
	DNSPort         = 53
	DNSRedirectPort = 5353
)

// DNSResult is one query sent to the VIP.
type DNSResult struct {
	Local  netip.AddrPort // the client's source (the flow the director hashed)
	Server string         // first word of the TXT answer: the real server's name
	TXT    string
	Took   time.Duration
	Err    error
}

// QueryDNS sends n TXT queries for WhoamiName to server, each from its own
// connected UDP socket in the client namespace (a new source port: a new flow
// for the director's hash), all at once, and waits up to timeout for the
// answers. A connected socket, like a stub resolver, only accepts datagrams
// from the address it sent to: an answer from any other source (the real
// server's own address instead of the VIP) never reaches it and the query
// times out.
func (l *Lab) QueryDNS(ctx context.Context, server netip.AddrPort, n int, timeout time.Duration) ([]DNSResult, error) {
	conns := make([]*net.UDPConn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	err := l.Client.Do(func() error {
		for range n {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
			if err != nil {
				return fmt.Errorf("dial %s: %w", server, err)
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	res := make([]DNSResult, n)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() { res[i] = queryOne(c, deadline) })
	}
	wg.Wait()
	return res, ctx.Err()
}

func queryOne(c *net.UDPConn, deadline time.Time) DNSResult {
	r := DNSResult{Local: c.LocalAddr().(*net.UDPAddr).AddrPort()}
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	q, err := dnsQuery(id, WhoamiName, dnsTypeTXT)
	if err != nil {
		r.Err = err
		return r
	}
	_ = c.SetDeadline(deadline)
	start := time.Now()
	if _, err := c.Write(q); err != nil {
		r.Err = fmt.Errorf("send query: %w", err)
		return r
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			r.Err = fmt.Errorf("port unreachable: %w", err)
		case isTimeout(err):
			r.Err = errors.New("no answer from the VIP")
		default:
			r.Err = err
		}
		return r
	}
	txts, err := parseTXTAnswer(buf[:n], id, WhoamiName)
	if err != nil {
		r.Err = err // a malformed or foreign answer is a failure, not noise
		return r
	}
	r.Took = time.Since(start)
	r.TXT = strings.Join(txts, " ")
	if f := strings.Fields(r.TXT); len(f) > 0 {
		r.Server = f[0]
	}
	return r
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// whoami is the TXT text a lab DNS server answers with: its name first.
func whoami(rs *Node, software string) string {
	return fmt.Sprintf("%s %s %s", rs.Name, rs.IP4, software)
}

// ServeDNS runs the lab's own tiny DNS server on rs: UDP port port on the
// IPv4 and IPv6 wildcard addresses, answering WhoamiName TXT with the
// server's name (software "go-pktinfo" or "go-naive"). With pktinfo it does
// what a UDP server on a DSR real server must do: learn each query's
// destination address (IP_PKTINFO, IPV6_RECVPKTINFO) and send the answer from
// it, i.e. from the VIP. Without, it is the classic mistake: the kernel picks
// the source by route, the server's own address, and clients drop the answer.
// It stops when ctx ends.
func (l *Lab) ServeDNS(ctx context.Context, rs *Node, port int, pktinfo bool) error {
	sw := "go-naive"
	if pktinfo {
		sw = "go-pktinfo"
	}
	txt := whoami(rs, sw)
	var conns []*net.UDPConn
	err := rs.Do(func() error {
		for _, network := range []string{"udp4", "udp6"} {
			// "udp6" on the wildcard is IPv6-only in Go, so both sockets coexist.
			c, err := net.ListenUDP(network, &net.UDPAddr{Port: port})
			if err != nil {
				return fmt.Errorf("listen %s port %d: %w", network, port, err)
			}
			conns = append(conns, c)
			if !pktinfo {
				continue
			}
			level, opt := unix.IPPROTO_IP, unix.IP_PKTINFO
			if network == "udp6" {
				level, opt = unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO
			}
			if err := setsockoptInt(c, level, opt, 1); err != nil {
				return fmt.Errorf("%s port %d: enable pktinfo: %w", network, port, err)
			}
		}
		return nil
	})
	if err != nil {
		for _, c := range conns {
			c.Close()
		}
		return fmt.Errorf("%s: dns server: %w", rs.Name, err)
	}
	for _, c := range conns {
		go serveDNSConn(c, txt, pktinfo)
	}
	go func() {
		<-ctx.Done()
		for _, c := range conns {
			c.Close()
		}
	}()
	return nil
}

func setsockoptInt(c *net.UDPConn, level, opt, v int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, v) }); err != nil {
		return err
	}
	return serr
}

func serveDNSConn(c *net.UDPConn, txt string, pktinfo bool) {
	buf := make([]byte, 1500)
	oob := make([]byte, 256)
	for {
		n, oobn, _, from, err := c.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		q, err := parseQuery(buf[:n])
		if err != nil {
			continue
		}
		ans := ""
		if strings.EqualFold(q.Name, WhoamiName) && q.Type == dnsTypeTXT {
			ans = txt
		}
		resp := txtAnswer(buf[:n], q, ans)
		var reply []byte
		if pktinfo {
			reply = replyPktinfo(oob[:oobn])
		}
		_, _, _ = c.WriteMsgUDPAddrPort(resp, reply, from)
	}
}

// replyPktinfo turns the IP_PKTINFO / IPV6_PKTINFO of a received datagram
// into the control message that makes the reply leave from the address the
// datagram was sent to (the VIP).
func replyPktinfo(oob []byte) []byte {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= 12:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }:
			// addr is the header's destination.
			var pi unix.Inet4Pktinfo
			copy(pi.Spec_dst[:], m.Data[8:12])
			return unix.PktInfo4(&pi)
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= 16:
			var pi unix.Inet6Pktinfo
			copy(pi.Addr[:], m.Data[:16])
			return unix.PktInfo6(&pi)
		}
	}
	return nil
}

// queryFrom sends one query from a new socket in the calling thread's
// namespace (call it inside Node.Do).
func queryFrom(server netip.AddrPort, timeout time.Duration) DNSResult {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		return DNSResult{Err: fmt.Errorf("dial %s: %w", server, err)}
	}
	defer c.Close()
	return queryOne(c, time.Now().Add(timeout))
}
