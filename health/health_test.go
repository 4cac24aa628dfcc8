package health

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/internal/golden"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func okSnapshot() Snapshot {
	return Snapshot{Time: time.Now(), Report: agent.Report{Mode: "loopback", InSync: true, Suppression: true,
		VIPs: []agent.VIPState{{Address: "192.0.2.10", Present: true, Link: "lo"}}}}
}

func get(t *testing.T, h http.Handler, method, path, remote string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.RemoteAddr = remote
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestVerdictReasons(t *testing.T) {
	s := NewState()
	srv := NewServer(s, nil, quietLog())
	h := srv.Handler()
	if code, body := get(t, h, "GET", "/healthz", "192.0.2.1:1"); code != 503 || !strings.Contains(body, "starting") {
		t.Fatalf("before first snapshot: %d %q, want 503 starting", code, body)
	}
	s.SetSnapshot(okSnapshot())
	if code, body := get(t, h, "GET", "/healthz", "192.0.2.1:1"); code != 200 || body != "up\n" {
		t.Fatalf("healthy: %d %q", code, body)
	}
	if got := string(s.Verdict().Agent); got != "up ready\n" {
		t.Fatalf("agent reply %q, want up ready", got)
	}
	snap := okSnapshot()
	snap.VIPs[0].Present = false
	s.SetSnapshot(snap)
	if code, body := get(t, h, "GET", "/healthz", "192.0.2.1:1"); code != 503 || body != "vip 192.0.2.10 missing from lo\n" {
		t.Fatalf("vip missing: %d %q", code, body)
	}
	if got := string(s.Verdict().Agent); got != "down ready\n" {
		t.Fatalf("agent reply %q, want down ready", got)
	}
	s.SetSnapshot(okSnapshot())
	s.SetDrain(Drained)
	if code, body := get(t, h, "GET", "/healthz", "192.0.2.1:1"); code != 503 || body != "draining\n" {
		t.Fatalf("drained: %d %q", code, body)
	}
	if got := string(s.Verdict().Agent); got != "up drain\n" {
		t.Fatalf("agent reply %q, want up drain", got)
	}
	s.SetDrain(Maintenance)
	if got := string(s.Verdict().Agent); got != "maint\n" {
		t.Fatalf("agent reply %q, want maint", got)
	}
	s.SetDrain(InRotation)
	snap = okSnapshot()
	snap.Suppression = false
	s.SetSnapshot(snap)
	if code, body := get(t, h, "GET", "/healthz", "192.0.2.1:1"); code != 503 || !strings.Contains(body, "arp suppression missing") {
		t.Fatalf("suppression missing: %d %q", code, body)
	}
	// HEAD gets the status without a body.
	s.SetSnapshot(okSnapshot())
	if code, body := get(t, h, "HEAD", "/healthz", "192.0.2.1:1"); code != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", code, body)
	}
	code, body := get(t, h, "GET", "/status", "192.0.2.1:1")
	if code != 200 || !strings.Contains(body, `"healthy": true`) || !strings.Contains(body, `"address": "192.0.2.10"`) {
		t.Fatalf("status: %d %s", code, body)
	}
	code, body = get(t, h, "GET", "/metrics", "192.0.2.1:1")
	for _, want := range []string{`dsr_agent_vip_present{vip="192.0.2.10"} 1`, "dsr_agent_healthy 1", `dsr_agent_drain{state="in-rotation"} 1`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("metrics lacks %q (code %d):\n%s", want, code, body)
		}
	}
}

func TestMethodsAndAllowedSources(t *testing.T) {
	s := NewState()
	s.SetSnapshot(okSnapshot())
	h := NewServer(s, []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}, quietLog()).Handler()
	for _, tc := range []struct {
		method, remote string
		want           int
	}{
		{"GET", "192.0.2.7:5555", 200},
		{"GET", "[2001:db8::5]:5555", 200},
		{"GET", "[::ffff:192.0.2.7]:5555", 200},
		{"GET", "198.51.100.7:5555", 403},
		{"GET", "[2001:db9::1]:5555", 403},
		{"POST", "192.0.2.7:5555", 405},
		{"DELETE", "192.0.2.7:5555", 405},
		{"POST", "198.51.100.7:5555", 403},
	} {
		if code, _ := get(t, h, tc.method, "/healthz", tc.remote); code != tc.want {
			t.Errorf("%s from %s: %d, want %d", tc.method, tc.remote, code, tc.want)
		}
	}
}

func TestRiseFall(t *testing.T) {
	spec := agent.CheckConfig{Name: "web", Rise: 2, Fall: 3, Timeout: time.Second}
	st := CheckStatus{Name: "web", Pending: true}
	fail := failf("http status 500, want 200")
	steps := []struct {
		err    error
		wantUp bool
	}{
		{nil, true},                               // first result decides
		{fail, true}, {fail, true}, {fail, false}, // fall 3
		{nil, false}, {fail, false}, {nil, false}, {nil, true}, // rise 2, counted consecutively
	}
	for i, s := range steps {
		record(&st, spec, Result{}, s.err, time.Millisecond, time.Now())
		if st.Up != s.wantUp || st.Pending {
			t.Fatalf("step %d (err %v): up=%v pending=%v, want up=%v", i, s.err, st.Up, st.Pending, s.wantUp)
		}
	}
}

