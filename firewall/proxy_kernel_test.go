package firewall

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/arp"
	"github.com/dsr-agent/dsr-agent/internal/inet"
	"github.com/dsr-agent/dsr-agent/internal/ndprobe"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
	"github.com/dsr-agent/dsr-agent/sysctl"
)

// The proxy ARP / proxy NDP lab (issue 17 point 7): a client and a real
// server on one cable (eth0 both sides); the real server has a second NIC
// (eth1, a veth: no dummy driver here) carrying the default route, as a
// management network does. The VIPs are never local to the server, as in
// firewalld mode:
const (
	pxSrv4 = "198.51.100.21"
	pxCli4 = "198.51.100.31"
	pxSrv6 = "2001:db8:1::21"
	pxCli6 = "2001:db8:1::31"
	// pxVIPOther is routed out eth1 by the default route.
	pxVIPOther = "192.0.2.10"
	// pxVIPSame is inside eth0's subnet: routed back out eth0.
	pxVIPSame = "198.51.100.10"
	// pxVIPNone has an unreachable route.
	pxVIPNone = "10.255.0.10"
	pxVIP6    = "2001:db8:99::10"
)

type proxyLab struct {
	srv, cli *netnstest.NS
	proc     *sysctl.Proc
	eth0     int // the server's eth0 ifindex
	srvMAC   string
	probe    *ndprobe.Probe
}

func newProxyLab(t *testing.T) *proxyLab {
	t.Helper()
	srv, cli := netnstest.New(t), netnstest.New(t)
	netnstest.Connect(t, cli, "eth0", []string{pxCli4 + "/24", pxCli6 + "/64"}, srv, "eth0", []string{pxSrv4 + "/24", pxSrv6 + "/64"})
	srv.AddDummy(t, "eth1", "203.0.113.21/24")
	srv.Exec(t, "ip", "route", "add", "default", "via", "203.0.113.1", "dev", "eth1")
	srv.Exec(t, "ip", "route", "add", "unreachable", "10.255.0.0/16")
	l := &proxyLab{srv: srv, cli: cli, proc: &sysctl.Proc{Root: "/proc/sys", NS: srv.Handle}}
	eth0, err := srv.Netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	l.eth0, l.srvMAC = eth0.Attrs().Index, eth0.Attrs().HardwareAddr.String()
	// Proxy answers to broadcast/multicast requests wait a random part of
	// proxy_delay (0.8 s by default); 0 answers at once, so a probe
	// completes with the reply for the host's own address sent after it.
	// TestProxyGuardDelayed keeps the default.
	l.sysctl(t, "net/ipv4/neigh/eth0/proxy_delay", "0")
	l.sysctl(t, "net/ipv6/neigh/eth0/proxy_delay", "0")
	// A new namespace inherits the host's IPv4 "all" and "default": a
	// strict rp_filter would refuse the gratuitous request (its sender, the
	// VIP, routes out eth1) before any proxy rule is consulted.
	for _, p := range []string{"net/ipv4/conf/all/rp_filter", "net/ipv4/conf/eth0/rp_filter"} {
		l.sysctl(t, p, "0")
	}
	l.probe = newNDProbe(t, cli, "eth0", netip.MustParseAddr(pxCli4), netip.MustParseAddr(pxCli6))
	return l
}

func (l *proxyLab) sysctl(t *testing.T, path, v string) {
	t.Helper()
	if err := l.proc.Write(sysctl.ParseKey(path), v); err != nil {
		t.Fatal(err)
	}
}

// setEntry adds (on) or removes the proxy neighbour entry for vip: on eth0,
// or with no device when ifindex is 0.
func (l *proxyLab) setEntry(t *testing.T, vip string, ifindex int, on bool) {
	t.Helper()
	n := &netlink.Neigh{LinkIndex: ifindex, IP: net.ParseIP(vip), Flags: netlink.NTF_PROXY}
	var err error
	if on {
		err = l.srv.Netlink.NeighAdd(n)
	} else {
		err = l.srv.Netlink.NeighDel(n)
	}
	if err != nil {
		t.Fatalf("proxy entry %s ifindex %d on=%v: %v", vip, ifindex, on, err)
	}
}

