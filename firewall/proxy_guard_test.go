package firewall

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/arp"
)

// TestProxyGuard: with every proxy path open the server answers for each
// VIP (the negative control); with ARPGuard and the ip6 table's
// Neighbour Solicitation guard, nobody does, while the server still
// answers for its own addresses (the barrier of every probe).
func TestProxyGuard(t *testing.T) {
	l := newProxyLab(t)
	l.exposeAll(t)
	vips := []string{pxVIPOther, pxVIPSame, pxVIP6}
	for _, vip := range vips {
		if got := l.answers(t, vip); len(got) == 0 {
			t.Fatalf("negative control: %s unanswered with every proxy path open; the test could not fail", vip)
		}
	}
	l.guard(t)
	for _, vip := range vips {
		if got := l.answers(t, vip); len(got) != 0 {
			t.Errorf("%s answered by %v with the guard in place", vip, got)
		}
	}
	if n := ruleCounter(t, l.srv, "arp", "input"); n < 2 {
		t.Errorf("arp input drop counted %d requests, want the 2 probes", n)
	}
	if n := ruleCounter(t, l.srv, "ip6", "ns_vips"); n < 1 {
		t.Errorf("Neighbour Solicitation drop counted %d, want the probe", n)
	}
}

// TestProxyGuardGratuitous: the director's gratuitous ARP request for a VIP
// (sender = target = VIP) passes input, so this host's own neighbour entry
// for the VIP follows a failover; with proxy_arp on the kernel answers it,
// and output drops that answer.
func TestProxyGuardGratuitous(t *testing.T) {
	l := newProxyLab(t)
	l.exposeAll(t)
	vip, barrier := netip.MustParseAddr(pxVIPOther), netip.MustParseAddr(pxSrv4)
	if got := askGratuitous(t, l.probe, vip, barrier); len(got) == 0 {
		t.Fatal("negative control: the gratuitous request from the VIP is not answered by proxy ARP")
	}
	l.guard(t)
	if got := askGratuitous(t, l.probe, vip, barrier); len(got) != 0 {
		t.Errorf("gratuitous ARP for %s answered by %v with the guard in place", vip, got)
	}
	if n := ruleCounter(t, l.srv, "arp", "output"); n < 1 {
		t.Errorf("arp output drop counted %d, want the proxy reply to the gratuitous request", n)
	}

	// Without proxy ARP the gratuitous request updates the server's own
	// entry for the VIP (the VIP in eth0's subnet, reached through the
	// director): a new director's MAC is learnt. locktime 0: an entry
	// written a moment ago may be overridden.
	l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp_pvlan", "0")
	l.sysctl(t, "net/ipv4/neigh/eth0/locktime", "0")
	same := netip.MustParseAddr(pxVIPSame)
	entryMAC := func() string {
		out := l.srv.Exec(t, "ip", "neigh", "show", pxVIPSame, "dev", "eth0")
		if f := strings.Fields(out); len(f) > 2 && f[1] == "lladdr" {
			return f[2]
		}
		return ""
	}
	for _, tc := range []struct {
		name    string
		spec    Spec
		updates bool
	}{
		// arptables mode's input rule drops every ARP for a VIP: the
		// entry stays on the old director (the reason ARPGuard does not).
		{"arptables mode's rule", &ARPTable{Entries: []ARPEntry{{VIP: same, Real: netip.MustParseAddr(pxSrv4)}}}, false},
		{"ARPGuard", &ARPGuard{VIPs: []netip.Addr{same}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := (&Manager{Conn: l.srv.NFT(t)}).Replace(tc.spec); err != nil {
				t.Fatal(err)
			}
			l.srv.Exec(t, "ip", "neigh", "replace", pxVIPSame, "lladdr", "02:00:00:00:00:01", "dev", "eth0", "nud", "stale")
			askGratuitous(t, l.probe, same, barrier)
			got := entryMAC()
			if updated := got == l.probe.MAC.String(); updated != tc.updates {
				t.Errorf("server's entry for %s is %s after the gratuitous ARP from %s: updated %v, want %v", pxVIPSame, got, l.probe.MAC, updated, tc.updates)
			}
		})
	}
}

