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
	p, err := ndprobe.Open(ns.Handle, ifname, ip4, ip6, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
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
