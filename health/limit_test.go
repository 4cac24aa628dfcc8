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
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	allowed := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/31")} // .2 and .3
	m := NewMetrics()
	g := newGuardedListener(raw, "test", 3, func() []netip.Prefix { return allowed }, m)
	defer g.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := g.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dialErr := func(src string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
		c, err := d.Dial("tcp", raw.Addr().String())
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	// dial returns the client's end and the server's.
	dial := func(src string) (net.Conn, net.Conn) {
		t.Helper()
		c, err := dialErr(src)
		if err != nil {
			t.Fatal(err)
		}
		return c, <-accepted
	}
	// The reset may arrive before the dialer has returned.
	isReset := func(c net.Conn, err error) bool {
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err = io.ReadAll(c)
		}
		return errors.Is(err, syscall.ECONNRESET)
	}
	wantReset := func(src, what string) {
		t.Helper()
		if c, err := dialErr(src); !isReset(c, err) {
			t.Fatalf("%s: not reset", what)
		}
	}
	wantEvicted := func(c net.Conn, what string) {
		t.Helper()
		if !isReset(c, nil) {
			t.Fatalf("%s: not reset", what)
		}
	}
	wantOpen := func(n int) {
		t.Helper()
		if g.Open() != n {
			t.Fatalf("open slots %d, want %d", g.Open(), n)
		}
	}
	age := func(c net.Conn) {
		g.mu.Lock()
		c.(*slotConn).since = c.(*slotConn).since.Add(-minEvictAge)
		g.mu.Unlock()
	}

	wantReset("127.0.0.1", "source outside allowed_sources")
	a, sa := dial("127.0.0.2")
	b, _ := dial("127.0.0.2")
	_, sc := dial("127.0.0.2")
	wantOpen(3)
	// The flooding source's own newcomer does not displace its young ones.
	wantReset("127.0.0.2", "newcomer from the source holding every slot")
	// Another source's does: the oldest without a request (b), before the
	// idle keep-alive a.
	g.connState(sa, http.StateIdle)
	age(sa)
	_, se := dial("127.0.0.3")
	wantEvicted(b, "oldest connection without a request")
	wantOpen(3)
	// Every slot serving a request: the newcomer is reset.
	for _, c := range []net.Conn{sa, sc, se} {
		g.connState(c, http.StateActive)
	}
	wantReset("127.0.0.3", "newcomer with every slot serving")
	// a idle again: .2 holds the only waiting connection, .3 evicts it.
	g.connState(sa, http.StateIdle)
	_, sg := dial("127.0.0.3")
	wantEvicted(a, "idle keep-alive connection")
	sa.Close() // the server's own Close of an evicted connection frees nothing
	wantOpen(3)
	// .3 now holds the most waiting (g): its newcomer waits for minEvictAge.
	wantReset("127.0.0.3", "newcomer against a young connection of its own source")
	age(sg)
	_, si := dial("127.0.0.3")
	wantOpen(3)
	sg.Close()
	wantOpen(3)
	sc.Close()
	sc.Close() // a second Close must not free a second slot
	wantOpen(2)
	se.Close()
	si.Close()
	wantOpen(0)
	if len(g.sources) != 0 {
		t.Errorf("%d sources still tracked with no connection open", len(g.sources))
	}
	metrics := scrape(t, m)
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

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}
