package listener

import (
	"io"
	"net"
	"testing"

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
