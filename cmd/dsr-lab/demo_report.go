package main

// Reporting: the four counters that show DSR, the mode's and the demo's
// conclusions, and text helpers.

import (
	"strings"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/lab"
)

// counterSet names the four counters of one protocol: sent by the client,
// forwarded by the director, received by the client, replies the director
// saw.
type counterSet struct {
	sent, requests, recvd, replies string
}

var (
	tcpCounters = counterSet{lab.CounterSent, lab.CounterRequests, lab.CounterRecvd, lab.CounterReplies}
	udpCounters = counterSet{lab.CounterSentUDP, lab.CounterRequestsUDP, lab.CounterRecvdUDP, lab.CounterRepliesUDP}
)

// counters holds a counterSet's values in its order.
type counters [4]lab.Counter

func (c counters) sub(c0 counters) (d counters) {
	for i := range d {
		d[i] = c[i].Sub(c0[i])
	}
	return d
}

func snapCounters(l *lab.Lab, s counterSet) (c counters, err error) {
	for i, get := range []func() (lab.Counter, error){
		func() (lab.Counter, error) { return l.ClientCounter(s.sent) },
		func() (lab.Counter, error) { return l.DirectorCounter(s.requests) },
		func() (lab.Counter, error) { return l.ClientCounter(s.recvd) },
		func() (lab.Counter, error) { return l.DirectorCounter(s.replies) },
	} {
		if c[i], err = get(); err != nil {
			return c, err
		}
	}
	return c, nil
}

// settledCounters returns the TCP counters' change since c0 once the
// director has forwarded all the client sent, or after 2 s.
func settledCounters(l *lab.Lab, c0 counters) (counters, error) {
	// The last FIN/ACK may still be on its way to the director when the last
	// answer is in: give the counters a moment to settle.
	var d counters
	for deadline := time.Now().Add(2 * time.Second); ; {
		c1, err := snapCounters(l, tcpCounters)
		if err != nil {
			return d, err
		}
		d = c1.sub(c0)
		if d[0].Packets == d[1].Packets || time.Now().After(deadline) {
			return d, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func printCounters(out *narrator, d counters) {
	out.p("    client  -> VIP   sent by the client          %8d packets %10d bytes\n", d[0].Packets, d[0].Bytes)
	out.p("    director         forwarded to real servers  %8d packets %10d bytes\n", d[1].Packets, d[1].Bytes)
	out.p("    VIP -> client    received by the client     %8d packets %10d bytes\n", d[2].Packets, d[2].Bytes)
	out.p("    director         saw of those replies       %8d packets %10d bytes\n", d[3].Packets, d[3].Bytes)
}

func explainMode(out *narrator, mode lab.Mode) {
	switch mode {
	case lab.ModeLoopback:
		out.p("\n  loopback mode: the VIP sits on lo and the arp_ignore/arp_announce sysctls keep\n  the server from answering ARP for it.\n")
	case lab.ModeARPTables:
		out.p("\n  arptables mode: the IPv4 VIP sits on the NIC and an nftables arp table drops ARP\n  for it (IPv6 VIPs go on lo, where the kernel never answers NDP for them).\n")
	case lab.ModeFirewalld:
		out.p("\n  firewalld mode: the server never has the VIP at all (so it cannot answer ARP\n  for it); nftables redirects VIP:%d to its local port %d\n  and VIP:%d/udp to port %d.\n", lab.ServicePort, lab.RedirectPort, lab.DNSPort, lab.DNSRedirectPort)
	}
}

func conclude(out *narrator) {
	out.p(`
Why this proves DSR: the client only ever talked to the VIP and only the
director answered its ARP/NDP, so every request went through the director (its
counter equals what the client sent). Yet different real servers answered, and
the replies, far larger than the requests, reached the client without a single
packet passing the director. That is direct server return, with real servers
configured by dsr-agent alone.
`)
}

// elideHeredocs shortens nft here-documents already shown for the first server.
func elideHeredocs(s string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.SplitAfter(s, "\n") {
		switch {
		case !in && strings.HasSuffix(strings.TrimSpace(line), "<<'EOF'"):
			in = true
			b.WriteString(strings.TrimRight(line, "\n") + " ... (as for the first server, with this server's addresses)\n")
		case in && strings.TrimSpace(line) == "EOF":
			in = false
		case !in:
			b.WriteString(line)
		}
	}
	return b.String()
}

func indent(s, prefix string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix) + "\n"
}
