package health

import (
	"container/list"
	"net"
	"net/http"
	"net/netip"
	"sync"
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

// minEvictAge: a connection may displace one from its own source (or from
// a source holding no more slots than its own) only when that one has
// waited at least this long. Without it a flood that reconnects as soon as
// it is reset would evict itself in a loop, every accept an eviction and a
// reconnection, and the listen backlog would stay full of its connections
// ahead of the directors' (measured: ~1 s per check with 2,000 of them).
const minEvictAge = readHeaderTimeout / 2

// guardedListener enforces allowed_sources and the connection cap at
// accept, before a byte is read or a goroutine started:
//   - a client outside allowed_sources is reset at once (SO_LINGER 0: no
//     FIN/TIME_WAIT kept for it, no HTTP parsing, no 403 to keep alive);
//   - at the cap, a connection waiting without a request in progress is
//     reset to admit the new one: the oldest of those that have not
//     completed a request yet (headers still arriving: slowloris), else the
//     oldest idle keep-alive one, taken from the source holding the most
//     waiting connections. A newcomer from that very source (one host
//     flooding) displaces only a connection that has waited minEvictAge;
//     otherwise it is the one reset. So a host inside allowed_sources that
//     holds every slot with slow headers cannot keep a director's check
//     out: the check takes the flood's oldest slot and sends its request at
//     once, and the flood's own reconnections are reset cheaply at accept
//     instead of churning the slots. Header reading itself is bounded by
//     readHeaderTimeout (server.go);
//   - when every slot is serving a request the new client is reset rather
//     than left waiting: a waiting connection holds a descriptor all the
//     same, and health checkers retry on their next interval anyway.
//
// The HTTP server reports request progress through connState; a listener
// without it (agent-check, where the server speaks first and closes) counts
// every connection as waiting until it is closed. All are counted in
// dsr_agent_connections_rejected_total (reasons source, limit, evicted).
//
// Several listeners (the sockets of one port, listenFanout) may share one
// connGuard, so the cap is per port.
type guardedListener struct {
	net.Listener
	*connGuard
}

type connGuard struct {
	allowed func() []netip.Prefix
	name    string
	max     int

	mu      sync.Mutex
	open    int
	sources map[netip.Addr]*sourceConns // those with waiting connections

	rejected [2]func() // by reason: source, full
	evicted  func()
}

// sourceConns are one source's waiting connections, each list oldest first:
// fresh have not completed a request, idle are keep-alive between requests.
type sourceConns struct{ fresh, idle list.List }

func (s *sourceConns) waiting() int { return s.fresh.Len() + s.idle.Len() }

// oldest is the source's first candidate for eviction.
func (s *sourceConns) oldest() *slotConn {
	e := s.fresh.Front()
	if e == nil {
		e = s.idle.Front()
	}
	if e == nil {
		return nil
	}
	return e.Value.(*slotConn)
}

func newGuardedListener(ln net.Listener, name string, max int, allowed func() []netip.Prefix, m *Metrics) *guardedListener {
	return &guardedListener{Listener: ln, connGuard: newConnGuard(name, max, allowed, m)}
}

func newConnGuard(name string, max int, allowed func() []netip.Prefix, m *Metrics) *connGuard {
	g := &connGuard{allowed: allowed, name: name, max: max, sources: map[netip.Addr]*sourceConns{}}
	g.rejected[0] = m.connRejected(name, "source")
	g.rejected[1] = m.connRejected(name, "limit")
	g.evicted = m.connRejected(name, "evicted")
	return g
}

func (g *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := remoteAddr(c.RemoteAddr())
		if !addrAllowed(g.allowed(), src) {
			reset(c)
			g.rejected[0]()
			continue
		}
		sc, victim := g.admit(c, src, time.Now())
		if victim != nil {
			reset(victim.Conn)
			g.evicted()
		}
		if sc != nil {
			return sc, nil
		}
		reset(c)
		g.rejected[1]()
	}
}

// admit takes a slot for c, freeing one at the cap (see guardedListener);
// it returns nil when c must be reset, and the connection to reset, if any.
func (g *connGuard) admit(c net.Conn, src netip.Addr, now time.Time) (sc, victim *slotConn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open >= g.max {
		var heavy *sourceConns
		for _, s := range g.sources {
			if heavy == nil || s.waiting() > heavy.waiting() {
				heavy = s
			}
		}
		if heavy == nil {
			return nil, nil // every slot is serving a request
		}
		victim = heavy.oldest()
		if own := g.sources[src]; own != nil && own.waiting() >= heavy.waiting() && now.Sub(victim.since) < minEvictAge {
			return nil, nil
		}
		g.releaseLocked(victim)
	}
	g.open++
	sc = &slotConn{Conn: c, g: g, src: src}
	g.queueLocked(sc, false, now)
	return sc, victim
}

// queueLocked makes c evictable: fresh, or idle between requests.
func (g *connGuard) queueLocked(c *slotConn, idle bool, now time.Time) {
	g.unqueueLocked(c)
	s := g.sources[c.src]
	if s == nil {
		s = &sourceConns{}
		g.sources[c.src] = s
	}
	c.queue = &s.fresh
	if idle {
		c.queue = &s.idle
	}
	c.elem, c.since = c.queue.PushBack(c), now
}

func (g *connGuard) unqueueLocked(c *slotConn) {
	if c.elem == nil {
		return
	}
	c.queue.Remove(c.elem)
	c.elem, c.queue = nil, nil
	if s := g.sources[c.src]; s != nil && s.waiting() == 0 {
		delete(g.sources, c.src)
	}
}

// releaseLocked gives c's slot back, once.
func (g *connGuard) releaseLocked(c *slotConn) {
	if c.released {
		return
	}
	c.released = true
	g.open--
	g.unqueueLocked(c)
}

// connState is http.Server.ConnState: a connection is evictable while its
// request headers are arriving (new, or idle: Go reads the next request's
// headers in the idle state) and not while a request is being served.
func (g *connGuard) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*slotConn)
	if !ok {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if c.released {
		return
	}
	switch st {
	case http.StateActive, http.StateHijacked:
		g.unqueueLocked(c)
	case http.StateIdle:
		g.queueLocked(c, true, time.Now())
	}
}

// Open is the number of connections holding a slot.
func (g *connGuard) Open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

// reset closes c with an RST.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// slotConn gives its slot back on the first Close (http.Server may close a
// connection more than once) or when it is evicted.
type slotConn struct {
	net.Conn
	g   *connGuard
	src netip.Addr
	// Guarded by g.mu.
	released bool
	elem     *list.Element // in queue while waiting without a request
	queue    *list.List
	since    time.Time // when it started waiting
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.g.mu.Lock()
	c.g.releaseLocked(c)
	c.g.mu.Unlock()
	return err
}

// remoteAddr is a connection's peer address without formatting and parsing
// it (the zero Addr when it is not TCP).
func remoteAddr(remote net.Addr) netip.Addr {
	if r, ok := remote.(*net.TCPAddr); ok {
		return r.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(remote.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// addrAllowed is sourceAllowed for a connection's address.
func addrAllowed(allowed []netip.Prefix, a netip.Addr) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, p := range allowed {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
