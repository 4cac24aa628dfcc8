package health

import (
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestGuardedListener: a source outside allowed_sources and a connection
// beyond the cap are reset at accept (the server never sees them); closing a
// served connection frees its slot.
func TestGuardedListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	allowed := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	m := NewMetrics()
	g := newGuardedListener(raw, "test", 2, func() []netip.Prefix { return allowed }, m)
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
	dial := func(src string) net.Conn {
		t.Helper()
		c, err := dialErr(src)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The reset may arrive before the dialer has returned.
	wantReset := func(src, what string) {
		t.Helper()
		c, err := dialErr(src)
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err = io.ReadAll(c)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%s: %v, want a reset", what, err)
		}
	}
	wantReset("127.0.0.1", "source outside allowed_sources")
	a, b := dial("127.0.0.2"), dial("127.0.0.2")
	sa, sb := <-accepted, <-accepted
	if g.Open() != 2 {
		t.Fatalf("open slots %d, want 2", g.Open())
	}
	wantReset("127.0.0.2", "third connection with a cap of 2")
	sa.Close()
	sa.Close() // a second Close must not free a second slot
	c := dial("127.0.0.2")
	sc := <-accepted
	if g.Open() != 2 {
		t.Fatalf("open slots %d after close and reconnect, want 2", g.Open())
	}
	_, _, _ = a, b, c
	sb.Close()
	sc.Close()
	if g.Open() != 0 {
		t.Fatalf("open slots %d after closing all, want 0", g.Open())
	}
	metrics := scrape(t, m)
	for _, want := range []string{
		`dsr_agent_connections_rejected_total{listener="test",reason="source"} 1`,
		`dsr_agent_connections_rejected_total{listener="test",reason="limit"} 1`,
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
