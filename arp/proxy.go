package arp

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/sysctl"
)

// Proxy ARP and proxy NDP: the kernel answers for an address that is NOT
// local when the host forwards and the receiving interface proxies for it.
// firewalld mode never configures the VIP, so its ARP safety cannot rest on
// arp_ignore (which judges local addresses only): these rules judge the VIP
// as the kernel sees it there, non-local. An IPv6 VIP on lo is judged by them
// too: ndisc_recv_ns looks for the target on the receiving interface only,
// so a VIP on lo is "not local" to the NIC and reaches the proxy branch.

// ProxyRoute is the kernel's route to a non-local IPv4 VIP for a request
// arriving on the LB-facing NIC (arp_process: ip_route_input_noref(skb, tip,
// sip, 0, dev)).
type ProxyRoute int

const (
	// NoRoute: no unicast route (none at all, unreachable, blackhole,
	// prohibit): ip_route_input fails or the type is not RTN_UNICAST, and
	// nothing is proxied.
	NoRoute ProxyRoute = iota
	// RouteSameDev: a unicast route out the NIC the request arrived on
	// (a VIP inside the NIC's subnet, the usual DSR layout).
	RouteSameDev
	// RouteOtherDev: a unicast route out another device (the default route
	// on a management or storage NIC).
	RouteOtherDev
	// RouteLocal: the VIP is a local address (loopback, arptables, tunnel
	// modes): arp_process takes its RTN_LOCAL branch, where arp_ignore
	// decides and no proxy rule is consulted.
	RouteLocal
)

func (r ProxyRoute) String() string {
	switch r {
	case NoRoute:
		return "no route"
	case RouteSameDev:
		return "route out the same device"
	case RouteOtherDev:
		return "route out another device"
	case RouteLocal:
		return "local"
	}
	return "route(" + strconv.Itoa(int(r)) + ")"
}

// ClassifyRoute turns the answer of a route lookup for the VIP (`ip route
// get VIP`: netlink RouteGet) into what arp_process sees from nic. found
// false (the lookup failed: unreachable, blackhole, prohibit, no route at
// all) is NoRoute; rtType RTN_LOCAL is RouteLocal; RTN_UNICAST out nic is
// RouteSameDev, out another device RouteOtherDev; any other type (broadcast,
// multicast) is NoRoute. An output lookup stands in for arp_process's input
// one (ip_route_input from nic, source = the requester): they differ only
// under policy rules that match iif or the source.
func ClassifyRoute(found bool, rtType int, outIfindex, nicIfindex int) ProxyRoute {
	switch {
	case !found:
		return NoRoute
	case rtType == unix.RTN_LOCAL:
		return RouteLocal
	case rtType != unix.RTN_UNICAST:
		return NoRoute
	case outIfindex == nicIfindex:
		return RouteSameDev
	}
	return RouteOtherDev
}

// ProxyFacts is what the kernel consults, besides the sysctls, when a
// request for VIP arrives on NIC.
type ProxyFacts struct {
	NIC string
	VIP netip.Addr
	// Route and OutDev (its device) matter for IPv4 only; ndisc_recv_ns
	// does no route lookup.
	Route  ProxyRoute
	OutDev string
	// ProxyEntry names a proxy neighbour entry for the VIP that matches
	// NIC ("" for none): one on NIC itself or one with no device, which
	// pneigh_lookup matches on every device (__pneigh_lookup_1: n->dev ==
	// dev || !n->dev). Use it as `ip neigh show proxy` lists it, e.g.
	// "proxy 192.0.2.10 dev eth0"; ProxyEntryMatches decides the match.
	ProxyEntry string
	// Sysctls are the current values of ProxySysctls, by Path.Key ("" when
	// missing: the interface is gone).
	Sysctls map[string]string
}

// ProxyEntryMatches reports whether a proxy neighbour entry on device
// entryIfindex (0: no device) answers for requests arriving on nicIfindex.
func ProxyEntryMatches(entryIfindex, nicIfindex int) bool {
	return entryIfindex == 0 || entryIfindex == nicIfindex
}

