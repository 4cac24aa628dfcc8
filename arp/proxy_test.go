package arp

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/sysctl"
)

// proxyFacts is a VIP arriving on eth0 with the route given, every sysctl 0
// unless set.
func proxyFacts(vip string, route ProxyRoute, entry string, sysctls map[string]string) ProxyFacts {
	f := ProxyFacts{NIC: "eth0", VIP: netip.MustParseAddr(vip), Route: route, ProxyEntry: entry, Sysctls: map[string]string{}}
	if route == RouteOtherDev {
		f.OutDev = "eth1"
	} else if route == RouteSameDev {
		f.OutDev = "eth0"
	}
	for _, p := range ProxySysctls(f.VIP.Is6(), f.NIC, f.OutDev) {
		f.Sysctls[p.Key()] = "0"
	}
	for k, v := range sysctls {
		f.Sysctls[sysctl.ParseKey(k).Key()] = v
	}
	return f
}

func rulesOf(fs []ProxyFinding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Rule)
	}
	return out
}

// The sysctls, entries and VIPs of proxyExposureCases.
const (
	fwd     = "net/ipv4/conf/eth0/forwarding"
	pa      = "net/ipv4/conf/eth0/proxy_arp"
	paAll   = "net/ipv4/conf/all/proxy_arp"
	pv      = "net/ipv4/conf/eth0/proxy_arp_pvlan"
	pvAll   = "net/ipv4/conf/all/proxy_arp_pvlan"
	mid     = "net/ipv4/conf/eth0/medium_id"
	midOut  = "net/ipv4/conf/eth1/medium_id"
	fwd6    = "net/ipv6/conf/eth0/forwarding"
	ndp     = "net/ipv6/conf/eth0/proxy_ndp"
	ndpAll  = "net/ipv6/conf/all/proxy_ndp"
	entry4  = "proxy 192.0.2.10 dev eth0"
	entry6  = "proxy 2001:db8::10 dev eth0"
	vip4    = "192.0.2.10"
	vip6    = "2001:db8::10"
	fwdAll  = "net/ipv4/conf/all/forwarding"
	fwd6All = "net/ipv6/conf/all/forwarding"
)

// on is the sysctls given, each 1.
func on(kv ...string) map[string]string {
	m := map[string]string{}
	for _, k := range kv {
		m[k] = "1"
	}
	return m
}

var proxyExposureCases = []struct {
	name  string
	f     ProxyFacts
	rules []string
	// words the reason must contain (the sysctl or entry to blame)
	words []string
}{
	{"the issue's host: proxy_arp on the NIC, forwarding, default route elsewhere",
		proxyFacts(vip4, RouteOtherDev, "", on(fwd, pa)), []string{"proxy_arp"}, []string{"net.ipv4.conf.eth0.proxy_arp=1", "out eth1"}},
	{"all.proxy_arp alone (ORCONF)", proxyFacts(vip4, RouteOtherDev, "", on(fwd, paAll)), []string{"proxy_arp"}, []string{"net.ipv4.conf.all.proxy_arp=1"}},
	{"any non-zero value is on", proxyFacts(vip4, RouteOtherDev, "", map[string]string{fwd: "1", pa: "2"}), []string{"proxy_arp"}, []string{"proxy_arp=2"}},
	{"no forwarding on the NIC: silent", proxyFacts(vip4, RouteOtherDev, "", on(pa, paAll, fwdAll)), nil, nil},
	{"route back out the NIC: proxy_arp silent", proxyFacts(vip4, RouteSameDev, "", on(fwd, pa)), nil, nil},
	{"no route: silent", proxyFacts(vip4, NoRoute, entry4, on(fwd, pa, pv)), nil, nil},
	{"local VIP: arp_ignore's business", proxyFacts(vip4, RouteLocal, entry4, on(fwd, pa, pv)), nil, nil},
	{"medium_id -1 disables proxy_arp", proxyFacts(vip4, RouteOtherDev, "", map[string]string{fwd: "1", pa: "1", mid: "-1"}), nil, nil},
	{"same medium: no proxy between them", proxyFacts(vip4, RouteOtherDev, "", map[string]string{fwd: "1", pa: "1", mid: "3", midOut: "3"}), nil, nil},
	{"out device medium -1", proxyFacts(vip4, RouteOtherDev, "", map[string]string{fwd: "1", pa: "1", mid: "3", midOut: "-1"}), nil, nil},
	{"other medium answers", proxyFacts(vip4, RouteOtherDev, "", map[string]string{fwd: "1", pa: "1", mid: "3", midOut: "4"}), []string{"proxy_arp"}, nil},
	{"medium_id does not stop an entry", proxyFacts(vip4, RouteOtherDev, entry4, map[string]string{fwd: "1", mid: "-1"}), []string{"proxy neighbour entry"}, []string{entry4}},
	{"pvlan, VIP in the NIC's subnet", proxyFacts(vip4, RouteSameDev, "", on(fwd, pv)), []string{"proxy_arp_pvlan"}, []string{"net.ipv4.conf.eth0.proxy_arp_pvlan=1"}},
	{"all.proxy_arp_pvlan alone", proxyFacts(vip4, RouteSameDev, "", on(fwd, pvAll)), []string{"proxy_arp_pvlan"}, []string{"all.proxy_arp_pvlan=1"}},
	{"pvlan with the route elsewhere: silent", proxyFacts(vip4, RouteOtherDev, "", on(fwd, pv)), nil, nil},
	{"pvlan without forwarding: silent", proxyFacts(vip4, RouteSameDev, "", on(pv)), nil, nil},
	{"entry with the route elsewhere", proxyFacts(vip4, RouteOtherDev, entry4, on(fwd)), []string{"proxy neighbour entry"}, []string{entry4}},
	{"entry with the route back out the NIC: silent", proxyFacts(vip4, RouteSameDev, entry4, on(fwd)), nil, nil},
	{"entry without forwarding: silent", proxyFacts(vip4, RouteOtherDev, entry4, nil), nil, nil},
	{"every arm at once", proxyFacts(vip4, RouteOtherDev, entry4, on(fwd, pa, pv)), []string{"proxy_arp", "proxy neighbour entry"}, nil},
	{"missing NIC sysctls: silent", ProxyFacts{NIC: "eth0", VIP: netip.MustParseAddr(vip4), Route: RouteOtherDev, OutDev: "eth1", Sysctls: map[string]string{paAll: "1"}}, nil, nil},

	{"proxy_ndp with an entry and forwarding", proxyFacts(vip6, NoRoute, entry6, on(fwd6, ndp)), []string{"proxy_ndp"}, []string{"net.ipv6.conf.eth0.proxy_ndp=1", entry6}},
	{"all.proxy_ndp alone", proxyFacts(vip6, NoRoute, entry6, on(fwd6, ndpAll)), []string{"proxy_ndp"}, []string{"net.ipv6.conf.all.proxy_ndp=1"}},
	{"proxy_ndp without an entry: silent", proxyFacts(vip6, NoRoute, "", on(fwd6, ndp, ndpAll)), nil, nil},
	{"entry without proxy_ndp: silent", proxyFacts(vip6, NoRoute, entry6, on(fwd6)), nil, nil},
	{"proxy_ndp without forwarding on the NIC: silent", proxyFacts(vip6, NoRoute, entry6, on(ndp, fwd6All)), nil, nil},
	{"an IPv6 VIP ignores the IPv4 arms", proxyFacts(vip6, RouteOtherDev, entry6, on(fwd, pa, pv)), nil, nil},
}

