package probe

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The director's path to a real server: the route, the source address, the
// path MTU and the largest MSS it carries.

// path is where and how the probe leaves the director.
type path struct {
	link    netlink.Link
	src     netip.Addr // inner source: the director's address of the VIP's family
	outer   netip.Addr // outer source (L3): the director's address towards the real server
	nextHop netip.Addr // the real server (L2, on-link L3) or the gateway
	mtu     int
}

// route asks the kernel how the director reaches the real server (a route
// lookup: nothing is added).
func route(h *netlink.Handle, c *Config) (path, error) {
	rs, err := h.RouteGet(c.Real.AsSlice())
	if err != nil || len(rs) == 0 {
		return path{}, usagef("--real %s: no route from the director: %v", c.Real, err)
	}
	r := rs[0]
	var p path
	if c.Dev != "" && c.Encap.Kind == L2 {
		l, err := h.LinkByName(c.Dev)
		if err != nil {
			return path{}, usagef("--dev %q: %v", c.Dev, err)
		}
		p.link = l
	} else {
		l, err := h.LinkByIndex(r.LinkIndex)
		if err != nil {
			return path{}, fmt.Errorf("probe: interface %d towards %s: %w", r.LinkIndex, c.Real, err)
		}
		p.link = l
	}
	if p.link.Attrs().Flags&net.FlagLoopback != 0 || r.Type == unix.RTN_LOCAL {
		return path{}, usagef("--real %s is an address of this host", c.Real)
	}
	if len(p.link.Attrs().HardwareAddr) != 6 {
		return path{}, usagef("interface %s has no Ethernet address: the probe sends Ethernet frames", p.link.Attrs().Name)
	}
	p.nextHop = c.Real
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && gw.IsValid() && !gw.IsUnspecified() {
		if c.Encap.Kind == L2 {
			return path{}, usagef("--real %s is reached via gateway %s: L2 DSR needs the real server on the director's own segment (use --encap ipip or gue:PORT)", c.Real, gw.Unmap())
		}
		p.nextHop = gw.Unmap()
	}
	vip := c.Target.Addr()
	p.outer, _ = netip.AddrFromSlice(r.Src)
	p.outer = p.outer.Unmap()
	// The route's preferred source can be the VIP itself (a director owns
	// it, often on the same NIC): a probe from the VIP to the VIP would be
	// answered to the VIP. Probe from one of the director's own addresses.
	if !p.outer.IsValid() || p.outer == vip || (c.Encap.Kind == L2 && c.Dev != "") {
		a, ok := linkAddr(h, p.link, c.Real, vip)
		if !ok {
			return path{}, usagef("interface %s has no address of %s's family (other than the VIP) to probe from", p.link.Attrs().Name, c.Real)
		}
		p.outer = a
	}
	p.src = p.outer
	if vip.Is4() != p.outer.Is4() {
		a, ok := linkAddr(h, p.link, vip, vip)
		if !ok {
			return path{}, usagef("interface %s has no address of the VIP's family (%s) to be the client", p.link.Attrs().Name, vip)
		}
		p.src = a
	}
	p.mtu = c.MTU
	if p.mtu == 0 {
		p.mtu = r.MTU
	}
	if p.mtu == 0 {
		p.mtu = p.link.Attrs().MTU
	}
	return p, nil
}

// linkAddr is a global address of like's family on link other than not,
// preferably one whose prefix contains like (the real server's subnet).
func linkAddr(h *netlink.Handle, link netlink.Link, like, not netip.Addr) (netip.Addr, bool) {
	fam := netlink.FAMILY_V4
	if like.Is6() {
		fam = netlink.FAMILY_V6
	}
	as, err := h.AddrList(link, fam)
	if err != nil {
		return netip.Addr{}, false
	}
	var first netip.Addr
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		ip = ip.Unmap()
		if !ok || a.Scope != unix.RT_SCOPE_UNIVERSE || ip == not {
			continue
		}
		ones, _ := a.Mask.Size()
		if pfx, err := ip.Prefix(ones); err == nil && pfx.Contains(like) {
			return ip, true
		}
		if !first.IsValid() {
			first = ip
		}
	}
	return first, first.IsValid()
}

// maxMSS is the largest MSS a SYN-ACK may advertise so that a full segment
// fits the path: MTU minus encapsulation minus the inner IP and TCP headers.
func maxMSS(mtu int, e Encap, outer6, inner6 bool) int {
	ip := 20
	if inner6 {
		ip = 40
	}
	return mtu - e.Overhead(outer6) - ip - 20
}