// TestProxyGuardDelayed: with the default proxy_delay the kernel queues its
// proxy answers (pneigh_enqueue) and sends them later from arp_process
// again, past the input hook. The input drop comes first (arp_rcv's
// NF_ARP_IN), so nothing is queued.
func TestProxyGuardDelayed(t *testing.T) {
	l := newProxyLab(t)
	l.exposeAll(t)
	for _, p := range []string{"net/ipv4/neigh/eth0/proxy_delay", "net/ipv6/neigh/eth0/proxy_delay"} {
		l.sysctl(t, p, "80") // the kernel's default: 0.8 s, in USER_HZ
	}
	const linger = 2 * time.Second // more than the longest random delay
	for _, vip := range []string{pxVIPOther, pxVIP6} {
		barrier := pxSrv4
		if strings.Contains(vip, ":") {
			barrier = pxSrv6
		}
		if got := ask(t, l.probe, netip.MustParseAddr(vip), netip.MustParseAddr(barrier), linger); len(got) == 0 {
			t.Fatalf("negative control: no delayed proxy answer for %s", vip)
		}
	}
	l.guard(t)
	for _, vip := range []string{pxVIPOther, pxVIP6} {
		barrier := pxSrv4
		if strings.Contains(vip, ":") {
			barrier = pxSrv6
		}
		if got := ask(t, l.probe, netip.MustParseAddr(vip), netip.MustParseAddr(barrier), linger); len(got) != 0 {
			t.Errorf("%s answered by %v (delayed) with the guard in place", vip, got)
		}
	}
}

// TestProxyVIPOnLo: loopback and arptables modes put an IPv6 VIP on lo,
// and ndisc_recv_ns looks for the target on the receiving interface only:
// proxy NDP answers for it as for a VIP never configured. NSGuard (or the
// DropNS of the mode's ip6 table) silences it. An IPv4 VIP on lo is local:
// arp_process never reaches its proxy branch, and arp_ignore 1 keeps it
// quiet whatever the proxy settings.
func TestProxyVIPOnLo(t *testing.T) {
	l := newProxyLab(t)
	l.exposeAll(t)
	l.setEntry(t, pxVIPSame, l.eth0, true)
	l.srv.Exec(t, "ip", "addr", "add", pxVIP6+"/128", "dev", "lo")
	for _, v := range []string{pxVIPOther, pxVIPSame} {
		l.srv.Exec(t, "ip", "addr", "add", v+"/32", "dev", "lo")
	}
	l.sysctl(t, "net/ipv4/conf/all/arp_ignore", "1")
	l.sysctl(t, "net/ipv4/conf/eth0/arp_ignore", "1")
	for _, v := range []string{pxVIPOther, pxVIPSame} {
		f := l.facts(t, v)
		if f.Route != arp.RouteLocal {
			t.Fatalf("%s on lo: route %v, want local", v, f.Route)
		}
		if j := arp.ProxyExposure(f); j != nil {
			t.Errorf("%s on lo judged exposed: %v", v, j)
		}
		if got := l.answers(t, v); len(got) != 0 {
			t.Errorf("%s on lo with arp_ignore 1 answered by %v", v, got)
		}
	}
	if j := arp.ProxyExposure(l.facts(t, pxVIP6)); len(j) == 0 {
		t.Error("the IPv6 VIP on lo is not judged exposed")
	}
	if got := l.answers(t, pxVIP6); len(got) == 0 {
		t.Fatal("negative control: proxy NDP does not answer for the IPv6 VIP on lo")
	}
	if err := (&Manager{Conn: l.srv.NFT(t)}).Replace(&NSGuard{VIPs: []netip.Addr{netip.MustParseAddr(pxVIP6)}}); err != nil {
		t.Fatal(err)
	}
	if got := l.answers(t, pxVIP6); len(got) != 0 {
		t.Errorf("IPv6 VIP on lo answered by %v with NSGuard in place", got)
	}
}
