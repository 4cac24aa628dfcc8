package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/arp"
	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/internal/nldump"
	"github.com/dsr-agent/dsr-agent/sysctl"
)

// proxyView is what the kernel's proxy ARP / proxy NDP rules do for the
// VIPs that are not local on the LB-facing interfaces (firewalld mode's
// VIPs; IPv6 VIPs on lo, which ndisc_recv_ns does not find on the NIC):
// read by status and the daemon's snapshot, never by apply (the proxy
// settings belong to the host: Docker, routers; dsr-agent never writes them).
type proxyView struct {
	findings []proxyFinding
	err      error
}

// proxyFinding is one finding and the subject it is reported under: the
// VIP, or the prefix and the address of it that was judged.
type proxyFinding struct {
	arp.ProxyFinding
	subject string
}

// readProxy judges every served VIP and prefix that is not local on the
// receiving NIC by arp.ProxyRules. A prefix is judged at its first address
// (the route proxy_arp follows for it) and at every proxy neighbour entry
// inside it. It costs one sysctl read per NIC and family when forwarding is
// off (every proxy answer needs the NIC's own forwarding), and a
// proxy-neighbour dump plus a route lookup per VIP only when a proxy
// setting is on.
func (h *Host) readProxy(p *planned) {
	d := p.want
	if d.HandsOff || len(d.Served) == 0 {
		return
	}
	local := map[netip.Prefix]bool{}
	for _, a := range d.Addrs {
		if a.Link != "lo" || a.Prefix.Addr().Is4() {
			// An IPv4 address anywhere is local to every interface (the
			// weak host model): arp_ignore decides, not the proxy rules.
			local[netip.PrefixFrom(a.Prefix.Addr(), a.Prefix.Addr().BitLen())] = true
		}
	}
	for _, pf := range d.LocalPrefixes {
		// An IPv4 AnyIP route is local to every interface too; an IPv6 one
		// is no address ndisc_recv_ns finds: judged (docs/anyip.md).
		if pf.Addr().Is4() {
			local[pf] = true
		}
	}
	var v4, v6 []Served
	for _, v := range d.Served {
		switch {
		case local[v.Prefix]:
		case v.Addr().Is4():
			v4 = append(v4, v)
		default:
			v6 = append(v6, v)
		}
	}
	for _, nic := range d.Interfaces {
		for _, fam := range []struct {
			v6     bool
			served []Served
		}{{false, v4}, {true, v6}} {
			if len(fam.served) == 0 {
				continue
			}
			fs, err := h.proxyFindings(nic, p.facts.Index[nic], fam.v6, fam.served)
			p.proxy.findings = append(p.proxy.findings, fs...)
			p.proxy.err = errors.Join(p.proxy.err, err)
		}
	}
}

