package listener

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// sockets opens sockets in a namespace for a test and closes them when it
// ends.
type sockets struct {
	t  *testing.T
	ns *netnstest.NS
}

func newSockets(t *testing.T, ns *netnstest.NS) *sockets { return &sockets{t: t, ns: ns} }

func (s *sockets) keep(c io.Closer) { s.t.Cleanup(func() { c.Close() }) }

// listen opens a TCP listener.
func (s *sockets) listen(network, addr string) net.Listener {
	s.t.Helper()
	var l net.Listener
	var err error
	s.ns.Do(s.t, func() { l, err = net.Listen(network, addr) })
	if err != nil {
		s.t.Fatal(err)
	}
	s.keep(l)
	return l
}

// udp opens an unconnected UDP socket.
func (s *sockets) udp(network, addr string) {
	s.t.Helper()
	var c net.PacketConn
	var err error
	s.ns.Do(s.t, func() { c, err = net.ListenPacket(network, addr) })
	if err != nil {
		s.t.Fatal(err)
	}
	s.keep(c)
}

// dial opens a connection (TCP: established once dialled, even before the
// listener accepts it; UDP: connected) from src ("" for any) to dst.
func (s *sockets) dial(network, src, dst string) {
	s.t.Helper()
	var c net.Conn
	var err error
	s.ns.Do(s.t, func() {
		d := net.Dialer{}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		c, err = d.Dial(network, dst)
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.keep(c)
}

// awaitUsable waits until addr is on an interface of ns and no longer
// tentative: with DAD off the kernel still clears the flag from a work
// item after the link comes up, and a bind before that fails
// (EADDRNOTAVAIL).
func awaitUsable(t *testing.T, ns *netnstest.NS, addr string) {
	t.Helper()
	want := netip.MustParseAddr(addr)
	ch, done := make(chan netlink.AddrUpdate, 64), make(chan struct{})
	defer close(done)
	h := ns.Handle
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: &h, ListExisting: true}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case u, ok := <-ch:
			if !ok {
				t.Fatalf("address subscription closed before %s was usable", addr)
			}
			a, _ := netip.AddrFromSlice(u.LinkAddress.IP)
			if u.NewAddr && a.Unmap() == want && u.Flags&unix.IFA_F_TENTATIVE == 0 {
				return
			}
		case <-deadline:
			t.Fatalf("%s still tentative or absent after 10s", addr)
		}
	}
}
