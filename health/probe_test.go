package health

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/dsr-agent/dsr-agent/agent"
)

func probeOnce(t *testing.T, p Prober, timeout time.Duration) (Result, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := p.Probe(ctx)
	if err != nil {
		return res, describe(err, timeout)
	}
	return res, ""
}

// selfSigned makes a certificate for name valid until notAfter.
func selfSigned(t *testing.T, name string, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsServer serves a certificate per SNI name (default: the first).
func tlsServer(t *testing.T, certs map[string]tls.Certificate, def string) string {
	t.Helper()
	cfg := &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if c, ok := certs[h.ServerName]; ok {
			return &c, nil
		}
		c := certs[def]
		return &c, nil
	}}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func TestTLSProber(t *testing.T) {
	now := time.Now()
	addr := tlsServer(t, map[string]tls.Certificate{
		"default.invalid":  selfSigned(t, "default.invalid", now.Add(300*24*time.Hour)),
		"soon.example.com": selfSigned(t, "soon.example.com", now.Add(5*24*time.Hour+time.Hour)),
		"old.example.com":  selfSigned(t, "old.example.com", now.Add(-3*24*time.Hour-time.Hour)),
	}, "default.invalid")
	for _, tc := range []struct {
		name, sni   string
		verify      bool
		warn        time.Duration
		wantErr     string
		wantWarning string
	}{
		{name: "far from expiry", sni: "default.invalid", warn: 14 * 24 * time.Hour},
		{name: "SNI selects the expiring one", sni: "soon.example.com", warn: 14 * 24 * time.Hour,
			wantWarning: `certificate "soon.example.com" expires `},
		{name: "warning off", sni: "soon.example.com"},
		{name: "within warn but not 3d", sni: "soon.example.com", warn: 3 * 24 * time.Hour},
		{name: "expired: up, warned", sni: "old.example.com", warn: 14 * 24 * time.Hour,
			wantWarning: `certificate "old.example.com" expired `},
		{name: "verify: self-signed is down", sni: "default.invalid", verify: true,
			wantErr: "certificate for default.invalid not accepted: x509: certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, reason := probeOnce(t, NewTLSProber(addr, tc.sni, tc.verify, tc.warn), 2*time.Second)
			if reason != tc.wantErr {
				t.Fatalf("reason %q, want %q", reason, tc.wantErr)
			}
			if !strings.HasPrefix(res.Warning, tc.wantWarning) || (tc.wantWarning == "") != (res.Warning == "") {
				t.Fatalf("warning %q, want prefix %q", res.Warning, tc.wantWarning)
			}
		})
	}
	if _, reason := probeOnce(t, NewTLSProber(addr, "soon.example.com", false, 0), time.Second); reason != "" {
		t.Fatal(reason)
	}
	if w := expiryWarning(&x509.Certificate{Subject: pkix.Name{CommonName: "x"}, NotAfter: now.Add(5*24*time.Hour + time.Minute)}, now, 14*24*time.Hour); !strings.HasSuffix(w, "(in 5d)") {
		t.Fatalf("warning %q", w)
	}
	// A plain TCP server is not TLS.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	if _, reason := probeOnce(t, NewTLSProber(ln.Addr().String(), "x", false, 0), time.Second); !strings.HasPrefix(reason, "tls handshake: ") {
		t.Fatalf("reason %q, want a tls handshake failure", reason)
	}
}

// dnsResponder answers every query with fn's records and rcode.
func dnsResponder(t *testing.T, fn func(qname string, qtype uint16) (rcode int, answers []string)) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var q dns.Msg
			if q.Unpack(buf[:n]) != nil || len(q.Question) != 1 {
				continue
			}
			rcode, answers := fn(q.Question[0].Name, q.Question[0].Qtype)
			r := new(dns.Msg)
			r.SetRcode(&q, rcode)
			r.Compress = true
			for _, a := range answers {
				rr, err := dns.NewRR(a)
				if err != nil {
					panic(err)
				}
				r.Answer = append(r.Answer, rr)
			}
			b, err := r.Pack()
			if err != nil {
				panic(err)
			}
			_, _ = pc.WriteTo(b, from)
		}
	}()
	return pc.LocalAddr().String()
}

