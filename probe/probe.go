// Package probe is the director's view of a DSR real server: it sends a
// client's packet (a TCP SYN, a UDP datagram) to VIP:PORT the way the director
// forwards it — to the real server's MAC (LVS-DR) or inside IPIP / GUE to its
// own address (LVS-TUN) — reads the answer on a packet socket and names what
// breaks. It changes nothing on the director: no address, route, neighbour
// entry, IPVS service or firewall rule; it needs CAP_NET_RAW only.
//
// It imports nothing of the real-server side.
package probe

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/packet"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnsutil"
)

// Config is one probe.
type Config struct {
	Target  netip.AddrPort // VIP:PORT
	Real    netip.Addr     // the real server's own address
	Encap   Encap
	Proto   Proto
	Dev     string        // L2: the interface towards the real server (default: the route's); the ARP/NDP check's
	Timeout time.Duration // default 1s
	// Payload is the UDP datagram; nil sends a DNS query for DNSName.
	Payload []byte
	DNSName string // default "." (NS): any DNS answer from the VIP counts
	// NoARPCheck skips asking who has the VIP (arp-flux).
	NoARPCheck bool
	// MTU overrides the path MTU towards the real server (default: the
	// route's MTU, else the interface's).
	MTU int
	// NetNS, when valid (not 0), is the network namespace the probe runs
	// in; default the calling thread's. Goroutines (All) move between
	// threads, so a caller that is not the whole process's namespace (a
	// test lab) says which.
	NetNS netns.NsHandle
}

// Result is a probe's outcome; its JSON is `dsr-agent probe --json`.
type Result struct {
	Verdict     Verdict       `json:"verdict"`
	Target      string        `json:"target"`
	Real        string        `json:"real"`
	Encap       string        `json:"encap"`
	Proto       string        `json:"proto"`
	Dev         string        `json:"dev,omitempty"`
	Source      string        `json:"source,omitempty"`       // the director's address the probe came from
	SourcePort  int           `json:"source_port,omitempty"`  // and its random port
	DirectorMAC string        `json:"director_mac,omitempty"` // Dev's MAC
	NextHopMAC  string        `json:"next_hop_mac,omitempty"` // the real server's (L2) or the gateway's (L3)
	RTT         time.Duration `json:"rtt_ns,omitempty"`
	MSS         int           `json:"mss,omitempty"`
	Window      int           `json:"window,omitempty"`
	MTU         int           `json:"mtu,omitempty"`
	MaxMSS      int           `json:"max_mss,omitempty"`
	From        string        `json:"from,omitempty"`   // source address of the answer
	Answer      string        `json:"answer,omitempty"` // what came back ("SYN-ACK", "RST", "ICMP type 3 code 3", ...)
	ARPAnswers  []string      `json:"arp_answers,omitempty"`
	Timeout     time.Duration `json:"timeout_ns"`
	Error       string        `json:"error,omitempty"`
	Explanation string        `json:"explanation"`
	Weight      *int          `json:"weight,omitempty"` // --weight-from
}

// ErrUsage marks bad input and missing privileges: nothing was sent.
var ErrUsage = errors.New("probe")

func usagef(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUsage}, a...)...)
}

func (c *Config) check() error {
	if !c.Target.IsValid() || c.Target.Port() == 0 {
		return usagef("VIP:PORT %q: expected an IP address and a port 1-65535", c.Target)
	}
	if !c.Real.IsValid() {
		return usagef("--real: expected the real server's IP address")
	}
	switch c.Encap.Kind {
	case L2, IPIP:
	case GUE:
		if c.Encap.Port == 0 {
			return usagef("--encap gue:PORT: expected a UDP port 1-65535")
		}
	default:
		return usagef("--encap %q: expected l2, ipip or gue:PORT", c.Encap.Kind)
	}
	if c.Encap.Kind == L2 && c.Target.Addr().Is4() != c.Real.Is4() {
		return usagef("--real %s: L2 DSR forwards the client's packet unchanged, so the real server must be of the VIP's family (%s)", c.Real, c.Target.Addr())
	}
	if c.Proto != TCP && c.Proto != UDP {
		return usagef("--proto %q: expected tcp or udp", c.Proto)
	}
	if c.Timeout <= 0 {
		c.Timeout = time.Second
	}
	return nil
}

