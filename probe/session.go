package probe

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/mdlayher/packet"
)

// A session is one probe's packet socket: send, read through the BPF filter,
// resolve the real server's MAC, await and judge the answer.

// capture, when set (tests), sees every frame the probe sends ("sent") and
// every answer it reads ("answer", "neigh") together with the flow.
var capture func(kind string, f *Flow, frame []byte)

type session struct {
	conn *packet.Conn
	f    *Flow
	res  *Result
	buf  []byte
}

func (s *session) send(frame []byte) error {
	if capture != nil {
		capture("sent", s.f, frame)
	}
	dst := &packet.Addr{HardwareAddr: net.HardwareAddr(frame[0:6])}
	if _, err := s.conn.WriteTo(frame, dst); err != nil {
		return fmt.Errorf("probe: send on %s: %w", s.res.Dev, err)
	}
	return nil
}

// read returns the next frame, or nil at the deadline.
func (s *session) read(deadline time.Time) ([]byte, error) {
	if err := s.conn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	n, _, err := s.conn.ReadFrom(s.buf)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, nil
		}
		return nil, fmt.Errorf("probe: read on %s: %w", s.res.Dev, err)
	}
	return s.buf[:n], nil
}

// retransmit is how often an unanswered solicitation or probe packet is
// sent again (with the same port and sequence number, as a TCP SYN
// retransmission is): three tries within the timeout, so one lost frame is
// not a verdict.
func retransmit(timeout time.Duration) time.Duration { return max(timeout/3, time.Millisecond) }

// resolve asks who has a (ARP / NDP) and returns the MAC it answers with, or
// nil at the deadline.
func (s *session) resolve(a netip.Addr, deadline time.Time, every time.Duration) (net.HardwareAddr, error) {
	fr, err := solicitation(s.f.SrcMAC, s.f.OuterSrc, a)
	if err != nil {
		return nil, err
	}
	for {
		if err := s.send(fr); err != nil {
			return nil, err
		}
		next := time.Now().Add(every)
		for {
			b, err := s.read(minTime(deadline, next))
			if err != nil {
				return nil, err
			}
			if b == nil {
				if time.Now().Before(deadline) {
					break
				}
				return nil, nil
			}
			if na, ok := parseNeighAnswer(b); ok && na.target == a {
				return slices.Clone(na.mac), nil
			}
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// arpGrace is how long the probe keeps listening for ARP/NDP answers about
// the VIP after the data path answered: the who-has went out before the
// probe packet, and a real server answers ARP at least as fast as TCP, so a
// flux answer is normally in before the SYN-ACK; the grace covers reordering.
func arpGrace(rtt time.Duration) time.Duration {
	return max(2*rtt, 2*time.Millisecond)
}

// await sends the probe packet and reads until the data path answers (plus
// arpGrace when the ARP check runs) or the deadline passes, sending the
// packet again every so often while nothing came back. It answers a
// SYN-ACK with an RST at once. The RTT is measured from the last send.
func (s *session) await(deadline time.Time, probeFrame []byte, every time.Duration, arpCheck bool, vip netip.Addr) (*Answer, error) {
	var first *Answer
	seen := map[string]bool{}
	var sent, next time.Time
	for {
		if first == nil && !time.Now().Before(next) {
			sent = time.Now()
			if err := s.send(probeFrame); err != nil {
				return nil, err
			}
			next = sent.Add(every)
		}
		until := deadline
		if first == nil {
			until = minTime(deadline, next)
		}
		b, err := s.read(until)
		if err != nil {
			return nil, err
		}
		if b == nil {
			if !time.Now().Before(deadline) {
				return first, nil
			}
			continue
		}
		now := time.Now()
		if arpCheck {
			if na, ok := parseNeighAnswer(b); ok {
				if capture != nil && na.target == vip {
					capture("neigh", s.f, b)
				}
				if na.target == vip && na.mac.String() != s.res.DirectorMAC && !seen[na.mac.String()] {
					seen[na.mac.String()] = true
					s.res.ARPAnswers = append(s.res.ARPAnswers, na.mac.String())
				}
				continue
			}
		}
		if first != nil {
			continue
		}
		a, err := s.f.Parse(b)
		if err != nil {
			continue
		}
		if a.Kind == AnswerStaleSYNACK {
			// Clear the real server's half-open connection of an earlier
			// flow on these ports and send our SYN again at once.
			rst, err := s.f.RSTSeq(a.Seq)
			if err != nil {
				return nil, err
			}
			if err := s.send(rst); err != nil {
				return nil, err
			}
			next = time.Time{}
			continue
		}
		first = &a
		s.res.RTT = now.Sub(sent)
		if capture != nil {
			capture("answer", s.f, b)
		}
		if a.Kind == AnswerSYNACK {
			rst, err := s.f.RST()
			if err != nil {
				return nil, err
			}
			if err := s.send(rst); err != nil {
				return nil, err
			}
		}
		if !arpCheck {
			return first, nil
		}
		if d := now.Add(arpGrace(s.res.RTT)); d.Before(deadline) {
			deadline = d
		}
	}
}

// judge turns the answer (nil: none) into the verdict.
func (s *session) judge(a *Answer) {
	r, f := s.res, s.f
	switch {
	case a == nil:
		r.Verdict = Timeout
	default:
		r.From = a.From.String()
		switch a.Kind {
		case AnswerSYNACK:
			r.Answer, r.MSS, r.Window = "SYN-ACK", int(a.MSS), int(a.Window)
		case AnswerRST:
			r.Answer = "RST"
		case AnswerUDP:
			r.Answer = fmt.Sprintf("UDP %d bytes", len(a.Payload))
		case AnswerICMP:
			r.Answer = fmt.Sprintf("ICMP type %d code %d", a.ICMPType, a.ICMPCode)
		}
		switch {
		case a.Kind == AnswerICMP && f.Proto == UDP && isPortUnreachable(f.VIP.Is6(), a.ICMPType, a.ICMPCode) && a.From == f.VIP:
			// A UDP port with no socket: the kernel's own answer.
			r.Verdict = Refused
		case a.Kind == AnswerICMP:
			r.Verdict = Unreachable
		case a.From != f.VIP:
			r.Verdict = WrongSource
		case a.Kind == AnswerRST:
			r.Verdict = Refused
		case a.Kind == AnswerSYNACK && int(a.MSS) > r.MaxMSS && f.Encap.Kind != L2:
			r.Verdict = MSSTooLarge
		default:
			r.Verdict = Up
		}
	}
	if r.Verdict == Up && s.fluxFrom() {
		r.Verdict = ARPFlux
	}
	r.Explanation = r.Explain()
}

// fluxFrom reports whether an ARP/NDP answer for the VIP counts against this
// real server: on its own segment (L2) only its own MAC does, so a faulty
// neighbour never fails a healthy server; for L3 (the real server is behind
// a router) any answer on --dev does.
func (s *session) fluxFrom() bool {
	if s.f.Encap.Kind != L2 {
		return len(s.res.ARPAnswers) > 0
	}
	return slices.Contains(s.res.ARPAnswers, s.res.NextHopMAC)
}

func isPortUnreachable(v6 bool, t, c uint8) bool {
	if v6 {
		return t == 1 && c == 4
	}
	return t == 3 && c == 3
}