// TestProxyExposure: each arm of arp_process's proxy branch and of
// ndisc_recv_ns, and what keeps each silent.
func TestProxyExposure(t *testing.T) {
	for _, c := range proxyExposureCases {
		t.Run(c.name, func(t *testing.T) {
			got := ProxyExposure(c.f)
			if !slices.Equal(rulesOf(got), c.rules) {
				t.Fatalf("rules %v, want %v (%v)", rulesOf(got), c.rules, got)
			}
			for _, w := range c.words {
				if !strings.Contains(got[0].Reason, w) {
					t.Errorf("reason %q does not name %q", got[0].Reason, w)
				}
			}
			for _, g := range got {
				if g.NIC != "eth0" || g.VIP != c.f.VIP {
					t.Errorf("finding %+v: wrong NIC or VIP", g)
				}
			}
		})
	}
}

func TestProxySysctls(t *testing.T) {
	var got []string
	for _, p := range ProxySysctls(false, "eth0.100", "eth1") {
		got = append(got, p.String())
	}
	want := []string{
		"net/ipv4/conf/eth0.100/forwarding",
		"net.ipv4.conf.all.proxy_arp", "net/ipv4/conf/eth0.100/proxy_arp",
		"net.ipv4.conf.all.proxy_arp_pvlan", "net/ipv4/conf/eth0.100/proxy_arp_pvlan",
		"net/ipv4/conf/eth0.100/medium_id", "net.ipv4.conf.eth1.medium_id",
	}
	if !slices.Equal(got, want) {
		t.Errorf("IPv4: %v, want %v", got, want)
	}
	if n := len(ProxySysctls(false, "eth0", "eth0")); n != 6 {
		t.Errorf("route out the NIC itself: %d paths, want 6 (no second medium_id)", n)
	}
	got = nil
	for _, p := range ProxySysctls(true, "eth0", "") {
		got = append(got, p.String())
	}
	want = []string{"net.ipv6.conf.eth0.forwarding", "net.ipv6.conf.all.proxy_ndp", "net.ipv6.conf.eth0.proxy_ndp"}
	if !slices.Equal(got, want) {
		t.Errorf("IPv6: %v, want %v", got, want)
	}
	if !ProxyEntryMatches(0, 7) || !ProxyEntryMatches(7, 7) || ProxyEntryMatches(3, 7) {
		t.Error("ProxyEntryMatches: want a match for no device and for the NIC, none for another device")
	}
}

func TestClassifyRoute(t *testing.T) {
	for _, c := range []struct {
		found    bool
		typ, out int
		want     ProxyRoute
	}{
		{false, 0, 0, NoRoute},
		{true, unix.RTN_LOCAL, 1, RouteLocal},
		{true, unix.RTN_UNICAST, 7, RouteSameDev},
		{true, unix.RTN_UNICAST, 3, RouteOtherDev},
		{true, unix.RTN_BROADCAST, 7, NoRoute},
		{true, unix.RTN_BLACKHOLE, 0, NoRoute},
	} {
		if got := ClassifyRoute(c.found, c.typ, c.out, 7); got != c.want {
			t.Errorf("ClassifyRoute(%v, %d, %d, 7) = %v, want %v", c.found, c.typ, c.out, got, c.want)
		}
	}
}
