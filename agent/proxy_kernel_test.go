package agent

import (
	"strings"
	"testing"
)

// TestProxyExposureStatus (issue 17 point 7): a forwarding host whose
// default route leaves by a second NIC, with proxy_arp on the LB-facing one,
// would answer ARP for firewalld mode's VIP (it is not local). The ARP guard
// makes that a warning; without the guard status must not claim ARP
// suppression. The kernel's own answers for each case are in
// firewall/proxy_kernel_test.go (arping-style probes with negative
// controls); this checks that status judges the same facts.
func TestProxyExposureStatus(t *testing.T) {
	th := newTestHost(t)
	ns := th.ns
	ns.AddDummy(t, "mgmt0", "10.50.0.2/24")
	ns.Exec(t, "ip", "route", "replace", "default", "via", "10.50.0.1", "dev", "mgmt0")
	ns.Exec(t, "sysctl", "-qw", "net.ipv4.conf.eth0/100.forwarding=1", "net.ipv4.conf.eth0/100.proxy_arp=1")

	th.apply(firewalldCfg)
	r := th.status(firewalldCfg)
	if !r.InSync || !r.Suppression {
		t.Fatalf("guarded: in sync %v, suppression %v, want both (the guard drops the requests):\n%s", r.InSync, r.Suppression, r)
	}
	if w := strings.Join(r.Warnings, "\n"); !strings.Contains(w, "proxy_arp=1") || !strings.Contains(w, "arp dsr-agent drops") {
		t.Errorf("guarded: warnings do not name the proxy exposure and the guard:\n%s", w)
	}

	// The guard gone (someone deleted dsr-agent's table): the kernel answers.
	ns.Exec(t, "nft", "delete", "table", "arp", "dsr-agent")
	r = th.status(firewalldCfg)
	if r.InSync || r.Suppression {
		t.Fatalf("unguarded: in sync %v, suppression %v, want neither:\n%s", r.InSync, r.Suppression, r)
	}
	if !hasDiff(r, ProxyAnswers, "192.0.2.10 on eth0.100") {
		t.Errorf("unguarded: no %s difference for 192.0.2.10:\n%s", ProxyAnswers, r)
	}
	// Negative control: proxy_arp off, the same missing table is only the
	// table's own difference.
	ns.Exec(t, "sysctl", "-qw", "net.ipv4.conf.eth0/100.proxy_arp=0")
	if r = th.status(firewalldCfg); hasDiff(r, ProxyAnswers, "") {
		t.Errorf("proxy_arp off: still a %s difference:\n%s", ProxyAnswers, r)
	}
	// A proxy neighbour entry answers too (route out another device).
	ns.Exec(t, "ip", "neigh", "add", "proxy", "192.0.2.10", "dev", "eth0.100")
	if r = th.status(firewalldCfg); !hasDiff(r, ProxyAnswers, "192.0.2.10 on eth0.100") || !strings.Contains(r.String(), "proxy 192.0.2.10") {
		t.Errorf("proxy entry: no %s difference naming it:\n%s", ProxyAnswers, r)
	}
	th.apply(firewalldCfg)
	th.requireInSync(firewalldCfg)
}

// An IPv6 VIP on lo is not on the NIC, so ndisc_recv_ns reaches its proxy
// branch: with forwarding, proxy_ndp and a proxy entry the host answers
// Neighbour Solicitations for it in loopback mode. dsr-agent does not own
// those settings: status says so instead of claiming suppression.
func TestProxyNDPOnLoopbackVIP(t *testing.T) {
	th := newTestHost(t)
	th.apply(loopbackCfg)
	th.requireInSync(loopbackCfg)
	th.ns.Exec(t, "sysctl", "-qw", "net.ipv6.conf.eth0/100.forwarding=1", "net.ipv6.conf.eth0/100.proxy_ndp=1")
	// Negative control: without a proxy entry NDP answers nothing.
	th.requireInSync(loopbackCfg)
	th.ns.Exec(t, "ip", "-6", "neigh", "add", "proxy", "2001:db8::10", "dev", "eth0.100")
	r := th.status(loopbackCfg)
	if r.InSync || r.Suppression || !hasDiff(r, ProxyAnswers, "2001:db8::10 on eth0.100") {
		t.Fatalf("proxy NDP entry for a VIP on lo: in sync %v, suppression %v:\n%s", r.InSync, r.Suppression, r)
	}
	// apply changes nothing of the host's proxy settings: status must not
	// send the operator there.
	if s := r.String(); strings.Contains(s, "run `dsr-agent apply`") || !strings.Contains(s, "proxy ARP/NDP is the host's setting") {
		t.Errorf("status text for a proxy-only difference:\n%s", s)
	}
}

func hasDiff(r *Report, kind DriftKind, subject string) bool {
	for _, d := range r.Differences {
		if d.Kind == kind && (subject == "" || d.Subject == subject) {
			return true
		}
	}
	return false
}