// facts reads what the judgement needs from the server's kernel, the way
// dsr-agent would: the route (ip route get), the proxy entries (ip neigh
// show proxy) and the sysctls.
func (l *proxyLab) facts(t *testing.T, vip string) arp.ProxyFacts {
	t.Helper()
	a := netip.MustParseAddr(vip)
	f := arp.ProxyFacts{NIC: "eth0", VIP: a, Sysctls: map[string]string{}}
	if a.Is4() {
		// As dsr-agent does it: `ip route get VIP`, classified.
		routes, err := l.srv.Netlink.RouteGet(net.ParseIP(vip))
		found := err == nil && len(routes) > 0
		var typ, out int
		if found {
			typ, out = routes[0].Type, routes[0].LinkIndex
		}
		f.Route = arp.ClassifyRoute(found, typ, out, l.eth0)
		if f.Route == arp.RouteOtherDev || f.Route == arp.RouteSameDev {
			link, err := l.srv.Netlink.LinkByIndex(out)
			if err != nil {
				t.Fatal(err)
			}
			f.OutDev = link.Attrs().Name
		}
	}
	family := netlink.FAMILY_V4
	if a.Is6() {
		family = netlink.FAMILY_V6
	}
	entries, err := l.srv.Netlink.NeighProxyList(0, family)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IP.Equal(net.ParseIP(vip)) && arp.ProxyEntryMatches(e.LinkIndex, l.eth0) {
			f.ProxyEntry = fmt.Sprintf("proxy %s ifindex %d", vip, e.LinkIndex)
		}
	}
	for _, p := range arp.ProxySysctls(a.Is6(), f.NIC, f.OutDev) {
		v, err := l.proc.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Sysctls[p.Key()] = v
	}
	return f
}

// answers probes vip from the client and returns the MACs that answered.
func (l *proxyLab) answers(t *testing.T, vip string) []string {
	t.Helper()
	barrier := pxSrv4
	if strings.Contains(vip, ":") {
		barrier = pxSrv6
	}
	return ask(t, l.probe, netip.MustParseAddr(vip), netip.MustParseAddr(barrier), 0)
}

