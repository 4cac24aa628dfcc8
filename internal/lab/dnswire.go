package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/dsr-agent/dsr-agent/internal/dnswire"
)

// A minimal DNS wire format (RFC 1035): enough to ask one TXT question and
// read the TXT answer, and for the lab's own Go responder to answer it. The
// lab does not depend on a DNS library so that every byte is under the test's
// control.

// DNS record types and classes used by the lab.
const (
	dnsTypeTXT = 16
	dnsClassIN = 1
)

// WhoamiName is the name every lab DNS server answers with a TXT record that
// names the server ("rs1 10.77.0.21").
const WhoamiName = "whoami.dsr.lab."

// dnsQuery builds a query for one question with the given id.
func dnsQuery(id uint16, name string, qtype uint16) ([]byte, error) {
	b := binary.BigEndian.AppendUint16(nil, id)
	b = append(b, 0x01, 0x00)             // RD
	b = append(b, 0, 1, 0, 0, 0, 0, 0, 0) // QDCOUNT 1
	var err error
	if b, err = dnswire.AppendName(b, name); err != nil {
		return nil, err
	}
	b = binary.BigEndian.AppendUint16(b, qtype)
	return binary.BigEndian.AppendUint16(b, dnsClassIN), nil
}

// dnsQuestion is the single question of a query.
type dnsQuestion struct {
	ID          uint16
	RD          bool
	Name        string
	Type, Class uint16
	end         int // offset just past the question
}

// parseQuery reads a query with exactly one question.
func parseQuery(msg []byte) (dnsQuestion, error) {
	if len(msg) < 12 {
		return dnsQuestion{}, errors.New("dns: short message")
	}
	if msg[2]&0x80 != 0 {
		return dnsQuestion{}, errors.New("dns: not a query")
	}
	if qd := binary.BigEndian.Uint16(msg[4:]); qd != 1 {
		return dnsQuestion{}, fmt.Errorf("dns: %d questions, want 1", qd)
	}
	name, off, err := dnswire.ReadName(msg, 12)
	if err != nil {
		return dnsQuestion{}, err
	}
	if off+4 > len(msg) {
		return dnsQuestion{}, errors.New("dns: truncated question")
	}
	return dnsQuestion{
		ID: binary.BigEndian.Uint16(msg), RD: msg[2]&0x01 != 0, Name: name,
		Type: binary.BigEndian.Uint16(msg[off:]), Class: binary.BigEndian.Uint16(msg[off+2:]),
		end: off + 4,
	}, nil
}

// txtAnswer answers the query q (its raw bytes: the question is copied) with
// one TXT record, or NXDOMAIN when txt is empty.
func txtAnswer(query []byte, q dnsQuestion, txt string) []byte {
	b := binary.BigEndian.AppendUint16(nil, q.ID)
	flags := uint16(0x8400) // QR, AA
	if q.RD {
		flags |= 0x0100
	}
	an := uint16(1)
	if txt == "" {
		flags |= 3 // NXDOMAIN
		an = 0
	}
	b = binary.BigEndian.AppendUint16(b, flags)
	b = append(b, 0, 1)
	b = binary.BigEndian.AppendUint16(b, an)
	b = append(b, 0, 0, 0, 0)
	b = append(b, query[12:q.end]...)
	if an == 0 {
		return b
	}
	b = append(b, 0xc0, 12) // pointer to the question's name
	b = binary.BigEndian.AppendUint16(b, dnsTypeTXT)
	b = binary.BigEndian.AppendUint16(b, dnsClassIN)
	b = binary.BigEndian.AppendUint32(b, 0)
	txt = txt[:min(len(txt), 255)]
	b = binary.BigEndian.AppendUint16(b, uint16(1+len(txt)))
	b = append(b, byte(len(txt)))
	return append(b, txt...)
}

// parseTXTAnswer checks that msg answers the query (id, name, TXT) and
// returns the TXT records' text (each record's strings concatenated).
func parseTXTAnswer(msg []byte, id uint16, name string) ([]string, error) {
	if len(msg) < 12 {
		return nil, errors.New("dns: short answer")
	}
	if got := binary.BigEndian.Uint16(msg); got != id {
		return nil, fmt.Errorf("dns: answer id %#04x, want %#04x", got, id)
	}
	if msg[2]&0x80 == 0 {
		return nil, errors.New("dns: not an answer (QR clear)")
	}
	if msg[2]&0x02 != 0 {
		return nil, errors.New("dns: truncated answer (TC)")
	}
	if rc := msg[3] & 0x0f; rc != 0 {
		return nil, fmt.Errorf("dns: rcode %d", rc)
	}
	qd, an := binary.BigEndian.Uint16(msg[4:]), binary.BigEndian.Uint16(msg[6:])
	off := 12
	for range qd {
		qn, o, err := dnswire.ReadName(msg, off)
		if err != nil {
			return nil, err
		}
		if !strings.EqualFold(qn, name) {
			return nil, fmt.Errorf("dns: answer is for %q, asked %q", qn, name)
		}
		off = o + 4
	}
	var txts []string
	for range an {
		_, o, err := dnswire.ReadName(msg, off)
		if err != nil {
			return nil, err
		}
		if o+10 > len(msg) {
			return nil, errors.New("dns: truncated record")
		}
		typ := binary.BigEndian.Uint16(msg[o:])
		rdlen := int(binary.BigEndian.Uint16(msg[o+8:]))
		rd := o + 10
		if rd+rdlen > len(msg) {
			return nil, errors.New("dns: record data runs past the message")
		}
		if typ == dnsTypeTXT {
			var s strings.Builder
			for p := rd; p < rd+rdlen; {
				n := int(msg[p])
				if p+1+n > rd+rdlen {
					return nil, errors.New("dns: TXT string runs past its record")
				}
				s.Write(msg[p+1 : p+1+n])
				p += 1 + n
			}
			txts = append(txts, s.String())
		}
		off = rd + rdlen
	}
	if len(txts) == 0 {
		return nil, errors.New("dns: no TXT record in the answer")
	}
	return txts, nil
}
