package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The config against this host's facts: the LB-facing interfaces, the VIPs
// and prefixes against its addresses and subnets, the health defaults.

func resolveInterfaces(cfg *Config, f *Facts, d *Desired, errs *fieldErrors) {
	links := map[string]bool{}
	var names []string
	for _, l := range f.Links {
		links[l] = true
		if l != "lo" {
			names = append(names, l)
		}
	}
	if len(d.Interfaces) == 0 {
		switch {
		case f.DefaultLink != "":
			d.Interfaces = []string{f.DefaultLink}
		case cfg.Mode != ModeFirewalld:
			errs.add("interfaces", "", "the LB-facing NIC(s): there is no default route to infer it from")
		}
	}
	for i, name := range d.Interfaces {
		if !links[name] {
			errs.add(fmt.Sprintf("interfaces[%d]", i), name, "an existing network interface (have: "+strings.Join(names, ", ")+")")
		}
	}
	if cfg.Mode == ModeARPTables && len(d.Interfaces) > 1 {
		// The VIPs go on one NIC and ARP leaving any NIC is rewritten to one
		// real IP: with several NICs that IP would be wrong on the others.
		errs.add("interfaces", strings.Join(d.Interfaces, ", "), "exactly one LB-facing NIC in arptables mode")
	}
	if cfg.Mode == ModeARPTables && len(d.Interfaces) > 0 && links[d.Interfaces[0]] {
		for i, v := range cfg.VIPs {
			if v.Address.Is4() && !v.RealIP.IsValid() && !primaryIPv4(f, d.Interfaces[0]).IsValid() {
				errs.add(fmt.Sprintf("vips[%d].real_ip", i), "", "an address to announce instead of the VIP: "+d.Interfaces[0]+" has no IPv4 address")
				break
			}
		}
		for i, p := range cfg.Prefixes {
			if p.Prefix.Addr().Is4() && !primaryIPv4(f, d.Interfaces[0]).IsValid() {
				errs.add(prefixField(cfg, i), p.Prefix.String(), "an IPv4 prefix only where "+d.Interfaces[0]+" has an IPv4 address (its ARP is sent with that address instead)")
				break
			}
		}
	}
}

// checkVIPs rejects VIPs the host already has on a NIC (they would answer
// ARP and steal the VIP), that are a gateway of its routes, or the network
// or broadcast address of a subnet it is connected to.
func checkVIPs(cfg *Config, f *Facts, d *Desired, errs *fieldErrors) {
	own := map[netip.Addr]string{}
	special := map[netip.Addr]string{}
	for _, a := range f.Addrs {
		if a.Link == "lo" || f.Owned.owns(a.Link, a.Prefix.String()) {
			continue
		}
		own[a.Prefix.Addr()] = a.Link
		p := a.Prefix.Masked()
		if p.IsSingleIP() || (p.Addr().Is4() && p.Bits() >= 31) {
			continue // host routes and /31 point-to-point (RFC 3021) have no such addresses
		}
		special[p.Addr()] = "the network address of " + p.String() + " on " + a.Link
		if p.Addr().Is4() {
			b := p.Addr().As4()
			for i := p.Bits(); i < 32; i++ {
				b[i/8] |= 0x80 >> (i % 8)
			}
			special[netip.AddrFrom4(b)] = "the broadcast address of " + p.String() + " on " + a.Link
		}
	}
	checkPrefixes(cfg, f, errs)
	for i, v := range cfg.VIPs {
		field := fmt.Sprintf("vips[%d].address", i)
		if link, ok := own[v.Address]; ok {
			errs.add(field, v.Address.String(),
				"a VIP, not an address of this host's own interface "+link+" (that address would answer ARP and steal the VIP)")
		} else if f.Gateways[v.Address] {
			errs.add(field, v.Address.String(), "a VIP, not a gateway of this host's routes")
		} else if why, ok := special[v.Address]; ok {
			errs.add(field, v.Address.String(), "a host address, not "+why)
		}
		if v.RealIP.IsValid() {
			if _, ok := own[v.RealIP]; !ok {
				errs.add(fmt.Sprintf("vips[%d].real_ip", i), v.RealIP.String(), "an IPv4 address configured on this host's NIC")
			}
		}
	}
}

