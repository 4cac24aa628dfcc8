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
