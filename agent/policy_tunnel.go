package agent

import (
	"fmt"
	"net/netip"

	"github.com/dsr-agent/dsr-agent/arp"
	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/loopback"
	"github.com/dsr-agent/dsr-agent/rpfilter"
	"github.com/dsr-agent/dsr-agent/tunnel"
)

// resolveTunnel is mode tunnel: loopback mode's ARP suppression on the
// LB-facing interfaces, plus what an encapsulating director needs.
//   - IPv4 VIPs go on tunl0 (a NOARP device, so nothing answers ARP for
//     them there): loose rp_filter accepts a decapsulated packet only on a
//     device with an IPv4 address (fib_validate_source's no_addr path drops
//     it otherwise), and tunl0's own value 2 makes max(all, tunl0) loose
//     without lowering `all`.
//   - IPv6 VIPs go on lo: IPv6 has no rp_filter, and ip6tnl0 delivers to
//     any local address.
//   - SYN-ACKs from the VIPs advertise an MSS that still fits once the
//     director wraps the client's segments.
//   - Prefix VIPs (AnyIP) are local routes on lo, which the decapsulated
//     packet's destination finds as any other; the clamp covers them. Loose
//     rp_filter still needs an IPv4 address on tunl0: without an IPv4
//     single VIP there, the first IPv4 prefix's first address is put on it
//     (an address the route makes local anyway; docs/anyip.md).
func resolveTunnel(cfg *Config, f *Facts, d *Desired) {
	t := cfg.Tunnel
	spec := &tunnel.Spec{}
	var vips4, vips6 []netip.Addr
	for _, v := range cfg.VIPs {
		if v.Address.Is4() {
			spec.IPv4 = true
			vips4 = append(vips4, v.Address)
			d.Addrs = append(d.Addrs, loopback.Addr{Link: tunnel.DevIPv4, Prefix: loopback.HostPrefix(v.Address)})
		} else {
			spec.IPv6 = true
			vips6 = append(vips6, v.Address)
			d.Addrs = append(d.Addrs, loopback.Addr{Link: "lo", Prefix: loopback.HostPrefix(v.Address)})
		}
	}
	var pre4, pre6 []netip.Prefix
	for _, p := range cfg.Prefixes {
		if p.Prefix.Addr().Is4() {
			spec.IPv4 = true
			pre4 = append(pre4, p.Prefix)
		} else {
			spec.IPv6 = true
			pre6 = append(pre6, p.Prefix)
		}
	}
	localPrefixes(cfg, d)
	if len(vips4) == 0 && len(pre4) > 0 {
		d.Addrs = append(d.Addrs, loopback.Addr{Link: tunnel.DevIPv4, Prefix: loopback.HostPrefix(pre4[0].Masked().Addr())})
	}
	if t.Encap == tunnel.EncapGUE {
		spec.GUEPort = t.Port
	}
	d.Tunnel = spec
	d.Sysctls = arp.Suppression(d.Interfaces)
	if spec.IPv4 {
		d.Sysctls = append(d.Sysctls, rpfilter.Decapsulation([]string{tunnel.DevIPv4})...)
	}
	// The smallest MTU of the LB-facing interfaces: the encapsulated
	// segment must fit whichever one the director's packets arrive on.
	mtu := 0
	for _, ifc := range d.Interfaces {
		if m := f.MTU[ifc]; m > 0 && (mtu == 0 || m < mtu) {
			mtu = m
		}
	}
	for _, fam := range []struct {
		v6       bool
		vips     []netip.Addr
		prefixes []netip.Prefix
	}{{false, vips4, pre4}, {true, vips6, pre6}} {
		if len(fam.vips) == 0 && len(fam.prefixes) == 0 {
			continue
		}
		mss := t.MSS
		if mss == 0 {
			// An unusable MTU (unknown, or tiny) still gets a valid clamp.
			mss = max(tunnel.DefaultMSS(mtu, t.Encap, fam.v6), minMSS)
		} else if fit := tunnel.DefaultMSS(mtu, t.Encap, fam.v6); mtu > 0 && mss > fit {
			// tunnel.mss is one value for both families, and 1400 (the
			// common figure) does not fit GUE over IPv6 on a 1500 link:
			// a full-size segment, encapsulated, would not fit the link it
			// arrives on. The operator's value is kept; they must hear it.
			ipv := "IPv4"
			if fam.v6 {
				ipv = "IPv6"
			}
			d.Notes = append(d.Notes, fmt.Sprintf("tunnel.mss %d is more than %s over %s fits on a %d-byte link (%d): "+
				"full-size segments of %s clients will not fit once encapsulated; set tunnel.mss to %d or less, or leave it out",
				mss, t.Encap, ipv, mtu, fit, ipv, fit))
		}
		clamp := firewall.NewMSSClamp(fam.v6, fam.vips, uint16(mss), fam.prefixes...)
		d.Tables[clamp.Family()] = clamp
	}
}
