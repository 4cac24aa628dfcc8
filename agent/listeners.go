package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/dsr-agent/dsr-agent/internal/inet"
	"github.com/dsr-agent/dsr-agent/listener"
)

// ListenerState is whether something on the host receives one VIP port's
// traffic ("Make sure your services include the VIP to bind to").
type ListenerState struct {
	// Subject names the VIP port: 192.0.2.10:80/tcp, [2001:db8::10]:53/udp.
	Subject  string `json:"subject"`
	VIP      string `json:"vip"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	// Expect is where a socket must listen for the traffic to be received:
	// the VIP or the wildcard; in firewalld mode the redirect's target
	// (to_port on the incoming interface's primary address or the wildcard).
	Expect  string `json:"expect"`
	Present bool   `json:"present"`
	// Sockets are the sockets that receive it (ss(8) notation).
	Sockets []string `json:"sockets,omitempty"`
}

// listenerDumpSpec is what one dump must cover for d: the protocols of its
// ports, and whether any IPv4 address is served (IPv6 sockets are always
// read: a dual-stack wildcard serves IPv4 too). No protocols: nothing to
// check (no ports, or `vips: []`).
func listenerDumpSpec(d *Desired) (protos []inet.Protocol, v4 bool) {
	if d.HandsOff {
		return nil, false
	}
	for _, v := range d.Served {
		for _, p := range v.Ports {
			if !slices.Contains(protos, p.Protocol) {
				protos = append(protos, p.Protocol)
			}
			v4 = v4 || v.Addr().Is4()
		}
	}
	slices.Sort(protos)
	return protos, v4
}

// listenerTarget is one destination a VIP port's packets have when the
// kernel looks up their socket, and the interface they arrive on (0: any).
type listenerTarget struct {
	dst netip.AddrPort
	// ifs are the interfaces the packets arrive on: a socket bound to
	// another one (SO_BINDTODEVICE) does not receive them (nil: any).
	ifs map[uint32]bool
	via string // what the address is, for the detail
}

// listenerTargets is where the kernel delivers a VIP port's packets: the
// VIP itself, arriving on an LB-facing NIC; or, with a redirect, the redirect rewrites the destination to to_port on
// the primary address of the incoming interface (the kernel's first IPv4 of
// the interface; for IPv6 its first global address), so each LB-facing NIC
// is one target; without an address of the family there is no target but
// the wildcard.
func listenerTargets(d *Desired, f *Facts, v Served, p ServedPort) []listenerTarget {
	if !d.Redirect {
		t := listenerTarget{dst: netip.AddrPortFrom(v.Addr(), p.Deliver)}
		for _, i := range d.Interfaces {
			if t.ifs == nil {
				t.ifs = map[uint32]bool{}
			}
			t.ifs[uint32(f.Index[i])] = true
		}
		return []listenerTarget{t}
	}
	var out []listenerTarget
	for _, i := range d.Interfaces {
		for _, a := range f.Addrs {
			ip := a.Prefix.Addr()
			if a.Link != i || ip.Is4() != v.Addr().Is4() || (ip.Is6() && !ip.IsGlobalUnicast()) || ip.IsLinkLocalUnicast() {
				continue
			}
			out = append(out, listenerTarget{dst: netip.AddrPortFrom(ip, p.Deliver), ifs: map[uint32]bool{uint32(f.Index[i]): true},
				via: i + "'s primary address, where the redirect sends it"})
			break
		}
	}
	if len(out) == 0 {
		// Only a wildcard socket is sure to receive it.
		unspec := netip.IPv4Unspecified()
		if v.Addr().Is6() {
			unspec = netip.IPv6Unspecified()
		}
		out = append(out, listenerTarget{dst: netip.AddrPortFrom(unspec, p.Deliver)})
	}
	return out
}

// wildcards renders the wildcard sockets that would serve dst.
func wildcards(dst netip.AddrPort) string {
	if dst.Addr().Is4() {
		return fmt.Sprintf("0.0.0.0:%d, or [::]:%d without IPV6_V6ONLY", dst.Port(), dst.Port())
	}
	return fmt.Sprintf("[::]:%d", dst.Port())
}

// listenerView compares what the config serves with the sockets the kernel
// reported: one state per VIP port, a difference for each one nothing
// receives, and the UDP warning: a datagram server on the wildcard answers
// from the VIP only if it uses IP_PKTINFO (which sock_diag cannot see), so
// it is a note, not drift. A redirect is immune (conntrack
// restores the VIP as the reply's source).
func listenerView(d *Desired, f *Facts, socks []listener.Socket) (states []ListenerState, diffs []Difference, warnings []string) {
	if d.HandsOff {
		return nil, nil, nil
	}
	for _, v := range d.Served {
		for _, p := range v.Ports {
			var st ListenerState
			var diff []Difference
			if v.IsPrefix && !d.Redirect {
				// Local: its own sockets judge it. Redirected: every
				// address of it goes where a VIP's does, judged the same.
				st, diff = prefixListener(v.Prefix, p, d, f, socks)
			} else {
				var w string
				st, diff, w = servedListener(d, f, socks, v, p)
				if w != "" {
					warnings = append(warnings, w)
				}
			}
			states, diffs = append(states, st), append(diffs, diff...)
		}
	}
	return states, diffs, warnings
}

// prefixListener is one prefix port: a wildcard socket serves every address
// of the prefix; sockets bound inside it (IPv4 binds there as it is local,
// IPv6 needs IPV6_FREEBIND or IP_TRANSPARENT: docs/anyip.md) serve their
// own address, and are reported as serving it too: an operator who binds
// addresses of the prefix one by one has chosen which of them to serve.
func prefixListener(pf netip.Prefix, p ServedPort, d *Desired, f *Facts, socks []listener.Socket) (ListenerState, []Difference) {
	subject := fmt.Sprintf("%s:%d/%s", pf, p.Port, p.Protocol)
	unspec := netip.IPv4Unspecified()
	if pf.Addr().Is6() {
		unspec = netip.IPv6Unspecified()
	}
	wild := netip.AddrPortFrom(unspec, p.Deliver)
	want := fmt.Sprintf("the wildcard (%s), or addresses of %s (IPv6: with IPV6_FREEBIND)", wildcards(wild), pf)
	st := ListenerState{Subject: subject, VIP: pf.String(), Port: p.Port, Protocol: string(p.Protocol), Expect: want}
	ifs := map[uint32]bool{}
	for _, i := range d.Interfaces {
		ifs[uint32(f.Index[i])] = true
	}
	for _, s := range socks {
		if s.Proto != p.Protocol || s.Port != p.Deliver || (s.Ifindex != 0 && len(ifs) > 0 && !ifs[s.Ifindex]) {
			continue
		}
		if !(s.Receives(p.Protocol, wild) && s.Wildcard()) && !pf.Contains(s.Addr.Unmap()) {
			continue
		}
		st.Present = true
		if str := s.String(); !slices.Contains(st.Sockets, str) {
			st.Sockets = append(st.Sockets, str)
		}
	}
	if st.Present {
		return st, nil
	}
	return st, []Difference{{Kind: ListenerMissing, Subject: subject, Detail: "nothing listens on " + want,
		Fix: fmt.Sprintf("make the service listen on %s and start it; dsr-agent does not start services", want)}}
}

// servedListener is one port of a single VIP, or of a redirected prefix
// (subject and VIP named by the prefix): each target the kernel delivers
// it to needs a socket; the warning is the UDP one.
func servedListener(d *Desired, f *Facts, socks []listener.Socket, v Served, p ServedPort) (st ListenerState, diffs []Difference, warning string) {
	proto := p.Protocol
	subject := netip.AddrPortFrom(v.Addr(), p.Port).String() + "/" + string(proto)
	if v.IsPrefix {
		subject = fmt.Sprintf("%s:%d/%s", v.Prefix, p.Port, proto)
	}
	st = ListenerState{Subject: subject, VIP: v.String(), Port: p.Port, Protocol: string(proto), Present: true}
	var expect []string
	onlyWildcard := true
	for _, t := range listenerTargets(d, f, v, p) {
		var want string
		switch {
		case t.dst.Addr().IsUnspecified():
			want = "the wildcard (" + wildcards(t.dst) + ")"
		case t.via != "":
			want = fmt.Sprintf("%s (%s) or the wildcard (%s)", t.dst, t.via, wildcards(t.dst))
		default:
			want = fmt.Sprintf("%s or the wildcard (%s)", t.dst, wildcards(t.dst))
		}
		expect = append(expect, want)
		found := false
		for _, s := range socks {
			if !s.Receives(proto, t.dst) || (s.Ifindex != 0 && t.ifs != nil && !t.ifs[s.Ifindex]) {
				continue
			}
			if t.dst.Addr().IsUnspecified() && !s.Wildcard() {
				continue
			}
			found = true
			onlyWildcard = onlyWildcard && s.Wildcard()
			if str := s.String(); !slices.Contains(st.Sockets, str) {
				st.Sockets = append(st.Sockets, str)
			}
		}
		if !found {
			st.Present = false
			diffs = append(diffs, Difference{Kind: ListenerMissing, Subject: st.Subject,
				Detail: "nothing listens on " + want,
				Fix:    fmt.Sprintf("make the service listen on %s and start it; dsr-agent does not start services", want)})
		}
	}
	st.Expect = strings.Join(expect, "; ")
	if st.Present && proto == inet.UDP && onlyWildcard && !d.Redirect && !v.IsPrefix {
		warning = fmt.Sprintf("%s is served by a socket on the wildcard (%s): unless the server uses IP_PKTINFO (IPV6_RECVPKTINFO), "+
			"its replies leave from this host's own address and clients drop them; bind it to %s (unbound: interface-automatic: yes), see docs/lab.md",
			st.Subject, strings.Join(st.Sockets, ", "), v.Addr())
	}
	return st, diffs, warning
}
