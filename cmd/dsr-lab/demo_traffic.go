package main

// The demo's traffic: ARP/NDP probes for the VIP, HTTP requests and DNS
// queries to it, each checked against the director's and client's counters.

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/lab"
)

func demoFamily(ctx context.Context, out *narrator, l *lab.Lab, vip netip.Addr, requests int) error {
	if err := demoNeighbors(ctx, out, l, vip); err != nil {
		return err
	}
	out.head(fmt.Sprintf("%s: %d HTTP requests from the client to %s", famName(vip), requests, lab.VIPURL(vip)))
	c0, err := snapCounters(l, tcpCounters)
	if err != nil {
		return err
	}
	if err := demoHTTP(ctx, out, l, vip, requests); err != nil {
		return err
	}
	d, err := settledCounters(l, c0)
	if err != nil {
		return err
	}
	out.head(fmt.Sprintf("%s: what went where (nftables counters)", famName(vip)))
	printCounters(out, d)
	if d[1].Packets != d[0].Packets || d[3].Packets != 0 {
		return fmt.Errorf("counters do not show DSR: sent %v, director forwarded %v, director saw replies %v", d[0], d[1], d[3])
	}
	mac, state, err := l.ClientNeighbor(vip)
	if err != nil {
		return err
	}
	out.p("  Client's neighbour table: %s lladdr %s %s  -> %s\n", vip, mac, state, l.NameOf(mac))
	if mac.String() != l.Director.MAC.String() {
		return fmt.Errorf("client's neighbour entry for %s is %s (%s), not the director", vip, mac, l.NameOf(mac))
	}
	return nil
}

// demoNeighbors asks the LAN who has the VIP and checks that only the
// director answers.
func demoNeighbors(ctx context.Context, out *narrator, l *lab.Lab, vip netip.Addr) error {
	arpName := "ARP"
	if vip.Is6() {
		arpName = "NDP (Neighbour Solicitation)"
	}
	out.head(fmt.Sprintf("%s: who answers %s for the VIP %s?", famName(vip), arpName, vip))
	if err := l.FlushClientNeighbor(vip); err != nil {
		return err
	}
	pr, err := l.NewProber()
	if err != nil {
		return err
	}
	defer pr.Close()
	const probes = 10
	for range probes {
		if vip.Is6() {
			err = pr.SendNS()
		} else {
			err = pr.SendARP()
		}
		if err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(200 * time.Millisecond):
	}
	ans, err := pr.Answers()
	if err != nil {
		return err
	}
	got := ans.ARP
	if vip.Is6() {
		got = ans.NA
	}
	out.p("  The client sent %d requests \"who has %s?\" to every host on the LAN.\n  Answers by sender:\n", probes, vip)
	bad := false
	for _, n := range l.Nodes()[1:] {
		c := got[n.MAC.String()]
		out.p("    %-9s %s  %d\n", n.Name, n.MAC, c)
		if n.Role == lab.RoleServer && c > 0 {
			bad = true
		}
	}
	if bad || got[l.Director.MAC.String()] == 0 {
		return fmt.Errorf("%s for %s: want answers from the director only, got %v", arpName, vip, got)
	}
	out.p("  Only the director answered, although every real server accepts traffic for the VIP.\n")
	return nil
}

// demoHTTP sends the requests, one connection each, and checks that every
// real server answered some.
func demoHTTP(ctx context.Context, out *narrator, l *lab.Lab, vip netip.Addr, requests int) error {
	hc := l.HTTPClient(5 * time.Second)
	per := map[string]int{}
	var line []string
	for i := range requests {
		name, _, err := l.Fetch(ctx, hc, vip)
		if err != nil {
			return fmt.Errorf("request %d: %w", i+1, err)
		}
		per[name]++
		line = append(line, name)
	}
	out.p("  Each request is a new TCP connection (new source port, so a new hash):\n")
	for i := 0; i < len(line); i += 10 {
		out.p("    %s\n", strings.Join(line[i:min(i+10, len(line))], " "))
	}
	names := make([]string, 0, len(per))
	for n := range per {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out.p("    %s answered %d\n", n, per[n])
	}
	for _, rs := range l.Servers {
		if per[rs.Name] == 0 {
			return fmt.Errorf("%s answered none of %d requests", rs.Name, requests)
		}
	}
	return nil
}

// demoDNS sends DNS queries to the VIP and shows who answered and what
// passed the director.
func demoDNS(ctx context.Context, out *narrator, l *lab.Lab, vip netip.Addr, queries int) error {
	p := out.p
	server := netip.AddrPortFrom(vip, lab.DNSPort)
	out.head(fmt.Sprintf("%s: %d DNS queries (UDP) to %s", famName(vip), queries, server))
	c0, err := snapCounters(l, udpCounters)
	if err != nil {
		return err
	}
	res, err := l.QueryDNS(ctx, server, queries, 3*time.Second)
	if err != nil {
		return err
	}
	p("  TXT %s from %d client sockets at once (each a new source port, so a new hash):\n", lab.WhoamiName, queries)
	per := map[string]int{}
	for _, r := range res {
		if r.Err != nil {
			return fmt.Errorf("DNS query from %s to %s: %w", r.Local, server, r.Err)
		}
		per[r.Server]++
		p("    %-22s <- %s  %q\n", r.Local, server, r.TXT)
	}
	for _, rs := range l.Servers {
		if per[rs.Name] == 0 {
			return fmt.Errorf("%s answered none of %d DNS queries", rs.Name, queries)
		}
	}
	c1, err := snapCounters(l, udpCounters)
	if err != nil {
		return err
	}
	d := c1.sub(c0)
	printCounters(out, d)
	if d[1].Packets != d[0].Packets || d[3].Packets != 0 || d[2].Packets != uint64(queries) {
		return fmt.Errorf("UDP counters do not show DSR: sent %v, director forwarded %v, client received %v, director saw replies %v", d[0], d[1], d[2], d[3])
	}
	p("  Every answer came from the VIP (the client's connected sockets accept nothing\n")
	p("  else), sent by the real server straight to the client. A UDP server on the\n")
	p("  wildcard without IP_PKTINFO would answer from its own address and the client\n")
	p("  would drop every answer (see TestUDPSourcePitfall in docs/lab.md).\n")
	return nil
}