// checkPrefixes refuses prefix VIPs that overlap a subnet the host is
// connected to (its own address would be a VIP, and the subnet's
// neighbours unreachable: the local table wins over the connected route),
// or hold a gateway of its routes. The error names the entry by the index
// it has among the config's entries, as the config's checks do.
func checkPrefixes(cfg *Config, f *Facts, errs *fieldErrors) {
	for i, p := range cfg.Prefixes {
		field := prefixField(cfg, i)
		for _, a := range f.Addrs {
			if a.Link == "lo" || f.Owned.owns(a.Link, a.Prefix.String()) {
				continue
			}
			if p.Prefix.Overlaps(a.Prefix.Masked()) {
				errs.add(field, p.Prefix.String(), "a prefix outside this host's connected subnets ("+a.Prefix.Masked().String()+" on "+a.Link+", address "+a.Prefix.Addr().String()+")")
			}
		}
		var gws []netip.Addr
		for gw := range f.Gateways {
			if p.Prefix.Contains(gw) {
				gws = append(gws, gw)
			}
		}
		slices.SortFunc(gws, netip.Addr.Compare)
		for _, gw := range gws {
			errs.add(field, p.Prefix.String(), "a prefix without a gateway of this host's routes in it ("+gw.String()+")")
		}
	}
}

// prefixField names the i-th prefix VIP's field. Config keeps no index of
// its entries; the prefix's position among the prefixes is what a parsed
// config still knows, so the field is vips[].prefix with the prefix as
// value, which names it as surely.
func prefixField(cfg *Config, i int) string {
	if i < len(cfg.prefixFields) {
		return cfg.prefixFields[i] + ".prefix"
	}
	return "vips[].prefix"
}

// resolveHealth fills the default listen address (the first IPv4 of the
// first interface) and checks that the listeners are the host's own: the
// director's heartbeat must reach this host, and binding elsewhere would
// "work" through IP_FREEBIND and answer nothing.
func resolveHealth(cfg *Config, f *Facts, d *Desired, errs *fieldErrors) *HealthConfig {
	if cfg.Health == nil {
		return nil
	}
	h := *cfg.Health
	if h.Listen == "" {
		var ip netip.Addr
		if len(d.Interfaces) > 0 {
			ip = primaryIPv4(f, d.Interfaces[0])
		}
		if ip.IsValid() {
			h.Listen = netip.AddrPortFrom(ip, DefaultHealthPort).String()
		} else {
			errs.add("health.listen", "", "ip:port: the first interface has no IPv4 address to default to")
		}
	}
	hostAddrs := map[netip.Addr]bool{}
	for _, a := range f.Addrs {
		if !f.Owned.owns(a.Link, a.Prefix.String()) {
			hostAddrs[a.Prefix.Addr()] = true
		}
	}
	checkOwn := func(field, listen string) {
		ap, err := netip.ParseAddrPort(listen)
		if err != nil || ap.Addr().IsUnspecified() {
			return // reported by the config's own checks
		}
		if !hostAddrs[ap.Addr().Unmap()] {
			errs.add(field, listen, "an address of this host (not configured on any interface here)")
		}
	}
	checkOwn("health.listen", h.Listen)
	if h.AgentCheck != nil {
		checkOwn("health.agent_check.listen", h.AgentCheck.Listen)
	}
	return &h
}

// primaryIPv4 is the interface's first non-secondary IPv4 that is not a
// dsr-agent VIP.
func primaryIPv4(f *Facts, link string) netip.Addr {
	for _, a := range f.Addrs {
		if a.Link == link && a.Prefix.Addr().Is4() && !a.Secondary && !f.Owned.owns(a.Link, a.Prefix.String()) {
			return a.Prefix.Addr()
		}
	}
	return netip.Addr{}
}
