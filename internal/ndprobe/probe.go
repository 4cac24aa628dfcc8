package ndprobe

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnsutil"
)

// Socket opens an AF_PACKET socket for every protocol, bound to ifindex,
// whose reads time out after timeout (so a reader can stop without closing
// the descriptor under a blocked recvfrom). A packet socket belongs to the
// network namespace it is created in: call Socket from a thread in the
// interface's namespace.
func Socket(ifindex int, timeout time.Duration) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(EthPAll))
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: EthPAll, Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind packet socket to ifindex %d: %w", ifindex, err)
	}
	tv := unix.NsecToTimeval(int64(timeout))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("packet socket timeout: %w", err)
	}
	return fd, nil
}

// Open opens a Probe on the interface ifname of the network namespace ns,
// asking as ip4 and ip6, its reads timing out after timeout. Close it when
// done.
func Open(ns netns.NsHandle, ifname string, ip4, ip6 netip.Addr, timeout time.Duration) (*Probe, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in namespace: %w", err)
	}
	defer h.Close()
	link, err := h.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", ifname, err)
	}
	p := &Probe{Ifindex: link.Attrs().Index, MAC: link.Attrs().HardwareAddr, IP4: ip4, IP6: ip6}
	err = netnsutil.Within(ns, func() error {
		p.FD, err = Socket(p.Ifindex, timeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ifname, err)
	}
	return p, nil
}

// Close closes the socket.
func (p *Probe) Close() error { return unix.Close(p.FD) }

// Probe asks from one interface: FD is a Socket bound to Ifindex, MAC, IP4
// and IP6 the interface's own (the sender of its requests).
type Probe struct {
	FD       int
	Ifindex  int
	MAC      net.HardwareAddr
	IP4, IP6 netip.Addr
}

// Request is the question for target: an ARP request for an IPv4 address,
// a Neighbour Solicitation for an IPv6 one.
func (p *Probe) Request(target netip.Addr) []byte {
	if target.Is4() {
		return ARPRequest(p.MAC, p.IP4, target)
	}
	return NeighbourSolicitation(p.MAC, p.IP6, target)
}

// Ask sends a request for target, then one for barrier (an address the
// asked host always answers at once), and returns the MACs that answered
// for target. Both requests leave from one CPU, so the asked host handles
// them in order: an immediate answer for target arrives before the
// barrier's, and the barrier's answer, not a timeout, ends the wait. linger
// keeps reading that long after the barrier, for answers the kernel delays
// (proxy_delay), and stops early at the first one.
func (p *Probe) Ask(target, barrier netip.Addr, linger time.Duration) ([]string, error) {
	return p.exchange([][]byte{p.Request(target), p.Request(barrier)}, target, barrier, linger)
}

// AskGratuitous sends a director's gratuitous ARP for vip (a request from
// the VIP for the VIP) and returns the MACs that answered it.
func (p *Probe) AskGratuitous(vip, barrier netip.Addr) ([]string, error) {
	return p.exchange([][]byte{ARPRequest(p.MAC, vip, vip), p.Request(barrier)}, vip, barrier, 0)
}

func (p *Probe) exchange(frames [][]byte, target, barrier netip.Addr, linger time.Duration) ([]string, error) {
	p.Drain()
	if err := p.sendOnOneCPU(frames); err != nil {
		return nil, err
	}
	var got []string
	var barrierAt time.Time
	done := func() bool {
		return !barrierAt.IsZero() && (linger == 0 || len(got) > 0 || time.Now().After(barrierAt.Add(linger)))
	}
	err := p.Read(time.Now().Add(5*time.Second), func(f []byte) bool {
		addr, src, ok := Answer(f)
		switch {
		case !ok:
		case addr == target:
			got = append(got, src)
		case addr == barrier && barrierAt.IsZero():
			barrierAt = time.Now()
		}
		return done()
	}, done)
	if err != nil && barrierAt.IsZero() {
		return nil, fmt.Errorf("no answer for the asked host's own %s: %w", barrier, err)
	}
	return got, nil
}

// ErrDeadline is Read's error when the deadline passed first.
var ErrDeadline = errors.New("deadline passed")

// Read hands each frame received (not the ones this host sent) to frame
// until it returns true, or until stop (checked between reads, which end
// at least every read timeout) returns true; it fails at the deadline.
func (p *Probe) Read(deadline time.Time, frame func(f []byte) bool, stop func() bool) error {
	buf := make([]byte, 2048)
	for {
		if stop != nil && stop() {
			return nil
		}
		if time.Now().After(deadline) {
			return ErrDeadline
		}
		n, from, err := unix.Recvfrom(p.FD, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("read packet socket: %w", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if frame(buf[:n]) {
			return nil
		}
	}
}

// Drain discards what the socket has queued.
func (p *Probe) Drain() {
	buf := make([]byte, 2048)
	for {
		if _, _, err := unix.Recvfrom(p.FD, buf, unix.MSG_DONTWAIT); err != nil {
			return
		}
	}
}

// Send sends one frame out the interface, retrying while the queue is
// momentarily full (ENOBUFS).
func (p *Probe) Send(frame []byte) error {
	to := &unix.SockaddrLinklayer{Ifindex: p.Ifindex, Halen: 6, Protocol: EthPAll}
	copy(to.Addr[:], frame[:6])
	for {
		err := unix.Sendto(p.FD, frame, 0, to)
		if errors.Is(err, unix.ENOBUFS) {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("send probe: %w", err)
		}
		return nil
	}
}

// sendOnOneCPU sends the frames from a thread pinned to one CPU: a veth
// queues what it receives on the sending CPU's backlog, so frames sent from
// two CPUs may be handled out of order.
func (p *Probe) sendOnOneCPU(frames [][]byte) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return fmt.Errorf("sched_getaffinity: %w", err)
	}
	for c := 0; c < 1024; c++ {
		if old.IsSet(c) {
			one.Set(c)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		return fmt.Errorf("sched_setaffinity: %w", err)
	}
	defer unix.SchedSetaffinity(0, &old)
	for _, f := range frames {
		if err := p.Send(f); err != nil {
			return err
		}
	}
	return nil
}
