package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

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
	findings []arp.ProxyFinding
	err      error
}

// readProxy judges every VIP that is not local on the receiving NIC by
// arp.ProxyRules. It costs one sysctl read per NIC and family when
// forwarding is off (every proxy answer needs the NIC's own forwarding),
// and a proxy-neighbour dump plus a route lookup per VIP only when a proxy
// setting is on.
func (h *Host) readProxy(p *planned) {
	d := p.want
	if d.HandsOff || len(d.VIPs) == 0 {
		return
	}
	local := map[netip.Addr]bool{}
	for _, a := range d.Addrs {
		if a.Link != "lo" || a.Prefix.Addr().Is4() {
			// An IPv4 address anywhere is local to every interface (the
			// weak host model): arp_ignore decides, not the proxy rules.
			local[a.Prefix.Addr()] = true
		}
	}
	var v4, v6 []netip.Addr
	for _, v := range d.VIPs {
		switch {
		case local[v.Address]:
		case v.Address.Is4():
			v4 = append(v4, v.Address)
		default:
			v6 = append(v6, v.Address)
		}
	}
	for _, nic := range d.Interfaces {
		for _, fam := range []struct {
			v6   bool
			vips []netip.Addr
		}{{false, v4}, {true, v6}} {
			if len(fam.vips) == 0 {
				continue
			}
			fs, err := h.proxyFindings(nic, p.facts.Index[nic], fam.v6, fam.vips)
			p.proxy.findings = append(p.proxy.findings, fs...)
			p.proxy.err = errors.Join(p.proxy.err, err)
		}
	}
}

func (h *Host) proxyFindings(nic string, nicIndex int, v6 bool, vips []netip.Addr) ([]arp.ProxyFinding, error) {
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
	}
	proxying := v6 || entryOrSysctlOn(vals, nic)
	var out []arp.ProxyFinding
	for _, vip := range vips {
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
		out = append(out, arp.ProxyExposure(f)...)
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
		if spec, ok := p.want.Tables[fam]; ok && firewall.Suppresses(spec) && p.tableInSync(fam) {
			r.Warnings = append(r.Warnings, fmt.Sprintf("proxy: %s: %s; %s drops these requests", f.VIP, f, firewall.TableRef(fam)))
			continue
		}
		r.Suppression = false
		r.Differences = append(r.Differences, Difference{Kind: ProxyAnswers, Subject: f.VIP.String() + " on " + f.NIC, Detail: f.Reason,
			Fix: "turn the proxy setting off (dsr-agent does not change it: it belongs to the host)"})
	}
}

// tableInSync reports whether the plan leaves dsr-agent's table of fam as
// it is.
func (p *planned) tableInSync(fam firewall.Family) bool {
	ref := firewall.TableRef(fam)
	for _, c := range p.plan.Changes {
		if c.Kind == TableReplace && c.Subject == ref {
			return false
		}
	}
	return true
}
