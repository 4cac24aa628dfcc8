package health

import (
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// Per-listener caps on open connections. A health endpoint is polled by a
// few directors, a scraper and the odd operator; agent-check connections
// carry one line. The caps bound the descriptors and memory a flood from an
// allowed source can take (a disallowed source never holds one: it is closed
// at accept), and with the unit's LimitNOFILE they leave the reconcile path
// its descriptors whatever happens on the network.
const (
	MaxHTTPConns  = 256
	MaxAgentConns = 64
)

// rejectBackoff slows the accept loop after an accept error (EMFILE and the
// like) instead of spinning on it.
const rejectBackoff = 50 * time.Millisecond

// guardedListener enforces allowed_sources and the connection cap at
// accept, before a byte is read or a goroutine started:
//   - a client outside allowed_sources is reset at once (SO_LINGER 0: no
//     FIN/TIME_WAIT kept for it, no HTTP parsing, no 403 to keep alive);
//   - a client beyond the cap is reset at once too, rather than left waiting:
//     a waiting connection holds a descriptor all the same, and health
//     checkers retry on their next interval anyway.
//
// Both are counted in dsr_agent_connections_rejected_total.
type guardedListener struct {
	net.Listener
	allowed  func() []netip.Prefix
	slots    chan struct{}
	name     string
	metrics  *Metrics
	rejected [2]func() // by reason: source, full
}

func newGuardedListener(ln net.Listener, name string, max int, allowed func() []netip.Prefix, m *Metrics) *guardedListener {
	g := &guardedListener{Listener: ln, allowed: allowed, slots: make(chan struct{}, max), name: name, metrics: m}
	g.rejected[0] = m.connRejected(name, "source")
	g.rejected[1] = m.connRejected(name, "limit")
	return g
}

func (g *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if !addrAllowed(g.allowed(), c.RemoteAddr()) {
			reset(c)
			g.rejected[0]()
			continue
		}
		select {
		case g.slots <- struct{}{}:
			return &slotConn{Conn: c, slots: g.slots}, nil
		default:
			reset(c)
			g.rejected[1]()
		}
	}
}

// Open is the number of connections holding a slot.
func (g *guardedListener) Open() int { return len(g.slots) }

// reset closes c with an RST.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// slotConn gives its slot back on the first Close (http.Server may close a
// connection more than once).
type slotConn struct {
	net.Conn
	slots  chan struct{}
	closed atomic.Bool
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		<-c.slots
	}
	return err
}

// addrAllowed is sourceAllowed for a connection's address, without
// formatting and parsing it.
func addrAllowed(allowed []netip.Prefix, remote net.Addr) bool {
	if len(allowed) == 0 {
		return true
	}
	var a netip.Addr
	switch r := remote.(type) {
	case *net.TCPAddr:
		a = r.AddrPort().Addr()
	default:
		return sourceAllowed(allowed, remote.String())
	}
	a = a.Unmap()
	for _, p := range allowed {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