func waitVerdict(t *testing.T, s *State, what string, ok func(*Verdict) bool) *Verdict {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if v := s.Verdict(); ok(v) {
			return v
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; last verdict %q", what, s.Verdict().Body)
	return nil
}

func TestChecksTCPAndHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	status := make(chan int, 1)
	status <- 200
	code := 200
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case code = <-status:
		default:
		}
		w.WriteHeader(code)
	}))
	defer hs.Close()
	s := NewState()
	s.SetSnapshot(okSnapshot())
	c := NewChecker(s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.Set(ctx, []agent.CheckConfig{
		{Name: "tcp", Kind: agent.CheckTCP, Target: ln.Addr().String(), Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond, Rise: 1, Fall: 1},
		{Name: "api", Kind: agent.CheckHTTP, Target: hs.URL + "/ok", ExpectStatus: 200, Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond, Rise: 1, Fall: 2},
	})
	defer c.Stop()
	waitVerdict(t, s, "both checks up", func(v *Verdict) bool { return v.Healthy })
	status <- 500
	v := waitVerdict(t, s, "api down", func(v *Verdict) bool { return !v.Healthy })
	if got := string(v.Body); got != "check api: http status 500, want 200\n" {
		t.Fatalf("reason %q", got)
	}
	status <- 200
	waitVerdict(t, s, "api up again", func(v *Verdict) bool { return v.Healthy })
	ln.Close()
	v = waitVerdict(t, s, "tcp down", func(v *Verdict) bool { return !v.Healthy })
	// Refused, or reset when the close caught a connection in the backlog.
	if got := string(v.Body); got != "check tcp: connection refused\n" && got != "check tcp: connection reset by peer\n" {
		t.Fatalf("reason %q", got)
	}
}

// A client that sends headers one byte at a time must not stop others being
// answered, and must be cut off by the header timeout.
func TestSlowlorisDoesNotBlock(t *testing.T) {
	s := NewState()
	s.SetSnapshot(okSnapshot())
	srv := NewServer(s, nil, quietLog())
	ln, err := listenFreebind(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	addr := ln.Addr().String()

	var slow []net.Conn
	for range 200 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n")); err != nil {
			t.Fatal(err)
		}
		slow = append(slow, c)
	}
	client := &http.Client{Timeout: time.Second}
	for i := range 20 {
		start := time.Now()
		resp, err := client.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatalf("request %d while 200 slow clients are connected: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || time.Since(start) > 500*time.Millisecond {
			t.Fatalf("request %d: status %d after %v", i, resp.StatusCode, time.Since(start))
		}
	}
	// The slow client is disconnected after readHeaderTimeout.
	_ = slow[0].SetReadDeadline(time.Now().Add(readHeaderTimeout + 2*time.Second))
	start := time.Now()
	_, err = io.ReadAll(slow[0])
	if err != nil {
		t.Fatalf("slow client not closed by the server: %v", err)
	}
	if el := time.Since(start); el > readHeaderTimeout+time.Second {
		t.Fatalf("slow client kept for %v", el)
	}
	// Oversized headers are refused.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, "431") {
		t.Fatalf("oversized header answered %q, want 431", line)
	}
}

func TestFreebindListensBeforeAddressExists(t *testing.T) {
	// 192.0.2.0/24 is TEST-NET-1, not configured on any test machine.
	ln, err := listenFreebind(context.Background(), "192.0.2.213:0")
	if err != nil {
		t.Fatalf("listen on an absent address with IP_FREEBIND: %v", err)
	}
	ln.Close()
}