func TestDNSProber(t *testing.T) {
	addr := dnsResponder(t, func(name string, qtype uint16) (int, []string) {
		switch {
		case name == "www.example.com." && qtype == dns.TypeA:
			return dns.RcodeSuccess, []string{"www.example.com. 30 IN A 192.0.2.80"}
		case name == "www.example.com." && qtype == dns.TypeTXT:
			return dns.RcodeSuccess, []string{`www.example.com. 30 IN TXT "hel" "lo"`}
		case name == "quote.example.com." && qtype == dns.TypeTXT:
			return dns.RcodeSuccess, []string{`quote.example.com. 30 IN TXT "say \"hi\" \\ \007"`}
		case name == "alias.example.com.":
			return dns.RcodeSuccess, []string{"alias.example.com. 30 IN CNAME WWW.example.com."}
		case name == "example.com." && qtype == dns.TypeMX:
			return dns.RcodeSuccess, []string{"example.com. 30 IN MX 10 Mail.example.com.", "example.com. 30 IN A 192.0.2.1"}
		case name == "www6.example.com." && qtype == dns.TypeAAAA:
			return dns.RcodeSuccess, []string{"www6.example.com. 30 IN AAAA 2001:db8:0:0::80"}
		case name == "www.example.com.":
			return dns.RcodeSuccess, nil
		case name == "refused.example.com.":
			return dns.RcodeRefused, nil
		case name == "badvers.example.com.":
			return dns.RcodeNotAuth, nil
		}
		return dns.RcodeNameError, nil
	})
	for _, tc := range []struct{ name, typ, expect, want string }{
		{"www.example.com", "A", "", ""},
		{"WWW.Example.com.", "A", "192.0.2.80", ""},
		{"www.example.com", "A", "192.0.2.81", "www.example.com. A: answer 192.0.2.80, want 192.0.2.81"},
		{"www.example.com", "TXT", "hello", ""},
		{"quote.example.com", "TXT", "say \"hi\" \\ \a", ""},
		{"alias.example.com", "CNAME", "www.example.com.", ""},
		{"example.com", "MX", "mail.example.com.", ""},
		{"example.com", "MX", "mx.example.com.", "example.com. MX: answer mail.example.com., want mx.example.com."},
		{"www6.example.com", "AAAA", "2001:db8::80", ""},
		{"www.example.com", "AAAA", "", "www.example.com. AAAA: no answer (NOERROR, empty answer section)"},
		{"nope.example.com", "A", "", "nope.example.com. A: NXDOMAIN"},
		{"refused.example.com", "A", "", "refused.example.com. A: REFUSED"},
		{"badvers.example.com", "A", "", "badvers.example.com. A: rcode 9"},
	} {
		p, err := NewDNSProber(addr, tc.name, tc.typ, tc.expect)
		if err != nil {
			t.Fatal(err)
		}
		if _, reason := probeOnce(t, p, time.Second); reason != tc.want {
			t.Errorf("%s %s expect %q: reason %q, want %q", tc.name, tc.typ, tc.expect, reason, tc.want)
		}
	}
	// Nothing listening: ICMP port unreachable, refused at once.
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	dead := pc.LocalAddr().String()
	pc.Close()
	p, _ := NewDNSProber(dead, "www.example.com", "A", "")
	start := time.Now()
	if _, reason := probeOnce(t, p, 2*time.Second); reason != "connection refused" || time.Since(start) > time.Second {
		t.Errorf("stopped server: reason %q after %v, want connection refused at once", reason, time.Since(start))
	}
	// A server that never answers: timeout.
	silent, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer silent.Close()
	p, _ = NewDNSProber(silent.LocalAddr().String(), "www.example.com", "A", "")
	if _, reason := probeOnce(t, p, 200*time.Millisecond); reason != "timeout after 200ms" {
		t.Errorf("silent server: reason %q", reason)
	}
}

// TestDNSProberJudgesTheRawAnswer: answers no library would build, written
// byte by byte: another question's answer, a truncated empty one, a
// malformed one.
func TestDNSProberJudgesTheRawAnswer(t *testing.T) {
	p := &dnsProber{name: "www.example.com.", typeName: "A", qtype: dns.TypeA}
	q := new(dns.Msg)
	q.SetQuestion("other.example.com.", dns.TypeA)
	other := new(dns.Msg)
	other.SetReply(q)
	other.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "other.example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(192, 0, 2, 1)}}
	wire, err := other.Pack()
	if err != nil {
		t.Fatal(err)
	}
	header := func(flags2, flags3 byte, qd, an byte) []byte {
		return []byte{0, 1, flags2, flags3, 0, qd, 0, an, 0, 0, 0, 0}
	}
	for _, tc := range []struct {
		what string
		msg  []byte
		want string
	}{
		{"answer to another question", wire, "answer is for other.example.com., asked www.example.com."},
		{"truncated and empty", header(0x82, 0, 0, 0), "www.example.com. A: answer truncated (TC) and empty"},
		{"an answer record cut short", append(header(0x80, 0, 0, 1), 0xc0), "bad answer: "},
	} {
		err := p.judge(tc.msg)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.what, err, tc.want)
		}
	}
}