// ProxySysctls lists the sysctls ProxyExposure reads for a VIP of the given
// family arriving on nic (outDev: the route's device, "" for none): what the
// caller reads into ProxyFacts.Sysctls, and what the daemon polls (of them
// the kernel announces only proxy_arp, proxy_ndp and forwarding by netconf;
// proxy_arp_pvlan and medium_id change silently).
func ProxySysctls(v6 bool, nic, outDev string) []sysctl.Path {
	if v6 {
		return []sysctl.Path{sysctl.Conf6Path(nic, "forwarding"), sysctl.Conf6Path("all", "proxy_ndp"), sysctl.Conf6Path(nic, "proxy_ndp")}
	}
	out := []sysctl.Path{
		sysctl.ConfPath(nic, "forwarding"),
		sysctl.ConfPath("all", "proxy_arp"), sysctl.ConfPath(nic, "proxy_arp"),
		sysctl.ConfPath("all", "proxy_arp_pvlan"), sysctl.ConfPath(nic, "proxy_arp_pvlan"),
		sysctl.ConfPath(nic, "medium_id"),
	}
	if outDev != "" && outDev != nic {
		out = append(out, sysctl.ConfPath(outDev, "medium_id"))
	}
	return out
}

// ProxyRule is one way the kernel answers ARP or a Neighbour Solicitation
// for an address that is not local: the condition, with the kernel's
// reasons, judged on the facts.
type ProxyRule struct {
	Name string
	IPv6 bool
	// Answers returns why the kernel answers through this rule, "" if it
	// does not.
	Answers func(f ProxyFacts) string
}

// ProxyRules is the table of the kernel's proxy answers (net/ipv4/arp.c
// arp_process, net/ipv6/ndisc.c ndisc_recv_ns; Linux 6.18). Every IPv4 rule
// sits behind the same gate in arp_process, for a request (ARPOP_REQUEST)
// whose target is not local:
//
//	} else if (IN_DEV_FORWARD(in_dev)) {
//		if (addr_type == RTN_UNICAST &&
//		    (arp_fwd_proxy(in_dev, dev, rt) ||
//		     arp_fwd_pvlan(in_dev, dev, rt, sip, tip) ||
//		     (rt->dst.dev != dev && pneigh_lookup(&arp_tbl, net, &tip, dev))))
//			reply with dev's MAC (at once, or after a random part of
//			neigh/<dev>/proxy_delay via pneigh_enqueue)
//
// IN_DEV_FORWARD is the receiving interface's own forwarding value (not
// OR'ed with all; writing all.forwarding copies it to every interface, which
// is what ip_forward=1 on a Docker host does). ip_route_input itself refuses
// to forward without it and, for an ARP packet, refuses a route back out the
// receiving device unless proxy_arp_pvlan is on (__mkroute_input).
var ProxyRules = []ProxyRule{
	{
		// arp_fwd_proxy(): rt->dst.dev != dev, IN_DEV_PROXY_ARP (ORCONF:
		// all OR iface), then medium_id: 0 (default) answers, -1 never,
		// another value only if the out device's medium_id differs and is
		// not -1 (two NICs on the same medium do not proxy for each other).
		Name: "proxy_arp",
		Answers: func(f ProxyFacts) string {
			if f.Route != RouteOtherDev || !f.forwarding4() {
				return ""
			}
			on := f.orconf(sysctl.ConfPath("all", "proxy_arp"), sysctl.ConfPath(f.NIC, "proxy_arp"))
			if on == "" {
				return ""
			}
			imi := f.int(sysctl.ConfPath(f.NIC, "medium_id"))
			switch {
			case imi == -1:
				return ""
			case imi != 0:
				omi := f.int(sysctl.ConfPath(f.OutDev, "medium_id"))
				if omi == imi || omi == -1 {
					return ""
				}
			}
			return fmt.Sprintf("%s with %s forwarding and the route to %s out %s: the kernel answers ARP for the VIP with %s's MAC (proxy ARP, arp_fwd_proxy)",
				on, f.NIC, f.VIP, f.OutDev, f.NIC)
		},
	},
	{
		// arp_fwd_pvlan() (RFC 3069 private VLAN): the route goes back out
		// the receiving device, the sender is not the target (self probes
		// and gratuitous ARP are not answered) and IN_DEV_PROXY_ARP_PVLAN:
		// ORCONF on current kernels (a 2021 fix, "Fixes: 65324144b50b";
		// before it "all" was a no-op), checked on this kernel by
		// TestProxyJudgementMatchesKernel. The one proxy rule that exposes
		// a VIP inside the NIC's own subnet.
		Name: "proxy_arp_pvlan",
		Answers: func(f ProxyFacts) string {
			if f.Route != RouteSameDev || !f.forwarding4() {
				return ""
			}
			on := f.orconf(sysctl.ConfPath("all", "proxy_arp_pvlan"), sysctl.ConfPath(f.NIC, "proxy_arp_pvlan"))
			if on == "" {
				return ""
			}
			return fmt.Sprintf("%s with %s forwarding and the route to %s back out %s: the kernel answers ARP for the VIP with %s's MAC (private VLAN proxy ARP, arp_fwd_pvlan)",
				on, f.NIC, f.VIP, f.NIC, f.NIC)
		},
	},
	{
		// The third arm: a proxy neighbour entry (`ip neigh add proxy VIP
		// dev NIC`, or one with no device) answers whatever proxy_arp says,
		// as long as the route leaves by another device.
		Name: "proxy neighbour entry",
		Answers: func(f ProxyFacts) string {
			if f.Route != RouteOtherDev || !f.forwarding4() || f.ProxyEntry == "" {
				return ""
			}
			return fmt.Sprintf("%q with %s forwarding and the route to %s out %s: the kernel answers ARP for the VIP with %s's MAC (pneigh_lookup)",
				f.ProxyEntry, f.NIC, f.VIP, f.OutDev, f.NIC)
		},
	},
	{
		// ndisc_recv_ns(), target not on the receiving interface (a VIP on
		// lo counts as not there: ipv6_get_ifaddr(net, target, dev, 1)):
		//	if (ipv6_chk_acast_addr(net, dev, &msg->target) ||
		//	    (READ_ONCE(idev->cnf.forwarding) &&
		//	     (READ_ONCE(net->ipv6.devconf_all->proxy_ndp) ||
		//	      READ_ONCE(idev->cnf.proxy_ndp)) &&
		//	     (is_router = pndisc_is_router(&msg->target, dev)) >= 0))
		//		answer (delayed by proxy_delay for multicast NS)
		// No route is consulted; proxy_ndp alone answers nothing, the
		// entry (on the device or on none) is required.
		Name: "proxy_ndp",
		IPv6: true,
		Answers: func(f ProxyFacts) string {
			if f.int(sysctl.Conf6Path(f.NIC, "forwarding")) == 0 || f.ProxyEntry == "" {
				return ""
			}
			on := f.orconf(sysctl.Conf6Path("all", "proxy_ndp"), sysctl.Conf6Path(f.NIC, "proxy_ndp"))
			if on == "" {
				return ""
			}
			return fmt.Sprintf("%s and %q with %s forwarding: the kernel answers Neighbour Solicitations for the VIP with %s's MAC (proxy NDP, ndisc_recv_ns)",
				on, f.ProxyEntry, f.NIC, f.NIC)
		},
	},
}