// TestProxyJudgementMatchesKernel: for every combination of the sysctls and
// entries arp.ProxyRules consults, and the three kinds of route, the
// judgement agrees with what the kernel does when the client asks. The
// first cases are the host and its negative control.
func TestProxyJudgementMatchesKernel(t *testing.T) {
	l := newProxyLab(t)
	eth0 := l.eth0
	check := func(t *testing.T, vip, label string) bool {
		t.Helper()
		f := l.facts(t, vip)
		judged := arp.ProxyExposure(f)
		got := l.answers(t, vip)
		if (len(judged) > 0) != (len(got) > 0) {
			t.Errorf("%s %s: judged %v, but the kernel's answers are %v (facts %+v)", vip, label, judged, got, f)
		}
		for _, mac := range got {
			if mac != l.srvMAC {
				t.Errorf("%s %s: answer from %s, not the server (%s)", vip, label, mac, l.srvMAC)
			}
		}
		return len(got) > 0
	}

	// The host, measured first: proxy_arp on the LB NIC,
	// forwarding on, the default route on eth1.
	l.sysctl(t, "net/ipv4/conf/eth0/forwarding", "1")
	l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp", "1")
	if !check(t, pxVIPOther, "issue 17 host") {
		t.Fatal("the issue's host does not answer ARP for the VIP: the lab cannot show the fault")
	}
	l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp", "0")
	if check(t, pxVIPOther, "proxy_arp off") {
		t.Fatal("answered with proxy_arp off")
	}

	for vip, want := range map[string]arp.ProxyRoute{pxVIPOther: arp.RouteOtherDev, pxVIPSame: arp.RouteSameDev, pxVIPNone: arp.NoRoute} {
		if got := l.facts(t, vip).Route; got != want {
			t.Fatalf("%s: classified %v, want %v", vip, got, want)
		}
	}
	answered, silent := 0, 0
	bits := func(n, i int) string { return strconv.Itoa(n >> i & 1) }
	for _, vip := range []string{pxVIPOther, pxVIPSame, pxVIPNone} {
		for n := 0; n < 1<<6; n++ {
			label := fmt.Sprintf("forwarding=%s all.proxy_arp=%s eth0.proxy_arp=%s all.proxy_arp_pvlan=%s eth0.proxy_arp_pvlan=%s entry=%s",
				bits(n, 0), bits(n, 1), bits(n, 2), bits(n, 3), bits(n, 4), bits(n, 5))
			l.sysctl(t, "net/ipv4/conf/eth0/forwarding", bits(n, 0))
			l.sysctl(t, "net/ipv4/conf/all/proxy_arp", bits(n, 1))
			l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp", bits(n, 2))
			l.sysctl(t, "net/ipv4/conf/all/proxy_arp_pvlan", bits(n, 3))
			l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp_pvlan", bits(n, 4))
			if n>>5&1 == 1 {
				l.setEntry(t, vip, eth0, true)
			}
			if check(t, vip, label) {
				answered++
			} else {
				silent++
			}
			if n>>5&1 == 1 {
				l.setEntry(t, vip, eth0, false)
			}
		}
	}
	// medium_id: -1 switches proxy_arp off on the NIC, an entry still
	// answers; two NICs on one medium do not proxy for each other.
	l.sysctl(t, "net/ipv4/conf/all/proxy_arp", "0")
	l.sysctl(t, "net/ipv4/conf/all/proxy_arp_pvlan", "0")
	l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp_pvlan", "0")
	l.sysctl(t, "net/ipv4/conf/eth0/forwarding", "1")
	l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp", "1")
	for _, m := range [][2]string{{"-1", "0"}, {"3", "3"}, {"3", "4"}, {"3", "-1"}} {
		l.sysctl(t, "net/ipv4/conf/eth0/medium_id", m[0])
		l.sysctl(t, "net/ipv4/conf/eth1/medium_id", m[1])
		check(t, pxVIPOther, "medium_id "+m[0]+"/"+m[1])
	}
	l.sysctl(t, "net/ipv4/conf/eth0/medium_id", "-1")
	l.setEntry(t, pxVIPOther, eth0, true)
	check(t, pxVIPOther, "medium_id -1 with an entry")
	l.setEntry(t, pxVIPOther, eth0, false)
	l.sysctl(t, "net/ipv4/conf/eth0/medium_id", "0")
	// An entry without a device matches every device.
	l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp", "0")
	l.setEntry(t, pxVIPOther, 0, true)
	if !check(t, pxVIPOther, "device-less entry") {
		t.Error("a proxy entry without a device did not answer")
	}
	l.setEntry(t, pxVIPOther, 0, false)

	// IPv6: forwarding x proxy_ndp (all, eth0) x entry (none, on eth0). An
	// IPv6 proxy entry always has a device: the kernel refuses one without
	// (pndisc_constructor needs the device to join the solicited-node
	// group; ENOBUFS).
	for n := 0; n < 1<<3; n++ {
		for _, entry := range []int{-1, eth0} {
			label := fmt.Sprintf("forwarding=%s all.proxy_ndp=%s eth0.proxy_ndp=%s entry ifindex %d", bits(n, 0), bits(n, 1), bits(n, 2), entry)
			l.sysctl(t, "net/ipv6/conf/eth0/forwarding", bits(n, 0))
			l.sysctl(t, "net/ipv6/conf/all/proxy_ndp", bits(n, 1))
			l.sysctl(t, "net/ipv6/conf/eth0/proxy_ndp", bits(n, 2))
			if entry >= 0 {
				l.setEntry(t, pxVIP6, entry, true)
			}
			if check(t, pxVIP6, label) {
				answered++
			} else {
				silent++
			}
			if entry >= 0 {
				l.setEntry(t, pxVIP6, entry, false)
			}
		}
	}
	t.Logf("%d combinations answered, %d silent; the judgement agreed on each", answered, silent)
	if answered < 20 || silent < 20 {
		t.Errorf("answered %d, silent %d: the matrix does not exercise both outcomes", answered, silent)
	}
}