func TestExecProber(t *testing.T) {
	sh := "/bin/sh"
	for _, tc := range []struct {
		script, want string
		weight       int // -1: none
	}{
		{"exit 0", "", -1},
		{"echo 'Could not connect'; echo more >&2; exit 1", "exit 1: Could not connect", -1},
		{"exit 2", "", 0},
		{"exit 77", "", 75},
		{"exit 255", "", 253},
		{"kill -SEGV $$", "killed by signal segmentation fault", -1},
		{"printf '%0300d' 0; exit 1", "exit 1: " + strings.Repeat("0", 200) + "…", -1},
	} {
		p, _ := NewExecProber([]string{sh, "-c", tc.script})
		res, reason := probeOnce(t, p, 2*time.Second)
		if reason != tc.want {
			t.Errorf("%q: reason %q, want %q", tc.script, reason, tc.want)
		}
		if got := -1; res.Weight != nil {
			got = *res.Weight
			if got != tc.weight {
				t.Errorf("%q: weight %d, want %d", tc.script, got, tc.weight)
			}
		} else if tc.weight != -1 {
			t.Errorf("%q: no weight, want %d", tc.script, tc.weight)
		}
	}
	// systemd's per-service variables do not reach the command.
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	p, _ := NewExecProber([]string{sh, "-c", `test -z "$NOTIFY_SOCKET" || { echo "NOTIFY_SOCKET=$NOTIFY_SOCKET"; exit 1; }`})
	if _, reason := probeOnce(t, p, time.Second); reason != "" {
		t.Errorf("NOTIFY_SOCKET passed to the command: %s", reason)
	}
	p, _ = NewExecProber([]string{"/nonexistent/check"})
	if _, reason := probeOnce(t, p, time.Second); reason != "exec /nonexistent/check: no such file or directory" {
		t.Errorf("missing command: %q", reason)
	}
	// Output is bounded however much the command prints.
	p, _ = NewExecProber([]string{sh, "-c", "head -c 10000000 /dev/zero; exit 1"})
	if _, reason := probeOnce(t, p, 5*time.Second); !strings.HasPrefix(reason, "exit 1") || len(reason) > 300 {
		t.Errorf("big output: reason of %d bytes", len(reason))
	}
	// At the timeout the whole process group dies, grandchildren included.
	pidFile := filepath.Join(t.TempDir(), "pid")
	p, _ = NewExecProber([]string{sh, "-c", "sleep 30 & echo $! > " + pidFile + "; wait"})
	start := time.Now()
	_, reason := probeOnce(t, p, 300*time.Millisecond)
	if reason != "timeout after 300ms" || time.Since(start) > 2*time.Second {
		t.Fatalf("hung command: reason %q after %v", reason, time.Since(start))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(2 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); strings.Contains(string(st), ") Z ") {
			break // killed, a zombie until init reaps it
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild sleep (pid %d) survived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestUDPProber(t *testing.T) {
	echo, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer echo.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) == "ping" {
				_, _ = echo.WriteTo([]byte("pong"), from)
			}
		}
	}()
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	dead := pc.LocalAddr().String()
	pc.Close()
	for _, tc := range []struct {
		addr, payload string
		expectReply   bool
		want          string
	}{
		{echo.LocalAddr().String(), "ping", true, ""},
		{echo.LocalAddr().String(), "quiet", true, "no reply within the timeout"},
		{echo.LocalAddr().String(), "quiet", false, ""},
		{dead, "ping", true, "connection refused"},
		{dead, "ping", false, "connection refused"},
	} {
		if _, reason := probeOnce(t, NewUDPProber(tc.addr, []byte(tc.payload), tc.expectReply), 200*time.Millisecond); reason != tc.want {
			t.Errorf("%+v: reason %q", tc, reason)
		}
	}
}

// The Checker knows no kinds: a warning and a weight reach /status.
func TestCheckerRecordsWarningAndWeight(t *testing.T) {
	s := NewState()
	s.SetSnapshot(okSnapshot())
	c := NewChecker(s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := tlsServer(t, map[string]tls.Certificate{"soon.example.com": selfSigned(t, "soon.example.com", time.Now().Add(50*time.Hour))}, "soon.example.com")
	c.Set(ctx, []agent.CheckConfig{
		{Name: "site", Kind: agent.CheckTLS, Target: addr, ServerName: "soon.example.com", CertExpiryWarning: 14 * 24 * time.Hour, Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 1, Fall: 1},
		{Name: "weighted", Kind: agent.CheckExec, Target: "/bin/sh -c 'exit 52'", Command: []string{"/bin/sh", "-c", "exit 52"}, Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 1, Fall: 1},
	})
	defer c.Stop()
	waitVerdict(t, s, "checks up", func(v *Verdict) bool { return v.Healthy })
	b, err := s.StatusJSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"warnings": [`, `"check site: certificate \"soon.example.com\" expires `, `(in 2d)"`, `"weight": 50`, `"kind": "exec"`, `"healthy": true`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/status lacks %s:\n%s", want, b)
		}
	}
}
