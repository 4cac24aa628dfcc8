package firewall

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/dsr-agent/dsr-agent/arp"
)

// TestProxyJudgementMatchesKernel: for every combination of the sysctls and
// entries arp.ProxyRules consults, and the three kinds of route, the
// judgement agrees with what the kernel does when the client asks. The
// first cases are the issue's host and its negative control.
func TestProxyJudgementMatchesKernel(t *testing.T) {
	l := newProxyLab(t)
	l.checkIssueHost(t)
	a4, s4 := l.checkMatrix4(t)
	l.checkMediumAndEntries(t)
	a6, s6 := l.checkMatrix6(t)
	answered, silent := a4+a6, s4+s6
	t.Logf("%d combinations answered, %d silent; the judgement agreed on each", answered, silent)
	if answered < 20 || silent < 20 {
		t.Errorf("answered %d, silent %d: the matrix does not exercise both outcomes", answered, silent)
	}
}

// check asks the kernel about vip and holds arp.ProxyExposure to its answer;
// it reports whether the kernel answered.
func (l *proxyLab) check(t *testing.T, vip, label string) bool {
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

// checkIssueHost measures the issue's host first: proxy_arp on the LB NIC,
// forwarding on, the default route on eth1; then the route classification
// of the lab's VIPs.
func (l *proxyLab) checkIssueHost(t *testing.T) {
	l.sysctl(t, "net/ipv4/conf/eth0/forwarding", "1")
	l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp", "1")
	if !l.check(t, pxVIPOther, "issue 17 host") {
		t.Fatal("the issue's host does not answer ARP for the VIP: the lab cannot show the fault")
	}
	l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp", "0")
	if l.check(t, pxVIPOther, "proxy_arp off") {
		t.Fatal("answered with proxy_arp off")
	}
	for vip, want := range map[string]arp.ProxyRoute{pxVIPOther: arp.RouteOtherDev, pxVIPSame: arp.RouteSameDev, pxVIPNone: arp.NoRoute} {
		if got := l.facts(t, vip).Route; got != want {
			t.Fatalf("%s: classified %v, want %v", vip, got, want)
		}
	}
}

func bits(n, i int) string { return strconv.Itoa(n >> i & 1) }

// checkMatrix4: forwarding x proxy_arp (all, eth0) x proxy_arp_pvlan (all,
// eth0) x an entry on eth0, for each kind of route.
func (l *proxyLab) checkMatrix4(t *testing.T) (answered, silent int) {
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
				l.setEntry(t, vip, l.eth0, true)
			}
			if l.check(t, vip, label) {
				answered++
			} else {
				silent++
			}
			if n>>5&1 == 1 {
				l.setEntry(t, vip, l.eth0, false)
			}
		}
	}
	return answered, silent
}

// checkMediumAndEntries: medium_id -1 switches proxy_arp off on the NIC, an
// entry still answers; two NICs on one medium do not proxy for each other;
// an entry without a device matches every device.
func (l *proxyLab) checkMediumAndEntries(t *testing.T) {
	l.sysctl(t, "net/ipv4/conf/all/proxy_arp", "0")
	l.sysctl(t, "net/ipv4/conf/all/proxy_arp_pvlan", "0")
	l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp_pvlan", "0")
	l.sysctl(t, "net/ipv4/conf/eth0/forwarding", "1")
	l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp", "1")
	for _, m := range [][2]string{{"-1", "0"}, {"3", "3"}, {"3", "4"}, {"3", "-1"}} {
		l.sysctl(t, "net/ipv4/conf/eth0/medium_id", m[0])
		l.sysctl(t, "net/ipv4/conf/eth1/medium_id", m[1])
		l.check(t, pxVIPOther, "medium_id "+m[0]+"/"+m[1])
	}
	l.sysctl(t, "net/ipv4/conf/eth0/medium_id", "-1")
	l.setEntry(t, pxVIPOther, l.eth0, true)
	l.check(t, pxVIPOther, "medium_id -1 with an entry")
	l.setEntry(t, pxVIPOther, l.eth0, false)
	l.sysctl(t, "net/ipv4/conf/eth0/medium_id", "0")
	l.sysctl(t, "net/ipv4/conf/eth0/proxy_arp", "0")
	l.setEntry(t, pxVIPOther, 0, true)
	if !l.check(t, pxVIPOther, "device-less entry") {
		t.Error("a proxy entry without a device did not answer")
	}
	l.setEntry(t, pxVIPOther, 0, false)
}

// checkMatrix6: forwarding x proxy_ndp (all, eth0) x entry (none, on
// eth0). An IPv6 proxy entry always has a device: the kernel refuses one
// without (pndisc_constructor needs the device to join the solicited-node
// group; ENOBUFS).
func (l *proxyLab) checkMatrix6(t *testing.T) (answered, silent int) {
	for n := 0; n < 1<<3; n++ {
		for _, entry := range []int{-1, l.eth0} {
			label := fmt.Sprintf("forwarding=%s all.proxy_ndp=%s eth0.proxy_ndp=%s entry ifindex %d", bits(n, 0), bits(n, 1), bits(n, 2), entry)
			l.sysctl(t, "net/ipv6/conf/eth0/forwarding", bits(n, 0))
			l.sysctl(t, "net/ipv6/conf/all/proxy_ndp", bits(n, 1))
			l.sysctl(t, "net/ipv6/conf/eth0/proxy_ndp", bits(n, 2))
			if entry >= 0 {
				l.setEntry(t, pxVIP6, entry, true)
			}
			if l.check(t, pxVIP6, label) {
				answered++
			} else {
				silent++
			}
			if entry >= 0 {
				l.setEntry(t, pxVIP6, entry, false)
			}
		}
	}
	return answered, silent
}