// exposeAll switches on every proxy path the lab has: proxy_arp (for the
// VIP routed out eth1), proxy_arp_pvlan (for the VIP in eth0's subnet),
// proxy entries for the IPv4 VIP and the IPv6 one, proxy_ndp.
func (l *proxyLab) exposeAll(t *testing.T) {
	for _, kv := range [][2]string{
		{"net/ipv4/conf/eth0/forwarding", "1"}, {"net/ipv4/conf/eth0/proxy_arp", "1"},
		{"net/ipv4/conf/eth0/proxy_arp_pvlan", "1"},
		{"net/ipv6/conf/eth0/forwarding", "1"}, {"net/ipv6/conf/eth0/proxy_ndp", "1"},
	} {
		l.sysctl(t, kv[0], kv[1])
	}
	l.setEntry(t, pxVIPOther, l.eth0, true)
	l.setEntry(t, pxVIP6, l.eth0, true)
}

func (l *proxyLab) guard(t *testing.T) {
	t.Helper()
	m := &Manager{Conn: l.srv.NFT(t)}
	var vips []netip.Addr
	for _, v := range []string{pxVIPOther, pxVIPSame, pxVIPNone} {
		vips = append(vips, netip.MustParseAddr(v))
	}
	if err := m.Replace(&ARPGuard{VIPs: vips}); err != nil {
		t.Fatal(err)
	}
	if err := m.Replace(&NATTable{IPv6: true, DropNS: true, Redirects: []Redirect{
		{VIP: netip.MustParseAddr(pxVIP6), Proto: inet.TCP, Port: 80, ToPort: 8080},
	}}); err != nil {
		t.Fatal(err)
	}
}

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

var packetsRE = regexp.MustCompile(`counter packets (\d+)`)

// ruleCounter sums the packet counters of a chain of dsr-agent's table.
func ruleCounter(t *testing.T, ns *netnstest.NS, family, chain string) int {
	t.Helper()
	var n int
	for _, m := range packetsRE.FindAllStringSubmatch(ns.Exec(t, "nft", "list", "chain", family, TableName, chain), -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
}

// newNDProbe asks from ifname in ns (ip4, ip6: its addresses).
func newNDProbe(t *testing.T, ns *netnstest.NS, ifname string, ip4, ip6 netip.Addr) *ndprobe.Probe {
	t.Helper()
	link, err := ns.Netlink.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	p := &ndprobe.Probe{Ifindex: link.Attrs().Index, MAC: link.Attrs().HardwareAddr, IP4: ip4, IP6: ip6}
	ns.Do(t, func() { p.FD, err = ndprobe.Socket(p.Ifindex, 50*time.Millisecond) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p.FD) })
	return p
}

// ask is Probe.Ask, failing the test when the barrier is not answered.
func ask(t *testing.T, p *ndprobe.Probe, target, barrier netip.Addr, linger time.Duration) []string {
	t.Helper()
	got, err := p.Ask(target, barrier, linger)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// askGratuitous is Probe.AskGratuitous, failing the test when the barrier
// is not answered.
func askGratuitous(t *testing.T, p *ndprobe.Probe, vip, barrier netip.Addr) []string {
	t.Helper()
	got, err := p.AskGratuitous(vip, barrier)
	if err != nil {
		t.Fatal(err)
	}
	return got
}
