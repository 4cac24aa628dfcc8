package lab

import (
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// The lab's DNS messages: one TXT question and its answer, written and read
// by github.com/miekg/dns, for the lab's client and its own Go responder.

// DNS record types and classes used by the lab.
const (
	dnsTypeTXT = dns.TypeTXT
	dnsClassIN = dns.ClassINET
)

// WhoamiName is the name every lab DNS server answers with a TXT record that
// names the server ("rs1 10.77.0.21").
const WhoamiName = "whoami.dsr.lab."

// dnsQuery builds a query for one question with the given id.
func dnsQuery(id uint16, name string, qtype uint16) ([]byte, error) {
	if _, ok := dns.IsDomainName(name); !ok {
		return nil, fmt.Errorf("dns: bad name %q", name)
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.Id = id
	return m.Pack()
}

// dnsQuestion is the single question of a query.
type dnsQuestion struct {
	ID          uint16
	RD          bool
	Name        string
	Type, Class uint16
	msg         *dns.Msg
}

// parseQuery reads a query with exactly one question.
func parseQuery(b []byte) (dnsQuestion, error) {
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		return dnsQuestion{}, fmt.Errorf("dns: %w", err)
	}
	if m.Response {
		return dnsQuestion{}, errors.New("dns: not a query")
	}
	if len(m.Question) != 1 {
		return dnsQuestion{}, fmt.Errorf("dns: %d questions, want 1", len(m.Question))
	}
	q := m.Question[0]
	return dnsQuestion{ID: m.Id, RD: m.RecursionDesired, Name: q.Name, Type: q.Qtype, Class: q.Qclass, msg: m}, nil
}

// txtAnswer answers the query q with one TXT record (authoritative, the
// question's name compressed), or NXDOMAIN when txt is empty.
func txtAnswer(_ []byte, q dnsQuestion, txt string) []byte {
	m := new(dns.Msg)
	m.Authoritative = true
	m.Compress = true
	if txt == "" {
		m.SetRcode(q.msg, dns.RcodeNameError)
	} else {
		m.SetReply(q.msg)
		m.Answer = []dns.RR{&dns.TXT{
			Hdr: dns.RR_Header{Name: q.msg.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET},
			Txt: []string{txt[:min(len(txt), 255)]},
		}}
	}
	b, err := m.Pack()
	if err != nil {
		return nil
	}
	return b
}

// parseTXTAnswer checks that msg answers the query (id, name, TXT) and
// returns the TXT records' text (each record's strings concatenated).
func parseTXTAnswer(b []byte, id uint16, name string) ([]string, error) {
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	if m.Id != id {
		return nil, fmt.Errorf("dns: answer id %#04x, want %#04x", m.Id, id)
	}
	if !m.Response {
		return nil, errors.New("dns: not an answer (QR clear)")
	}
	if m.Truncated {
		return nil, errors.New("dns: truncated answer (TC)")
	}
	if m.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("dns: rcode %d", m.Rcode)
	}
	for _, q := range m.Question {
		if !strings.EqualFold(q.Name, name) {
			return nil, fmt.Errorf("dns: answer is for %q, asked %q", q.Name, name)
		}
	}
	var txts []string
	for _, rr := range m.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			txts = append(txts, strings.Join(t.Txt, ""))
		}
	}
	if len(txts) == 0 {
		return nil, errors.New("dns: no TXT record in the answer")
	}
	return txts, nil
}
