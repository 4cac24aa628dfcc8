package health

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestGuardedListener: a source outside allowed_sources is reset at accept
// (the server never sees it). At the cap a connection waiting without a
// request in progress is reset to admit a new one: from the source holding
// the most, those that never completed a request before idle keep-alive
// ones; a newcomer from that source itself displaces only one that has
// waited minEvictAge. When every slot serves a request the newcomer is
// reset. Closing frees a slot once.
func TestGuardedListener(t *testing.T) {
	f := newGuardFixture(t, []netip.Prefix{netip.MustParsePrefix("127.0.0.2/31")}) // .2 and .3
	g := f.g

	f.wantReset("127.0.0.1", "source outside allowed_sources")
	a, sa := f.dial("127.0.0.2")
	b, _ := f.dial("127.0.0.2")
	_, sc := f.dial("127.0.0.2")
	f.wantOpen(3)
	// The flooding source's own newcomer does not displace its young ones.
	f.wantReset("127.0.0.2", "newcomer from the source holding every slot")
	// Another source's does: the oldest without a request (b), before the
	// idle keep-alive a.
	g.connState(sa, http.StateIdle)
	f.age(sa)
	_, se := f.dial("127.0.0.3")
	f.wantEvicted(b, "oldest connection without a request")
	f.wantOpen(3)
	// Every slot serving a request: the newcomer is reset.
	for _, c := range []net.Conn{sa, sc, se} {
		g.connState(c, http.StateActive)
	}
	f.wantReset("127.0.0.3", "newcomer with every slot serving")
	// a idle again: .2 holds the only waiting connection, .3 evicts it.
	g.connState(sa, http.StateIdle)
	_, sg := f.dial("127.0.0.3")
	f.wantEvicted(a, "idle keep-alive connection")
	sa.Close() // the server's own Close of an evicted connection frees nothing
	f.wantOpen(3)
	// .3 now holds the most waiting (g): its newcomer waits for minEvictAge.
	f.wantReset("127.0.0.3", "newcomer against a young connection of its own source")
	f.age(sg)
	_, si := f.dial("127.0.0.3")
	f.wantOpen(3)
	sg.Close()
	f.wantOpen(3)
	sc.Close()
	sc.Close() // a second Close must not free a second slot
	f.wantOpen(2)
	se.Close()
	si.Close()
	f.wantOpen(0)
	if len(g.sources) != 0 {
		t.Errorf("%d sources still tracked with no connection open", len(g.sources))
	}
	metrics := scrape(t, f.m)
	for _, want := range []string{
		`dsr_agent_connections_rejected_total{listener="test",reason="source"} 1`,
		`dsr_agent_connections_rejected_total{listener="test",reason="limit"} 3`,
		`dsr_agent_connections_rejected_total{listener="test",reason="evicted"} 3`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// guardFixture is a guarded listener of 3 slots on 127.0.0.1 with its
// accepted connections in a channel, and the client side's helpers.
type guardFixture struct {
	t        *testing.T
	raw      net.Listener
	g        *guardedListener
	m        *Metrics
	accepted chan net.Conn
}

func newGuardFixture(t *testing.T, allowed []netip.Prefix) *guardFixture {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &guardFixture{t: t, raw: raw, m: NewMetrics(), accepted: make(chan net.Conn, 8)}
	f.g = newGuardedListener(raw, "test", 3, func() []netip.Prefix { return allowed }, f.m)
	t.Cleanup(func() { f.g.Close() })
	go func() {
		for {
			c, err := f.g.Accept()
			if err != nil {
				close(f.accepted)
				return
			}
			f.accepted <- c
		}
	}()
	return f
}

func (f *guardFixture) dialErr(src string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
	c, err := d.Dial("tcp", f.raw.Addr().String())
	if err == nil {
		f.t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// dial returns the client's end and the server's.
func (f *guardFixture) dial(src string) (net.Conn, net.Conn) {
	f.t.Helper()
	c, err := f.dialErr(src)
	if err != nil {
		f.t.Fatal(err)
	}
	return c, <-f.accepted
}

// isReset: the reset may arrive before the dialer has returned.
func isReset(c net.Conn, err error) bool {
	if err == nil {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = io.ReadAll(c)
	}
	return errors.Is(err, syscall.ECONNRESET)
}

func (f *guardFixture) wantReset(src, what string) {
	f.t.Helper()
	if c, err := f.dialErr(src); !isReset(c, err) {
		f.t.Fatalf("%s: not reset", what)
	}
}

func (f *guardFixture) wantEvicted(c net.Conn, what string) {
	f.t.Helper()
	if !isReset(c, nil) {
		f.t.Fatalf("%s: not reset", what)
	}
}

func (f *guardFixture) wantOpen(n int) {
	f.t.Helper()
	if f.g.Open() != n {
		f.t.Fatalf("open slots %d, want %d", f.g.Open(), n)
	}
}

// age makes c old enough to be evicted by its own source's newcomer.
func (f *guardFixture) age(c net.Conn) {
	f.g.mu.Lock()
	c.(*slotConn).since = c.(*slotConn).since.Add(-minEvictAge)
	f.g.mu.Unlock()
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}
