package agent

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/dsr-agent/dsr-agent/arp"
	"github.com/dsr-agent/dsr-agent/loopback"
)

// Facts is one read of what the policy needs to know of the host: its
// addresses (one dump), links, routes, and what dsr-agent owns.
type Facts struct {
	Addrs []loopback.Addr
	// Links are the interface names, lo included; Index their ifindex.
	Links []string
	Index map[string]int
	// MTU of each interface (mode tunnel's default MSS).
	MTU map[string]int
	// DefaultLink is the interface of the best default route ("" if none).
	DefaultLink string
	// Gateways are the next hops of every route in the main table.
	Gateways map[netip.Addr]bool
	// Owned is the ownership record (the state file) as read.
	Owned *Ownership
}

// facts reads the host. Commands that change the host pass moveAside, so an
// unreadable state file is moved out of the way; read-only ones leave it
// where it is and work from the same recovery.
func (h *Host) facts(moveAside bool) (*Facts, error) {
	if canChange() {
		// Root trusts this dir's files to say which addresses to delete.
		if err := CheckStateDir(h.store.dir); err != nil {
			return nil, err
		}
	}
	addrs, err := h.addrs.List()
	if err != nil {
		return nil, err
	}
	st, err := h.store.load(moveAside)
	if err != nil {
		return nil, err
	}
	// Addresses with dsr-agent's label are its own even if the state file
	// was lost; the state file is rewritten with them on the next change.
	for _, a := range addrs {
		if loopback.HasOwnLabel(a) {
			st.addAddr(a.Link, a.Prefix.String())
		}
	}
	f := &Facts{Addrs: addrs, Owned: st, Gateways: map[netip.Addr]bool{}, Index: map[string]int{}, MTU: map[string]int{}}
	links, err := h.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	byIndex := map[int]string{}
	for _, l := range links {
		f.Links = append(f.Links, l.Attrs().Name)
		f.Index[l.Attrs().Name] = l.Attrs().Index
		f.MTU[l.Attrs().Name] = l.Attrs().MTU
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	if err := h.readRoutes(f, byIndex); err != nil {
		return nil, err
	}
	if st.Recovered != "" {
		st.LostSysctls = h.unknownOrigins(f.Links)
	}
	return f, nil
}

// readRoutes fills the gateways and the default route's interface: the best
// (lowest metric) default route, IPv4 first; for a multipath route, its
// first hop's interface.
func (h *Host) readRoutes(f *Facts, byIndex map[int]string) error {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.nl.RouteList(nil, fam)
		if err != nil {
			return fmt.Errorf("list routes: %w", err)
		}
		best, bestPrio := 0, -1
		for _, r := range routes {
			gws := []net.IP{r.Gw}
			for _, nh := range r.MultiPath {
				gws = append(gws, nh.Gw)
			}
			for _, gw := range gws {
				if a, ok := netip.AddrFromSlice(gw); ok {
					f.Gateways[a.Unmap()] = true
				}
			}
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			idx := r.LinkIndex
			if idx == 0 && len(r.MultiPath) > 0 {
				idx = r.MultiPath[0].LinkIndex
			}
			if idx == 0 { // blackhole/unreachable default: no interface
				continue
			}
			if bestPrio == -1 || r.Priority < bestPrio {
				best, bestPrio = idx, r.Priority
			}
		}
		if best != 0 && f.DefaultLink == "" {
			f.DefaultLink = byIndex[best]
		}
	}
	return nil
}

// unknownOrigins lists the ARP sysctls that hold dsr-agent's value: after
// the state file was lost, their values from before dsr-agent are unknown
// (they may have been dsr-agent's writes or the host's own choice).
func (h *Host) unknownOrigins(links []string) []string {
	var lost []string
	for _, s := range arp.Suppression(links) {
		if s.Path[3] == "lo" { // never an LB-facing interface
			continue
		}
		if v, err := h.sysctl.Read(s.Path); err == nil && v == s.Value() {
			lost = append(lost, s.Path.String())
		}
	}
	return lost
}
