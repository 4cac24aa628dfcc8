package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/ndprobe"
)

// Prober sends ARP requests and IPv6 Neighbour Solicitations for the VIPs
// from the client's NIC and counts every answer by its source MAC. It reads
// with an AF_PACKET socket in the client namespace, so it sees every answer
// on the wire, not only the one the client's kernel kept in its neighbour
// table: the difference between "one answer" and "several answers, the last
// one won" is exactly what ARP flux is.
type Prober struct {
	lab     *Lab
	fd      int
	ifindex int
	probe   *ndprobe.Probe
	stop    atomic.Bool
	done    chan struct{}

	mu       sync.Mutex
	arp, na  map[string]int // source MAC → answers for VIP4 / VIP6
	udp      map[UDPSource]int
	sentARP  int
	sentNS   int
	firstErr error
	drops    uint32
}

// NewProber opens the packet socket in the client namespace and starts
// counting answers. Close it when done.
func (l *Lab) NewProber() (*Prober, error) {
	nic, err := l.Client.Link()
	if err != nil {
		return nil, err
	}
	p := &Prober{lab: l, ifindex: nic.Attrs().Index, done: make(chan struct{}),
		arp: map[string]int{}, na: map[string]int{}, udp: map[UDPSource]int{}}
	// A receive timeout lets Close stop the reader without closing the fd
	// under a blocked recvfrom.
	err = l.Client.Do(func() error {
		fd, err := ndprobe.Socket(p.ifindex, 100*time.Millisecond)
		p.fd = fd
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", NIC, err)
	}
	p.probe = &ndprobe.Probe{FD: p.fd, Ifindex: p.ifindex, MAC: l.Client.MAC, IP4: l.Client.IP4, IP6: l.Client.IP6}
	// A large buffer so bursts of answers are not dropped (drops are checked
	// in Check: a lost frame could hide the one bad answer we look for).
	_ = unix.SetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	// Reset the drop counter: frames queued before bind do not count.
	_, _ = unix.GetsockoptTpacketStats(p.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	go p.read()
	return p, nil
}

func (p *Prober) read() {
	defer close(p.done)
	buf := make([]byte, 65536)
	for !p.stop.Load() {
		n, from, err := unix.Recvfrom(p.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			p.mu.Lock()
			p.firstErr = fmt.Errorf("read packet socket: %w", err)
			p.mu.Unlock()
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		f := buf[:n]
		if len(f) < 14 {
			continue
		}
		src := net.HardwareAddr(f[6:12]).String()
		if addr, _, ok := ndprobe.Answer(f); ok && (addr == VIP4 || addr == VIP6 || AnyIP4.Contains(addr)) {
			p.mu.Lock()
			if addr.Is4() {
				p.arp[src]++
			} else {
				p.na[src]++
			}
			p.mu.Unlock()
			continue
		}
		switch binary.BigEndian.Uint16(f[12:14]) {
		case unix.ETH_P_IPV6:
			// UDP (no extension headers) to the client
			if len(f) >= 14+40+8 && f[14+6] == unix.IPPROTO_UDP && [16]byte(f[38:54]) == p.lab.Client.IP6.As16() {
				p.countUDP(src, netip.AddrFrom16([16]byte(f[22:38])), f[54:])
			}
		case unix.ETH_P_IP:
			// UDP to the client
			if len(f) < 14+20 {
				continue
			}
			ihl := int(f[14]&0x0f) * 4
			if f[14+9] == unix.IPPROTO_UDP && len(f) >= 14+ihl+8 && [4]byte(f[30:34]) == p.lab.Client.IP4.As4() {
				p.countUDP(src, netip.AddrFrom4([4]byte(f[26:30])), f[14+ihl:])
			}
		}
	}
}

// UDPSource is where a UDP datagram that reached the client came from, as
// seen on the wire: Ethernet source and IP source address and port.
type UDPSource struct {
	MAC  string
	Addr netip.AddrPort
}

func (p *Prober) countUDP(mac string, src netip.Addr, udp []byte) {
	k := UDPSource{MAC: mac, Addr: netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp))}
	p.mu.Lock()
	p.udp[k]++
	p.mu.Unlock()
}

// Close stops the reader and closes the socket.
func (p *Prober) Close() {
	if p.stop.Swap(true) {
		return
	}
	<-p.done
	unix.Close(p.fd)
}

// SendARP broadcasts one ARP request "who has VIP4, tell client".
func (p *Prober) SendARP() error {
	if err := p.probe.Send(p.probe.Request(VIP4)); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	p.mu.Lock()
	p.sentARP++
	p.mu.Unlock()
	return nil
}

// SendARPFor broadcasts one ARP request "who has a, tell client" (an
// address of AnyIP4; answers are counted with VIP4's).
func (p *Prober) SendARPFor(a netip.Addr) error {
	if err := p.probe.Send(p.probe.Request(a)); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	p.mu.Lock()
	p.sentARP++
	p.mu.Unlock()
	return nil
}

// SendNS sends one Neighbour Solicitation for VIP6 to its solicited-node
// multicast group, as the client's kernel would.
func (p *Prober) SendNS() error {
	if err := p.probe.Send(p.probe.Request(VIP6)); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	p.mu.Lock()
	p.sentNS++
	p.mu.Unlock()
	return nil
}

// icmp6Checksum is ndprobe's (lab_test.go checks it here).
var icmp6Checksum = ndprobe.ICMPv6Checksum

// Blast sends an ARP request and/or an NS every interval until ctx ends.
// Timers cannot wake a goroutine much more often than every ~100µs, so short
// intervals are paced by checking the clock between sends instead: a window
// in which a real server answers is caught if it lasts about one interval.
func (p *Prober) Blast(ctx context.Context, interval time.Duration, arp, ns bool) error {
	next := time.Now()
	for {
		if arp {
			if err := p.SendARP(); err != nil {
				return err
			}
		}
		if ns {
			if err := p.SendNS(); err != nil {
				return err
			}
		}
		next = next.Add(interval)
		for {
			if ctx.Err() != nil {
				return nil
			}
			d := time.Until(next)
			if d <= 0 {
				break
			}
			if d > time.Millisecond {
				time.Sleep(d)
			} else {
				runtime.Gosched()
			}
		}
	}
}

// Answers is what the prober saw.
type Answers struct {
	ARP, NA         map[string]int    // source MAC → number of answers
	UDP             map[UDPSource]int // every UDP datagram that reached the client
	SentARP, SentNS int
	Drops           uint32 // frames the kernel dropped before we read them
}

// Answers returns a snapshot of the counts. Give in-flight answers a moment
// to arrive before calling it.
func (p *Prober) Answers() (Answers, error) {
	st, err := unix.GetsockoptTpacketStats(p.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	p.mu.Lock()
	defer p.mu.Unlock()
	a := Answers{ARP: maps.Clone(p.arp), NA: maps.Clone(p.na), UDP: maps.Clone(p.udp), SentARP: p.sentARP, SentNS: p.sentNS}
	if err == nil {
		// PACKET_STATISTICS resets on read: accumulate.
		p.drops += st.Drops
	}
	a.Drops = p.drops
	if p.firstErr != nil {
		return a, p.firstErr
	}
	if err != nil {
		return a, fmt.Errorf("client: packet socket statistics: %w", err)
	}
	return a, nil
}