// ParseEncap reads --encap: l2, ipip or gue:PORT.
func ParseEncap(s string) (Encap, error) {
	switch {
	case s == "" || s == "l2":
		return Encap{Kind: L2}, nil
	case s == "ipip":
		return Encap{Kind: IPIP}, nil
	case len(s) > 4 && s[:4] == "gue:":
		var p int
		if _, err := fmt.Sscanf(s[4:], "%d", &p); err != nil || p < 1 || p > 65535 || fmt.Sprint(p) != s[4:] {
			return Encap{}, usagef("--encap %q: expected gue:PORT with PORT 1-65535", s)
		}
		return Encap{Kind: GUE, Port: uint16(p)}, nil
	}
	return Encap{}, usagef("--encap %q: expected l2, ipip or gue:PORT", s)
}

// path is where and how the probe leaves the director.
type path struct {
	link    netlink.Link
	src     netip.Addr // inner source: the director's address of the VIP's family
	outer   netip.Addr // outer source (L3): the director's address towards the real server
	nextHop netip.Addr // the real server (L2, on-link L3) or the gateway
	mtu     int
}

// route asks the kernel how the director reaches the real server (a route
// lookup: nothing is added).
func route(h *netlink.Handle, c *Config) (path, error) {
	rs, err := h.RouteGet(c.Real.AsSlice())
	if err != nil || len(rs) == 0 {
		return path{}, usagef("--real %s: no route from the director: %v", c.Real, err)
	}
	r := rs[0]
	var p path
	if c.Dev != "" && c.Encap.Kind == L2 {
		l, err := h.LinkByName(c.Dev)
		if err != nil {
			return path{}, usagef("--dev %q: %v", c.Dev, err)
		}
		p.link = l
	} else {
		l, err := h.LinkByIndex(r.LinkIndex)
		if err != nil {
			return path{}, fmt.Errorf("probe: interface %d towards %s: %w", r.LinkIndex, c.Real, err)
		}
		p.link = l
	}
	if p.link.Attrs().Flags&net.FlagLoopback != 0 || r.Type == unix.RTN_LOCAL {
		return path{}, usagef("--real %s is an address of this host", c.Real)
	}
	if len(p.link.Attrs().HardwareAddr) != 6 {
		return path{}, usagef("interface %s has no Ethernet address: the probe sends Ethernet frames", p.link.Attrs().Name)
	}
	p.nextHop = c.Real
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && gw.IsValid() && !gw.IsUnspecified() {
		if c.Encap.Kind == L2 {
			return path{}, usagef("--real %s is reached via gateway %s: L2 DSR needs the real server on the director's own segment (use --encap ipip or gue:PORT)", c.Real, gw.Unmap())
		}
		p.nextHop = gw.Unmap()
	}
	vip := c.Target.Addr()
	p.outer, _ = netip.AddrFromSlice(r.Src)
	p.outer = p.outer.Unmap()
	// The route's preferred source can be the VIP itself (a director owns
	// it, often on the same NIC): a probe from the VIP to the VIP would be
	// answered to the VIP. Probe from one of the director's own addresses.
	if !p.outer.IsValid() || p.outer == vip || (c.Encap.Kind == L2 && c.Dev != "") {
		a, ok := linkAddr(h, p.link, c.Real, vip)
		if !ok {
			return path{}, usagef("interface %s has no address of %s's family (other than the VIP) to probe from", p.link.Attrs().Name, c.Real)
		}
		p.outer = a
	}
	p.src = p.outer
	if vip.Is4() != p.outer.Is4() {
		a, ok := linkAddr(h, p.link, vip, vip)
		if !ok {
			return path{}, usagef("interface %s has no address of the VIP's family (%s) to be the client", p.link.Attrs().Name, vip)
		}
		p.src = a
	}
	p.mtu = c.MTU
	if p.mtu == 0 {
		p.mtu = r.MTU
	}
	if p.mtu == 0 {
		p.mtu = p.link.Attrs().MTU
	}
	return p, nil
}

// linkAddr is a global address of like's family on link other than not,
// preferably one whose prefix contains like (the real server's subnet).
func linkAddr(h *netlink.Handle, link netlink.Link, like, not netip.Addr) (netip.Addr, bool) {
	fam := netlink.FAMILY_V4
	if like.Is6() {
		fam = netlink.FAMILY_V6
	}
	as, err := h.AddrList(link, fam)
	if err != nil {
		return netip.Addr{}, false
	}
	var first netip.Addr
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		ip = ip.Unmap()
		if !ok || a.Scope != unix.RT_SCOPE_UNIVERSE || ip == not {
			continue
		}
		ones, _ := a.Mask.Size()
		if pfx, err := ip.Prefix(ones); err == nil && pfx.Contains(like) {
			return ip, true
		}
		if !first.IsValid() {
			first = ip
		}
	}
	return first, first.IsValid()
}