func TestAgentServer(t *testing.T) {
	s := NewState()
	s.SetSnapshot(okSnapshot())
	a := NewAgentServer(s, nil, quietLog())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.Run(ctx, addr) }()
	read := func() string {
		t.Helper()
		var c net.Conn
		var err error
		for range 50 {
			if c, err = net.Dial("tcp", addr); err == nil {
				break
			}
			if errors.Is(err, syscall.ECONNRESET) {
				return "error: " + err.Error() // reset before the dialer returned
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		if err != nil {
			return "error: " + err.Error()
		}
		return string(b)
	}
	if got := read(); got != "up ready\n" {
		t.Fatalf("got %q", got)
	}
	s.SetDrain(Drained)
	if got := read(); got != "up drain\n" {
		t.Fatalf("got %q", got)
	}
	a.SetAllowed([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")})
	// Reset at accept: the client reads nothing but the RST.
	if got := read(); !strings.Contains(got, "connection reset") {
		t.Fatalf("disallowed source got %q, want a reset", got)
	}
}

func TestDrainPersistence(t *testing.T) {
	dir := t.TempDir()
	if m, err := LoadDrain(dir); err != nil || m != InRotation {
		t.Fatalf("fresh: %q %v", m, err)
	}
	for _, m := range []DrainMode{Drained, Maintenance, InRotation} {
		if err := SaveDrain(dir, m); err != nil {
			t.Fatal(err)
		}
		if got, err := LoadDrain(dir); err != nil || got != m {
			t.Fatalf("saved %q, loaded %q %v", m, got, err)
		}
	}
}

// TestStatusJSONGolden: /status is a rendering of the core's report (the
// same agent.Report as `dsr-agent status --json`) plus checks and drain.
func TestStatusJSONGolden(t *testing.T) {
	s := NewState()
	snap := okSnapshot()
	snap.Differences = []agent.Difference{{Kind: "vip-missing", Subject: "192.0.2.11", Detail: "missing from lo", Fix: "ip addr add 192.0.2.11/32 dev lo label lo:dsr1"}}
	snap.VIPs = append(snap.VIPs, agent.VIPState{Address: "192.0.2.11", Link: "lo"})
	// A listener missing after the grace period (0 here: at once).
	snap.Differences = append(snap.Differences, agent.Difference{Kind: agent.ListenerMissing, Subject: "192.0.2.10:80/tcp",
		Detail: "nothing listens on 192.0.2.10:80 or the wildcard (0.0.0.0:80, or [::]:80 without IPV6_V6ONLY)",
		Fix:    "make the service listen on 192.0.2.10:80 or the wildcard (0.0.0.0:80, or [::]:80 without IPV6_V6ONLY) and start it; dsr-agent does not start services"})
	snap.Listeners = []agent.ListenerState{
		{Subject: "192.0.2.10:80/tcp", VIP: "192.0.2.10", Port: 80, Protocol: "tcp", Expect: "192.0.2.10:80 or the wildcard (0.0.0.0:80, or [::]:80 without IPV6_V6ONLY)"},
		{Subject: "192.0.2.10:53/udp", VIP: "192.0.2.10", Port: 53, Protocol: "udp", Expect: "192.0.2.10:53 or the wildcard (0.0.0.0:53, or [::]:53 without IPV6_V6ONLY)",
			Present: true, Sockets: []string{"192.0.2.10:53/udp"}},
	}
	snap.InSync = false
	s.SetSnapshot(snap)
	s.SetDrain(Drained)
	b, err := s.StatusJSON()
	if err != nil {
		t.Fatal(err)
	}
	// Times are the run's own.
	got := regexp.MustCompile(`"\d{4}-\d\d-\d\dT[^"]*"`).ReplaceAllString(string(b), `"<time>"`)
	golden.Assert(t, "status.json", got)
}

// TestPrefixHealth: a prefix VIP (AnyIP) is judged as a VIP: /healthz
// names it when its route (or redirect) is missing, /status carries it,
// and dsr_agent_vip_present has a series for it, dropped when a reload
// removes it; a snapshot whose host check failed with only prefixes
// configured says so.
func TestPrefixHealth(t *testing.T) {
	s := NewState()
	srv := NewServer(s, nil, quietLog())
	h := srv.Handler()
	snap := okSnapshot()
	snap.Prefixes = []agent.PrefixState{{Prefix: "198.51.100.0/24", Present: true}}
	s.SetSnapshot(snap)
	if code, body := get(t, h, "GET", "/healthz", "192.0.2.1:1"); code != 200 {
		t.Fatalf("healthy: %d %q", code, body)
	}
	code, body := get(t, h, "GET", "/status", "192.0.2.1:1")
	if code != 200 || !strings.Contains(body, `"prefix": "198.51.100.0/24"`) {
		t.Fatalf("status: %d %s", code, body)
	}
	if _, body := get(t, h, "GET", "/metrics", "192.0.2.1:1"); !strings.Contains(body, `dsr_agent_vip_present{vip="198.51.100.0/24"} 1`) {
		t.Fatalf("metrics lack the prefix:\n%s", body)
	}
	snap.Prefixes = []agent.PrefixState{{Prefix: "198.51.100.0/24", Present: false}}
	s.SetSnapshot(snap)
	if code, body := get(t, h, "GET", "/healthz", "192.0.2.1:1"); code != 503 || body != "prefix 198.51.100.0/24 missing\n" {
		t.Fatalf("prefix missing: %d %q", code, body)
	}
	if _, body := get(t, h, "GET", "/metrics", "192.0.2.1:1"); !strings.Contains(body, `dsr_agent_vip_present{vip="198.51.100.0/24"} 0`) {
		t.Fatalf("metrics lack the missing prefix:\n%s", body)
	}
	s.SetSnapshot(okSnapshot())
	if _, body := get(t, h, "GET", "/metrics", "192.0.2.1:1"); strings.Contains(body, "198.51.100.0/24") {
		t.Fatalf("a prefix dropped by a reload is still reported:\n%s", body)
	}
	s.SetSnapshot(Snapshot{Time: time.Now(), Error: "observe: permission denied",
		Report: agent.Report{Prefixes: []agent.PrefixState{{Prefix: "198.51.100.0/24"}}}})
	if code, body := get(t, h, "GET", "/healthz", "192.0.2.1:1"); code != 503 || !strings.Contains(body, "prefix 198.51.100.0/24 missing") {
		t.Fatalf("failed check with prefixes only: %d %q", code, body)
	}
}
