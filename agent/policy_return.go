package agent

import (
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/route"
)

// returnPriority is where dsr-agent's rules sit: before the main table
// (32766), after the local table (0) and well clear of the low numbers
// other tools use.
const returnPriority = DefaultReturnTable

// resolveReturnVia turns return_via into rules and routes on this host: a
// table whose default route is the LB, on the LB-facing interface that
// reaches it; and either one rule per own address and service port (only
// those replies use the table) or, without ports, rules that make the LB
// the default route of everything while the main table's specific routes
// still win (`lookup main suppress_prefixlength 0` first).
func resolveReturnVia(cfg *Config, f *Facts, d *Desired, errs *fieldErrors) {
	rv := cfg.ReturnVia
	if rv == nil {
		return
	}
	d.RouteTables = []int{rv.Table}
	for _, gw := range []struct {
		field string
		addr  netip.Addr
	}{{"return_via.gateway", rv.Gateway}, {"return_via.gateway6", rv.Gateway6}} {
		if !gw.addr.IsValid() {
			continue
		}
		v6 := gw.addr.Is6()
		link, own := "", []netip.Addr(nil)
		for _, ifc := range d.Interfaces {
			for _, a := range f.Addrs {
				if a.Link != ifc || a.Prefix.Addr().Is6() != v6 || f.Owned.owns(a.Link, a.Prefix.String()) {
					continue
				}
				if a.Prefix.Addr().IsLinkLocalUnicast() {
					if gw.addr.IsLinkLocalUnicast() && link == "" {
						link = ifc
					}
					continue // replies to clients never leave from a link-local address
				}
				own = append(own, a.Prefix.Addr())
				if link == "" && a.Prefix.Masked().Contains(gw.addr) {
					link = ifc
				}
			}
		}
		ownAddr := false
		for _, a := range f.Addrs {
			ownAddr = ownAddr || a.Prefix.Addr() == gw.addr
		}
		switch {
		case ownAddr:
			errs.add(gw.field, gw.addr.String(), "the L7 load balancer's address, not this host's own (a default route via itself black-holes every reply)")
			continue
		case link == "":
			errs.add(gw.field, gw.addr.String(), "the L7 load balancer on the segment of an LB-facing interface ("+strings.Join(d.Interfaces, ", ")+"): no address there covers it")
			continue
		case len(own) == 0 && !rv.Whole():
			errs.add(gw.field, gw.addr.String(), "a gateway for a family this host has an address of on "+strings.Join(d.Interfaces, ", "))
			continue
		}
		d.Routes = append(d.Routes, route.Route{Gateway: gw.addr, Link: link, Table: rv.Table})
		if rv.Whole() {
			d.Rules = append(d.Rules,
				route.Rule{IPv6: v6, Priority: returnPriority - 1, Table: unix.RT_TABLE_MAIN, SuppressPrefixLen: 0},
				route.Rule{IPv6: v6, Priority: returnPriority, Table: rv.Table, SuppressPrefixLen: -1})
			continue
		}
		unspecified := netip.IPv4Unspecified()
		if v6 {
			unspecified = netip.IPv6Unspecified()
		}
		for _, p := range rv.Ports {
			srcs := own
			if p.Protocol == UDP {
				// A UDP service bound to the wildcard (without IP_PKTINFO)
				// routes its replies with no source address yet (the
				// kernel picks it after the lookup): `from 0.0.0.0/32`
				// matches exactly that lookup, and never a reply from a
				// VIP-bound socket.
				srcs = append(slices.Clone(own), unspecified)
			}
			for _, a := range srcs {
				d.Rules = append(d.Rules, route.Rule{IPv6: v6, Priority: returnPriority, Src: netip.PrefixFrom(a, a.BitLen()),
					IPProto: p.Protocol, SPort: p.Port, Table: rv.Table, SuppressPrefixLen: -1})
			}
		}
	}
}