// maxMSS is the largest MSS a SYN-ACK may advertise so that a full segment
// fits the path: MTU minus encapsulation minus the inner IP and TCP headers.
func maxMSS(mtu int, e Encap, outer6, inner6 bool) int {
	ip := 20
	if inner6 {
		ip = 40
	}
	return mtu - e.Overhead(outer6) - ip - 20
}

// Probe runs one probe. An error is returned only when the probe could not
// run (bad input: errors.Is(err, ErrUsage); no CAP_NET_RAW; a socket error);
// every data-path outcome is a Result.
func Probe(ctx context.Context, c Config) (*Result, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	var h *netlink.Handle
	var err error
	if c.NetNS > 0 {
		h, err = netlink.NewHandleAt(c.NetNS, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("probe: netlink: %w", err)
	}
	defer h.Close()
	p, err := route(h, &c)
	if err != nil {
		return nil, err
	}
	vip := c.Target.Addr()
	attrs := p.link.Attrs()
	res := &Result{
		Target: c.Target.String(), Real: c.Real.String(), Encap: c.Encap.String(), Proto: string(c.Proto),
		Dev: attrs.Name, Source: p.src.String(), DirectorMAC: attrs.HardwareAddr.String(),
		MTU: p.mtu, MaxMSS: maxMSS(p.mtu, c.Encap, c.Real.Is6(), vip.Is6()), Timeout: c.Timeout,
	}
	f := &Flow{
		Proto: c.Proto, Src: p.src, VIP: vip, Port: c.Target.Port(),
		SrcPort: ports.take(), Seq: rand.Uint32(),
		Real: c.Real, OuterSrc: p.outer, Encap: c.Encap, GUESport: uint16(32768 + rand.N(28232)),
		SrcMAC: attrs.HardwareAddr,
	}
	defer ports.give(f.SrcPort)
	res.SourcePort = int(f.SrcPort)
	f.MSS = uint16(min(max(res.MaxMSS, 536), 65495))
	prog, err := filter(f.SrcPort)
	if err != nil {
		return nil, err
	}
	ifi := &net.Interface{Index: attrs.Index, Name: attrs.Name, HardwareAddr: attrs.HardwareAddr, MTU: attrs.MTU}
	var conn *packet.Conn
	listen := func() (err error) {
		conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: prog})
		return err
	}
	if c.NetNS > 0 {
		err = netnsutil.Within(c.NetNS, listen)
	} else {
		err = listen()
	}
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, usagef("a packet socket on %s needs CAP_NET_RAW: %v", attrs.Name, err)
		}
		return nil, fmt.Errorf("probe: packet socket on %s: %w", attrs.Name, err)
	}
	// Closing a packet socket waits for an RCU grace period in the kernel
	// (packet_release: synchronize_net), ~10-20 ms: the verdict does not
	// wait for it. Concurrent closes share grace periods.
	defer func() { go conn.Close() }()
	if err := ignoreOutgoing(conn); err != nil {
		return nil, fmt.Errorf("probe: packet socket on %s: %w", attrs.Name, err)
	}
	deadline := time.Now().Add(c.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	s := &session{conn: conn, f: f, res: res, buf: make([]byte, 65536)}
	// The next hop's MAC: the kernel's neighbour table, else our own ARP /
	// NDP exchange (the kernel keeps no entry from an answer it did not ask
	// for, so the table stays as it was).
	f.DstMAC = neighMAC(h, attrs.Index, p.nextHop)
	if f.DstMAC == nil {
		mac, err := s.resolve(p.nextHop, deadline, retransmit(c.Timeout))
		if err != nil {
			return nil, err
		}
		if mac == nil {
			res.Verdict = Timeout
			res.Answer = "no ARP/NDP answer for " + p.nextHop.String()
			res.Explanation = fmt.Sprintf("timeout: %s (next hop of %s) did not answer ARP/NDP on %s within %s", p.nextHop, c.Real, attrs.Name, c.Timeout)
			return res, nil
		}
		f.DstMAC = mac
	}
	res.NextHopMAC = f.DstMAC.String()

	// Who has the VIP? Only for the real server's own segment (L2), or on
	// --dev when given for L3.
	arpCheck := !c.NoARPCheck && (c.Encap.Kind == L2 || c.Dev != "")
	if arpCheck {
		fr, err := solicitation(f.SrcMAC, p.src, vip)
		if err != nil {
			return nil, err
		}
		if err := s.send(fr); err != nil {
			return nil, err
		}
	}
	var fr []byte
	if c.Proto == TCP {
		fr, err = f.SYN()
	} else {
		payload := c.Payload
		if payload == nil {
			payload, err = dnsQuery(c.DNSName)
			if err != nil {
				return nil, err
			}
		}
		fr, err = f.Datagram(payload)
	}
	if err != nil {
		return nil, err
	}
	ans, err := s.await(deadline, fr, retransmit(c.Timeout), arpCheck, vip)
	if err != nil {
		return nil, err
	}
	s.judge(ans)
	return res, nil
}

