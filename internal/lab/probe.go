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

// ethPAll is ETH_P_ALL in network byte order, as AF_PACKET wants it.
var ethPAll = htons(unix.ETH_P_ALL)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// NewProber opens the packet socket in the client namespace and starts
// counting answers. Close it when done.
func (l *Lab) NewProber() (*Prober, error) {
	nic, err := l.Client.Link()
	if err != nil {
		return nil, err
	}
	p := &Prober{lab: l, ifindex: nic.Attrs().Index, done: make(chan struct{}),
		arp: map[string]int{}, na: map[string]int{}, udp: map[UDPSource]int{}}
	err = l.Client.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(ethPAll))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		p.fd = fd
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if err := unix.Bind(p.fd, &unix.SockaddrLinklayer{Protocol: ethPAll, Ifindex: p.ifindex}); err != nil {
		unix.Close(p.fd)
		return nil, fmt.Errorf("client: bind packet socket to %s: %w", NIC, err)
	}
	// A large buffer so bursts of answers are not dropped (drops are checked
	// in Check: a lost frame could hide the one bad answer we look for).
	_ = unix.SetsockoptInt(p.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	// A receive timeout lets Close stop the reader without closing the fd
	// under a blocked recvfrom.
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(p.fd)
		return nil, fmt.Errorf("client: packet socket timeout: %w", err)
	}
	// Reset the drop counter: frames queued before bind do not count.
	_, _ = unix.GetsockoptTpacketStats(p.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	go p.read()
	return p, nil
}

func (p *Prober) read() {
	defer close(p.done)
	buf := make([]byte, 65536)
	vip4, vip6 := VIP4.As4(), VIP6.As16()
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
		switch binary.BigEndian.Uint16(f[12:14]) {
		case unix.ETH_P_ARP:
			// op=reply, sender protocol address = VIP
			if len(f) >= 42 && binary.BigEndian.Uint16(f[20:22]) == 2 && [4]byte(f[28:32]) == vip4 {
				p.mu.Lock()
				p.arp[src]++
				p.mu.Unlock()
			}
		case unix.ETH_P_IPV6:
			// next header ICMPv6, type 136 (Neighbour Advertisement), target = VIP
			if len(f) >= 14+40+24 && f[14+6] == unix.IPPROTO_ICMPV6 && f[54] == 136 && [16]byte(f[62:78]) == vip6 {
				p.mu.Lock()
				p.na[src]++
				p.mu.Unlock()
			}
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
	c := p.lab.Client
	f := make([]byte, 0, 60)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	f = append(f, c.MAC...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_ARP)
	f = append(f, 0, 1, 0x08, 0x00, 6, 4, 0, 1) // Ethernet, IPv4, hlen 6, plen 4, request
	f = append(f, c.MAC...)
	f = append(f, c.IP4.AsSlice()...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	f = append(f, VIP4.AsSlice()...)
	f = append(f, make([]byte, 60-len(f))...) // pad to the Ethernet minimum
	if err := p.send(f); err != nil {
		return err
	}
	p.mu.Lock()
	p.sentARP++
	p.mu.Unlock()
	return nil
}

// SendNS sends one Neighbour Solicitation for VIP6 to its solicited-node
// multicast group, as the client's kernel would.
func (p *Prober) SendNS() error {
	c := p.lab.Client
	v := VIP6.As16()
	dst := netip.AddrFrom16([16]byte{0xff, 0x02, 10: 0, 11: 1, 12: 0xff, 13: v[13], 14: v[14], 15: v[15]})
	icmp := []byte{135, 0, 0, 0, 0, 0, 0, 0}
	icmp = append(icmp, v[:]...)
	icmp = append(icmp, 1, 1) // option: source link-layer address, 8 bytes
	icmp = append(icmp, c.MAC...)
	sum := icmp6Checksum(c.IP6, dst, icmp)
	binary.BigEndian.PutUint16(icmp[2:4], sum)

	f := []byte{0x33, 0x33, 0xff, v[13], v[14], v[15]}
	f = append(f, c.MAC...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_IPV6)
	f = append(f, 0x60, 0, 0, 0)
	f = binary.BigEndian.AppendUint16(f, uint16(len(icmp)))
	f = append(f, unix.IPPROTO_ICMPV6, 255) // hop limit 255, as NDP requires
	f = append(f, c.IP6.AsSlice()...)
	f = append(f, dst.AsSlice()...)
	f = append(f, icmp...)
	if err := p.send(f); err != nil {
		return err
	}
	p.mu.Lock()
	p.sentNS++
	p.mu.Unlock()
	return nil
}

func icmp6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var b []byte
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
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

func (p *Prober) send(frame []byte) error {
	to := &unix.SockaddrLinklayer{Ifindex: p.ifindex, Halen: 6, Protocol: ethPAll}
	copy(to.Addr[:], frame[:6])
	for {
		err := unix.Sendto(p.fd, frame, 0, to)
		// ENOBUFS: the NIC queue is momentarily full; wait and retry.
		if errors.Is(err, unix.ENOBUFS) {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("client: send probe: %w", err)
		}
		return nil
	}
}

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