// ProxyFinding is one way the kernel would answer for a VIP that is not
// local, and why.
type ProxyFinding struct {
	Rule   string
	NIC    string
	VIP    netip.Addr
	Reason string
}

func (f ProxyFinding) String() string { return fmt.Sprintf("%s: %s", f.NIC, f.Reason) }

// ProxyExposure judges the facts by ProxyRules: the ways the kernel would
// answer ARP (IPv4) or Neighbour Solicitations (IPv6) for the VIP arriving
// on the NIC; nil when it stays silent. A local IPv4 VIP is never judged
// here (arp_ignore's rules decide).
//
// Not modelled, and so never the cause of a false "silent": rp_filter (a
// strict reverse-path check on the requester's address can make
// ip_route_input fail, which only silences the kernel further) and
// anycast addresses on the NIC.
func ProxyExposure(f ProxyFacts) []ProxyFinding {
	if f.VIP.Is4() && f.Route == RouteLocal {
		return nil
	}
	var out []ProxyFinding
	for _, r := range ProxyRules {
		if r.IPv6 != f.VIP.Is6() {
			continue
		}
		if why := r.Answers(f); why != "" {
			out = append(out, ProxyFinding{Rule: r.Name, NIC: f.NIC, VIP: f.VIP, Reason: why})
		}
	}
	return out
}

// int reads a sysctl as the kernel holds it; missing or garbled counts as 0
// (a missing interface answers nothing; the values are plain
// proc_dointvec, so anything the kernel holds is a number).
func (f ProxyFacts) int(p sysctl.Path) int {
	v, err := strconv.Atoi(f.Sysctls[p.Key()])
	if err != nil {
		return 0
	}
	return v
}

func (f ProxyFacts) forwarding4() bool { return f.int(sysctl.ConfPath(f.NIC, "forwarding")) != 0 }

// orconf is IN_DEV_ORCONF: all || iface (any non-zero value is on). It
// returns the setting(s) that switch it on ("" when off), as sysctl(8)
// names them.
func (f ProxyFacts) orconf(all, iface sysctl.Path) string {
	var on []string
	for _, p := range []sysctl.Path{all, iface} {
		if v := f.int(p); v != 0 {
			on = append(on, fmt.Sprintf("%s=%d", p, v))
		}
	}
	return strings.Join(on, " and ")
}