func (h *Host) proxyFindings(nic string, nicIndex int, v6 bool, served []Served) ([]proxyFinding, error) {
	vals := map[string]string{}
	read := func(paths []sysctl.Path) error {
		for _, path := range paths {
			if _, ok := vals[path.Key()]; ok {
				continue
			}
			v, err := h.sysctl.Read(path)
			if errors.Is(err, sysctl.ErrNotFound) {
				v, err = "", nil // the interface is gone: it answers nothing
			}
			if err != nil {
				return err
			}
			vals[path.Key()] = v
		}
		return nil
	}
	paths := arp.ProxySysctls(v6, nic, "")
	if err := read(paths[:1]); err != nil { // forwarding: every rule needs it
		return nil, err
	}
	if v := vals[paths[0].Key()]; v == "" || v == "0" {
		return nil, nil
	}
	if err := read(paths); err != nil {
		return nil, err
	}
	family := netlink.FAMILY_V4
	if v6 {
		family = netlink.FAMILY_V6
	}
	entries, err := nldump.Retry(func() ([]netlink.Neigh, error) { return h.nl.NeighProxyList(0, family) })
	if err != nil {
		return nil, fmt.Errorf("list proxy neighbour entries: %w", err)
	}
	entry := map[netip.Addr]string{}
	var entryAddrs []netip.Addr
	for _, n := range entries {
		a, ok := netip.AddrFromSlice(n.IP)
		if !ok || !arp.ProxyEntryMatches(n.LinkIndex, nicIndex) {
			continue
		}
		dev := "(any device)"
		if n.LinkIndex != 0 {
			dev = "dev " + nic
		}
		entry[a.Unmap()] = fmt.Sprintf("proxy %s %s", a.Unmap(), dev)
		entryAddrs = append(entryAddrs, a.Unmap())
	}
	slices.SortFunc(entryAddrs, netip.Addr.Compare)
	proxying := v6 || entryOrSysctlOn(vals, nic)
	var out []proxyFinding
	for _, v := range served {
		addrs := []netip.Addr{v.Addr()}
		if v.IsPrefix {
			for _, a := range entryAddrs {
				if v.Prefix.Contains(a) && a != v.Addr() {
					addrs = append(addrs, a)
				}
			}
		}
		for _, vip := range addrs {
			f := arp.ProxyFacts{NIC: nic, VIP: vip, ProxyEntry: entry[vip], Sysctls: vals}
			if !v6 {
				if !proxying && f.ProxyEntry == "" {
					continue // nothing on: no route lookup needed
				}
				route, outDev, err := h.routeTo(vip, nicIndex)
				if err != nil {
					return nil, err
				}
				f.Route, f.OutDev = route, outDev
				if err := read(arp.ProxySysctls(false, nic, outDev)); err != nil {
					return nil, err
				}
			}
			subject := vip.String()
			if v.IsPrefix {
				subject = fmt.Sprintf("%s (%s)", v.Prefix, vip)
			}
			for _, pf := range arp.ProxyExposure(f) {
				out = append(out, proxyFinding{ProxyFinding: pf, subject: subject})
			}
		}
	}
	return out, nil
}

// entryOrSysctlOn: proxy_arp or proxy_arp_pvlan is on for nic (all or
// the interface).
func entryOrSysctlOn(vals map[string]string, nic string) bool {
	for _, p := range []sysctl.Path{sysctl.ConfPath("all", "proxy_arp"), sysctl.ConfPath(nic, "proxy_arp"),
		sysctl.ConfPath("all", "proxy_arp_pvlan"), sysctl.ConfPath(nic, "proxy_arp_pvlan")} {
		if v := vals[p.Key()]; v != "" && v != "0" {
			return true
		}
	}
	return false
}

// routeTo is `ip route get VIP` as arp_process's lookup sees it.
func (h *Host) routeTo(vip netip.Addr, nicIndex int) (arp.ProxyRoute, string, error) {
	routes, err := h.nl.RouteGet(net.IP(vip.AsSlice()))
	if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOENT) {
		return arp.NoRoute, "", nil // unreachable, prohibit, blackhole: nothing is proxied
	}
	if err != nil {
		return 0, "", fmt.Errorf("route get %s: %w", vip, err)
	}
	if len(routes) == 0 {
		return arp.NoRoute, "", nil
	}
	r := routes[0]
	out := ""
	if l, err := h.nl.LinkByIndex(r.LinkIndex); err == nil {
		out = l.Attrs().Name
	}
	return arp.ClassifyRoute(true, r.Type, r.LinkIndex, nicIndex), out, nil
}

// proxyReport turns the findings into the report: a warning where
// dsr-agent's own table drops the requests (firewalld mode's ARP guard and
// NS drop), else a difference that takes ARP suppression away -- the host
// answers for the VIP and only the host's owner can change that.
func (p *planned) proxyReport(r *Report) {
	if p.proxy.err != nil {
		r.Warnings = append(r.Warnings, "proxy ARP/NDP: not checked: "+p.proxy.err.Error())
	}
	for _, f := range p.proxy.findings {
		fam := firewall.Family(nftables.TableFamilyARP)
		if f.VIP.Is6() {
			fam = nftables.TableFamilyIPv6
		}
		if spec, ok := p.want.Tables[fam]; ok && firewall.Suppresses(spec) && p.tables().inSync(fam) {
			r.Warnings = append(r.Warnings, fmt.Sprintf("proxy: %s: %s; %s drops these requests", f.subject, f, firewall.TableRef(fam)))
			continue
		}
		r.Suppression = false
		r.Differences = append(r.Differences, Difference{Kind: ProxyAnswers, Subject: f.subject + " on " + f.NIC, Detail: f.Reason,
			Fix: "turn the proxy setting off (dsr-agent does not change it: it belongs to the host)"})
	}
}
