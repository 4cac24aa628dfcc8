package health

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/internal/dnswire"
)

// dnsProber asks one question over UDP (keepalived DNS_CHECK): the check is
// up when the answer has RCODE NOERROR and a non-empty answer section, and,
// with expect, one record of the asked type equal to it. The socket is
// connected, so a stopped server's ICMP port unreachable reads as
// "connection refused" at once instead of a timeout. A minimal RFC 1035
// client: one question, no EDNS, no retries (the next interval retries).
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
	if _, err := dnswire.AppendName(nil, name); err != nil {
		return nil, err
	}
	return &dnsProber{addr: addr, name: dnsFQDN(name), typeName: strings.ToUpper(qtype), qtype: t, expect: expect}, nil
}

func dnsFQDN(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) + "." }

const dnsClassIN = 1

var dnsRcodes = []string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"}

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
	id := uint16(rand.Uint32())
	q := binary.BigEndian.AppendUint16(nil, id)
	q = append(q, 0x01, 0x00)             // RD
	q = append(q, 0, 1, 0, 0, 0, 0, 0, 0) // QDCOUNT 1
	q, _ = dnswire.AppendName(q, p.name)
	q = binary.BigEndian.AppendUint16(q, p.qtype)
	q = binary.BigEndian.AppendUint16(q, dnsClassIN)
	if _, err := conn.Write(q); err != nil {
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
		if len(msg) < 12 || binary.BigEndian.Uint16(msg) != id || msg[2]&0x80 == 0 {
			continue
		}
		return Result{}, p.judge(msg)
	}
}

// judge reads the answer to this prober's question.
func (p *dnsProber) judge(msg []byte) error {
	if rc := int(msg[3] & 0x0f); rc != 0 {
		name := fmt.Sprintf("rcode %d", rc)
		if rc < len(dnsRcodes) {
			name = dnsRcodes[rc]
		}
		return failf("%s %s: %s", p.name, p.typeName, name)
	}
	qd, an := binary.BigEndian.Uint16(msg[4:]), binary.BigEndian.Uint16(msg[6:])
	if msg[2]&0x02 != 0 && an == 0 {
		return failf("%s %s: answer truncated (TC) and empty", p.name, p.typeName)
	}
	off := 12
	for range qd {
		qn, o, err := dnswire.ReadName(msg, off)
		if err != nil {
			return failf("bad answer: %v", err)
		}
		if !strings.EqualFold(qn, p.name) {
			return failf("answer is for %s, asked %s", qn, p.name)
		}
		off = o + 4
	}
	if an == 0 {
		return failf("%s %s: no answer (NOERROR, empty answer section)", p.name, p.typeName)
	}
	var values []string
	for range an {
		_, o, err := dnswire.ReadName(msg, off)
		if err != nil {
			return failf("bad answer: %v", err)
		}
		if o+10 > len(msg) {
			return failf("bad answer: truncated record")
		}
		typ := binary.BigEndian.Uint16(msg[o:])
		rdlen := int(binary.BigEndian.Uint16(msg[o+8:]))
		rd := o + 10
		if rd+rdlen > len(msg) {
			return failf("bad answer: record data runs past the message")
		}
		if typ == p.qtype {
			if v, ok := dnsValue(msg, typ, rd, rdlen); ok {
				values = append(values, v)
			}
		}
		off = rd + rdlen
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

// dnsValue renders one record's data the way `expect` is written.
func dnsValue(msg []byte, typ uint16, rd, rdlen int) (string, bool) {
	data := msg[rd : rd+rdlen]
	switch typ {
	case 1:
		if a, ok := netip.AddrFromSlice(data); ok && rdlen == 4 {
			return a.String(), true
		}
	case 28:
		if a, ok := netip.AddrFromSlice(data); ok && rdlen == 16 {
			return a.String(), true
		}
	case 2, 5, 12: // NS, CNAME, PTR
		if n, _, err := dnswire.ReadName(msg, rd); err == nil {
			return strings.ToLower(n), true
		}
	case 15: // MX: preference, exchange
		if n, _, err := dnswire.ReadName(msg, rd+2); err == nil && rdlen > 2 {
			return strings.ToLower(n), true
		}
	case 16: // TXT: the record's strings concatenated
		var s strings.Builder
		for i := 0; i < len(data); {
			n := int(data[i])
			if i+1+n > len(data) {
				return "", false
			}
			s.Write(data[i+1 : i+1+n])
			i += 1 + n
		}
		return s.String(), true
	}
	return "", false
}
