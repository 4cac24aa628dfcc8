package health

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/dsr-agent/dsr-agent/agent"
)

// dnsProber asks one question over UDP (keepalived DNS_CHECK): the check is
// up when the answer has RCODE NOERROR and a non-empty answer section, and,
// with expect, one record of the asked type equal to it. The socket is
// connected, so a stopped server's ICMP port unreachable reads as
// "connection refused" at once instead of a timeout. One question, no EDNS,
// no retries (the next interval retries); github.com/miekg/dns writes the
// query and reads the answer.
type dnsProber struct {
	addr, name, typeName, expect string
	qtype                        uint16
}

// NewDNSProber checks that the server at addr (host:port) answers name/qtype
// (A, AAAA, TXT, ...); expect, when not empty, must be one answer's value.
func NewDNSProber(addr, name, qtype, expect string) (Prober, error) {
	t, ok := agent.DNSTypes[strings.ToUpper(qtype)]
	if !ok {
		return nil, fmt.Errorf("dns: unknown type %q", qtype)
	}
	if _, ok := dns.IsDomainName(name); !ok || strings.Contains(strings.TrimSuffix(name, "."), "..") {
		return nil, fmt.Errorf("dns: bad name %q", name)
	}
	return &dnsProber{addr: addr, name: dnsFQDN(name), typeName: strings.ToUpper(qtype), qtype: t, expect: expect}, nil
}

func dnsFQDN(name string) string { return strings.ToLower(dns.Fqdn(name)) }

func (p *dnsProber) Probe(ctx context.Context) (Result, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", p.addr)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	q := new(dns.Msg)
	q.SetQuestion(p.name, p.qtype) // RD, a random id
	query, err := q.Pack()
	if err != nil {
		return Result{}, err
	}
	if _, err := conn.Write(query); err != nil {
		return Result{}, err
	}
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			return Result{}, err
		}
		msg := buf[:n]
		// Anything that is not the answer to this question (a late answer
		// to an earlier probe, a spoof) is skipped.
		if len(msg) < 12 || binary.BigEndian.Uint16(msg) != q.Id || msg[2]&0x80 == 0 {
			continue
		}
		return Result{}, p.judge(msg)
	}
}

// judge reads the answer to this prober's question.
func (p *dnsProber) judge(raw []byte) error {
	var m dns.Msg
	if err := m.Unpack(raw); err != nil && !(m.Truncated && len(m.Answer) == 0) {
		return failf("bad answer: %v", err)
	}
	if rc := m.Rcode; rc != dns.RcodeSuccess {
		name := fmt.Sprintf("rcode %d", rc)
		if rc <= dns.RcodeRefused {
			name = dns.RcodeToString[rc]
		}
		return failf("%s %s: %s", p.name, p.typeName, name)
	}
	if m.Truncated && len(m.Answer) == 0 {
		return failf("%s %s: answer truncated (TC) and empty", p.name, p.typeName)
	}
	for _, q := range m.Question {
		if !strings.EqualFold(q.Name, p.name) {
			return failf("answer is for %s, asked %s", q.Name, p.name)
		}
	}
	if len(m.Answer) == 0 {
		return failf("%s %s: no answer (NOERROR, empty answer section)", p.name, p.typeName)
	}
	var values []string
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == p.qtype {
			if v, ok := dnsValue(rr); ok {
				values = append(values, v)
			}
		}
	}
	if p.expect == "" || slices.Contains(values, p.expect) {
		return nil
	}
	got := "no " + p.typeName + " record"
	if len(values) > 0 {
		got = strings.Join(values, ", ")
	}
	return failf("%s %s: answer %s, want %s", p.name, p.typeName, got, p.expect)
}

// dnsValue renders one record's data the way `expect` is written: an
// address, a lower-case name with its final dot, or a TXT record's strings
// concatenated as they are on the wire.
func dnsValue(rr dns.RR) (string, bool) {
	switch rr := rr.(type) {
	case *dns.A:
		if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
			return a.String(), true
		}
	case *dns.AAAA:
		if a, ok := netip.AddrFromSlice(rr.AAAA); ok && len(rr.AAAA) == net.IPv6len {
			return a.String(), true
		}
	case *dns.NS:
		return strings.ToLower(rr.Ns), true
	case *dns.CNAME:
		return strings.ToLower(rr.Target), true
	case *dns.PTR:
		return strings.ToLower(rr.Ptr), true
	case *dns.MX:
		return strings.ToLower(rr.Mx), true
	case *dns.TXT:
		var s strings.Builder
		for _, t := range rr.Txt {
			s.WriteString(txtUnescape(t))
		}
		return s.String(), true
	}
	return "", false
}

// txtUnescape undoes miekg/dns's presentation escapes in a TXT string (\X
// and \DDD for quotes, backslashes and unprintable bytes), so that expect
// compares with the bytes the server sent.
func txtUnescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b = append(b, s[i])
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			b = append(b, (s[i+1]-'0')*100+(s[i+2]-'0')*10+(s[i+3]-'0'))
			i += 3
			continue
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