// portSet hands out source ports no other probe of this process is using:
// two concurrent probes (--all) from the same port to the same VIP:PORT would
// be one flow to the real server, and the second SYN would meet the first's
// half-open connection.
type portSet struct {
	mu   sync.Mutex
	used map[uint16]bool
}

var ports = &portSet{used: map[uint16]bool{}}

func (p *portSet) take() uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		// The kernel's default ephemeral range (net.ipv4.ip_local_port_range).
		port := uint16(32768 + rand.N(28232))
		if !p.used[port] {
			p.used[port] = true
			return port
		}
	}
}

func (p *portSet) give(port uint16) {
	p.mu.Lock()
	delete(p.used, port)
	p.mu.Unlock()
}

// dnsQuery is a recursion-desired query for name (default ". NS"): any DNS
// answer from the VIP shows the service answers on it.
func dnsQuery(name string) ([]byte, error) {
	m := new(dns.Msg)
	qt := dns.TypeA
	if name == "" {
		name, qt = ".", dns.TypeNS
	}
	m.SetQuestion(dns.Fqdn(name), qt)
	m.Id = dns.Id()
	b, err := m.Pack()
	if err != nil {
		return nil, usagef("DNS query for %q: %v", name, err)
	}
	return b, nil
}

func ignoreOutgoing(c *packet.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		// Our own frames would otherwise be read back (ETH_P_ALL sees
		// outgoing packets too).
		serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("PACKET_IGNORE_OUTGOING: %w", serr)
	}
	return nil
}

// capture, when set (tests), sees every frame the probe sends ("sent") and
// every answer it reads ("answer", "neigh") together with the flow.
var capture func(kind string, f *Flow, frame []byte)

type session struct {
	conn *packet.Conn
	f    *Flow
	res  *Result
	buf  []byte
}

func (s *session) send(frame []byte) error {
	if capture != nil {
		capture("sent", s.f, frame)
	}
	dst := &packet.Addr{HardwareAddr: net.HardwareAddr(frame[0:6])}
	if _, err := s.conn.WriteTo(frame, dst); err != nil {
		return fmt.Errorf("probe: send on %s: %w", s.res.Dev, err)
	}
	return nil
}

// read returns the next frame, or nil at the deadline.
func (s *session) read(deadline time.Time) ([]byte, error) {
	if err := s.conn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	n, _, err := s.conn.ReadFrom(s.buf)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, nil
		}
		return nil, fmt.Errorf("probe: read on %s: %w", s.res.Dev, err)
	}
	return s.buf[:n], nil
}

// retransmit is how often an unanswered solicitation or probe packet is
// sent again (with the same port and sequence number, as a TCP SYN
// retransmission is): three tries within the timeout, so one lost frame is
// not a verdict.
func retransmit(timeout time.Duration) time.Duration { return max(timeout/3, time.Millisecond) }

// resolve asks who has a (ARP / NDP) and returns the MAC it answers with, or
// nil at the deadline.
func (s *session) resolve(a netip.Addr, deadline time.Time, every time.Duration) (net.HardwareAddr, error) {
	fr, err := solicitation(s.f.SrcMAC, s.f.OuterSrc, a)
	if err != nil {
		return nil, err
	}
	for {
		if err := s.send(fr); err != nil {
			return nil, err
		}
		next := time.Now().Add(every)
		for {
			b, err := s.read(minTime(deadline, next))
			if err != nil {
				return nil, err
			}
			if b == nil {
				if time.Now().Before(deadline) {
					break
				}
				return nil, nil
			}
			if na, ok := parseNeighAnswer(b); ok && na.target == a {
				return slices.Clone(na.mac), nil
			}
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// arpGrace is how long the probe keeps listening for ARP/NDP answers about
// the VIP after the data path answered: the who-has went out before the
// probe packet, and a real server answers ARP at least as fast as TCP, so a
// flux answer is normally in before the SYN-ACK; the grace covers reordering.
func arpGrace(rtt time.Duration) time.Duration {
	return max(2*rtt, 2*time.Millisecond)
}

// await sends the probe packet and reads until the data path answers (plus
// arpGrace when the ARP check runs) or the deadline passes, sending the
// packet again every so often while nothing came back. It answers a
// SYN-ACK with an RST at once. The RTT is measured from the last send.
func (s *session) await(deadline time.Time, probeFrame []byte, every time.Duration, arpCheck bool, vip netip.Addr) (*Answer, error) {
	var first *Answer
	seen := map[string]bool{}
	var sent, next time.Time
	for {
		if first == nil && !time.Now().Before(next) {
			sent = time.Now()
			if err := s.send(probeFrame); err != nil {
				return nil, err
			}
			next = sent.Add(every)
		}
		until := deadline
		if first == nil {
			until = minTime(deadline, next)
		}
		b, err := s.read(until)
		if err != nil {
			return nil, err
		}
		if b == nil {
			if !time.Now().Before(deadline) {
				return first, nil
			}
			continue
		}
		now := time.Now()
		if arpCheck {
			if na, ok := parseNeighAnswer(b); ok {
				if capture != nil && na.target == vip {
					capture("neigh", s.f, b)
				}
				if na.target == vip && na.mac.String() != s.res.DirectorMAC && !seen[na.mac.String()] {
					seen[na.mac.String()] = true
					s.res.ARPAnswers = append(s.res.ARPAnswers, na.mac.String())
				}
				continue
			}
		}
		if first != nil {
			continue
		}
		a, err := s.f.Parse(b)
		if err != nil {
			continue
		}
		if a.Kind == AnswerStaleSYNACK {
			// Clear the real server's half-open connection of an earlier
			// flow on these ports and send our SYN again at once.
			rst, err := s.f.RSTSeq(a.Seq)
			if err != nil {
				return nil, err
			}
			if err := s.send(rst); err != nil {
				return nil, err
			}
			next = time.Time{}
			continue
		}
		first = &a
		s.res.RTT = now.Sub(sent)
		if capture != nil {
			capture("answer", s.f, b)
		}
		if a.Kind == AnswerSYNACK {
			rst, err := s.f.RST()
			if err != nil {
				return nil, err
			}
			if err := s.send(rst); err != nil {
				return nil, err
			}
		}
		if !arpCheck {
			return first, nil
		}
		if d := now.Add(arpGrace(s.res.RTT)); d.Before(deadline) {
			deadline = d
		}
	}
}

// judge turns the answer (nil: none) into the verdict.
func (s *session) judge(a *Answer) {
	r, f := s.res, s.f
	switch {
	case a == nil:
		r.Verdict = Timeout
	default:
		r.From = a.From.String()
		switch a.Kind {
		case AnswerSYNACK:
			r.Answer, r.MSS, r.Window = "SYN-ACK", int(a.MSS), int(a.Window)
		case AnswerRST:
			r.Answer = "RST"
		case AnswerUDP:
			r.Answer = fmt.Sprintf("UDP %d bytes", len(a.Payload))
		case AnswerICMP:
			r.Answer = fmt.Sprintf("ICMP type %d code %d", a.ICMPType, a.ICMPCode)
		}
		switch {
		case a.Kind == AnswerICMP && f.Proto == UDP && isPortUnreachable(f.VIP.Is6(), a.ICMPType, a.ICMPCode) && a.From == f.VIP:
			// A UDP port with no socket: the kernel's own answer.
			r.Verdict = Refused
		case a.Kind == AnswerICMP:
			r.Verdict = Unreachable
		case a.From != f.VIP:
			r.Verdict = WrongSource
		case a.Kind == AnswerRST:
			r.Verdict = Refused
		case a.Kind == AnswerSYNACK && int(a.MSS) > r.MaxMSS && f.Encap.Kind != L2:
			r.Verdict = MSSTooLarge
		default:
			r.Verdict = Up
		}
	}
	if r.Verdict == Up && s.fluxFrom() {
		r.Verdict = ARPFlux
	}
	r.Explanation = r.Explain()
}

// fluxFrom reports whether an ARP/NDP answer for the VIP counts against this
// real server: on its own segment (L2) only its own MAC does, so a faulty
// neighbour never fails a healthy server; for L3 (the real server is behind
// a router) any answer on --dev does.
func (s *session) fluxFrom() bool {
	if s.f.Encap.Kind != L2 {
		return len(s.res.ARPAnswers) > 0
	}
	return slices.Contains(s.res.ARPAnswers, s.res.NextHopMAC)
}

func isPortUnreachable(v6 bool, t, c uint8) bool {
	if v6 {
		return t == 1 && c == 4
	}
	return t == 3 && c == 3
}
