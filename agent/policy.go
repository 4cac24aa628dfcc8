package agent

import (
	"net/netip"
	"slices"

	"github.com/dsr-agent/dsr-agent/arp"
	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/loopback"
	"github.com/dsr-agent/dsr-agent/route"
	"github.com/dsr-agent/dsr-agent/sysctl"
	"github.com/dsr-agent/dsr-agent/tunnel"
)

// Desired is the host state a config asks for on this host: the policy's
// answer. It is the only input of the surfaces' diffs.
type Desired struct {
	Mode Mode
	// Interfaces are the LB-facing NICs (the config's, or the default
	// route's interface).
	Interfaces []string
	VIPs       []VIP
	Sysctls    []sysctl.Setting
	// Prefixes are the config's prefix VIPs (AnyIP), each address of
	// which is a VIP with its ports.
	Prefixes []PrefixVIP
	// Served is everything d serves, single VIPs and prefixes alike, each
	// port with the port its traffic is delivered to: what the listener
	// check, the connection count, the proxy ARP/NDP judgement and the
	// firewalld findings read (never VIPs or Prefixes one by one).
	Served []Served
	// LocalPrefixes are the prefixes the mode makes local: one AnyIP
	// route each (anyip/), the anyip surface's want.
	LocalPrefixes []netip.Prefix
	// Addrs are the VIP addresses; labels are assigned when planning.
	Addrs  []loopback.Addr
	Tables map[firewall.Family]firewall.Spec
	// Rules and Routes are return_via's policy routing; RouteTables the
	// tables it uses (whose foreign routes make it refuse).
	Rules       []route.Rule
	Routes      []route.Route
	RouteTables []int
	// Redirect: the VIPs are never local addresses; a nat redirect rewrites
	// their traffic to each port's to_port on the primary address of the
	// interface it arrives on. What follows from it for the rest of the code:
	// the ports traffic is delivered to (to_port, not port: listeners, the
	// weight's connections), how a VIP's presence is judged (its family's
	// table in place, not an address), and that a firewall must accept
	// redirected traffic rather than the VIP ports (firewalld's findings).
	Redirect bool
	// Tunnel is mode tunnel's decapsulation (nil in the other modes).
	Tunnel *tunnel.Spec
	// Health is the health section with host defaults filled in (a copy;
	// nil when the config has none).
	Health *HealthConfig
	// HandsOff is an explicit `vips: []`: plan nothing at all, not even
	// the removal of what an earlier config made (only remove tears down).
	HandsOff bool
	// Notes are what the operator must hear about a valid config on this
	// host (apply's notes, status's warnings): e.g. a tunnel.mss too large
	// for one family's encapsulation.
	Notes []string
}

// Resolve is the policy, and the only code that knows the modes: config and
// host facts in, desired state out. The config is not changed; errors name
// the field and value (ErrInvalidConfig, and ErrHostMismatch when they
// depend on this host).
func Resolve(cfg *Config, f *Facts) (*Desired, error) {
	d := &Desired{Mode: cfg.Mode, VIPs: cfg.VIPs, Prefixes: cfg.Prefixes, Interfaces: slices.Clone(cfg.Interfaces), Tables: map[firewall.Family]firewall.Spec{}}
	var errs fieldErrors
	resolveInterfaces(cfg, f, d, &errs)
	checkVIPs(cfg, f, d, &errs)
	d.Health = resolveHealth(cfg, f, d, &errs)
	resolveReturnVia(cfg, f, d, &errs)
	if err := errs.hostErr(); err != nil {
		return nil, withOrigins(err, cfg.origin)
	}
	if len(cfg.VIPs) == 0 && len(cfg.Prefixes) == 0 {
		// An installed but unconfigured host (the packaged example) is left
		// exactly as it was, and so is a configured one whose list was
		// emptied: losing every VIP takes `dsr-agent remove`.
		d.HandsOff = true
		return d, nil
	}
	switch cfg.Mode {
	case ModeLoopback:
		resolveLoopback(cfg, d)
	case ModeARPTables:
		resolveARPTables(cfg, f, d)
	case ModeTunnel:
		resolveTunnel(cfg, f, d)
	case ModeFirewalld:
		resolveFirewalld(cfg, d)
	}
	loopback.SortAddrs(d.Addrs)
	d.Served = served(cfg, d.Redirect)
	return d, nil
}

// Served is one destination: a single VIP (its host prefix) or a prefix VIP
// (AnyIP), every address of which is served alike.
type Served struct {
	Prefix netip.Prefix
	// IsPrefix: a `prefix:` entry (a /32 or /128 here is a single VIP).
	IsPrefix bool
	Ports    []ServedPort
}

// ServedPort is one service port and the local port its traffic is
// delivered to: the port itself, or to_port where a redirect rewrites it.
type ServedPort struct {
	Port     uint16
	Protocol Protocol
	Deliver  uint16
}

// Addr is the single VIP, or the prefix's first address.
func (s Served) Addr() netip.Addr { return s.Prefix.Addr() }

// String names it as the config does: the address, or the prefix.
func (s Served) String() string {
	if s.IsPrefix {
		return s.Prefix.String()
	}
	return s.Prefix.Addr().String()
}

// served lists the config's VIPs and prefixes with their delivered ports:
// the one place that knows a redirect delivers to to_port.
func served(cfg *Config, redirect bool) []Served {
	ports := func(ps []Port) []ServedPort {
		out := make([]ServedPort, 0, len(ps))
		for _, p := range ps {
			sp := ServedPort{Port: p.Port, Protocol: p.Protocol, Deliver: p.Port}
			if redirect {
				sp.Deliver = p.ToPort
			}
			out = append(out, sp)
		}
		return out
	}
	out := make([]Served, 0, len(cfg.VIPs)+len(cfg.Prefixes))
	for _, v := range cfg.VIPs {
		out = append(out, Served{Prefix: netip.PrefixFrom(v.Address, v.Address.BitLen()), Ports: ports(v.Ports)})
	}
	for _, p := range cfg.Prefixes {
		out = append(out, Served{Prefix: p.Prefix, IsPrefix: true, Ports: ports(p.Ports)})
	}
	return out
}

// localPrefixes makes every prefix VIP local: one AnyIP route each. The
// kernel answers ARP for a local route only at arp_ignore 0 (arp_ignore
// 1-3 look for an address of the prefix, and there is none): the mode's
// suppression must cover it (docs/anyip.md).
func localPrefixes(cfg *Config, d *Desired) {
	for _, p := range cfg.Prefixes {
		d.LocalPrefixes = append(d.LocalPrefixes, p.Prefix)
	}
}

// resolveLoopback: the ARP sysctls suppress the VIPs on lo, and the
// prefixes' local routes alike.
func resolveLoopback(cfg *Config, d *Desired) {
	localPrefixes(cfg, d)
	d.Sysctls = arp.Suppression(d.Interfaces)
	for _, v := range cfg.VIPs {
		d.Addrs = append(d.Addrs, loopback.Addr{Link: "lo", Prefix: loopback.HostPrefix(v.Address)})
	}
}

// resolveARPTables: the VIPs on the NIC, their ARP dropped and rewritten by
// the arp table.
func resolveARPTables(cfg *Config, f *Facts, d *Desired) {
	arpTable := &firewall.ARPTable{}
	nic := d.Interfaces[0]
	real := primaryIPv4(f, nic)
	for _, v := range cfg.VIPs {
		if !v.Address.Is4() {
			// ARP is IPv4 only; the kernel answers Neighbour Solicitations
			// only for addresses on the receiving interface, so an IPv6
			// VIP on lo is never claimed.
			d.Addrs = append(d.Addrs, loopback.Addr{Link: "lo", Prefix: loopback.HostPrefix(v.Address)})
			continue
		}
		r := v.RealIP
		if !r.IsValid() {
			r = real
		}
		arpTable.Entries = append(arpTable.Entries, firewall.ARPEntry{VIP: v.Address, Real: r})
		d.Addrs = append(d.Addrs, loopback.Addr{Link: nic, Prefix: loopback.HostPrefix(v.Address)})
	}
	// The prefixes are local too, and this mode leaves arp_ignore alone:
	// at 0 the kernel answers ARP for every address of a local route on
	// every interface (docs/anyip.md), so the table's interval set is what
	// keeps them quiet. IPv6 prefixes need nothing: a local route is no
	// address, and Neighbour Solicitations go unanswered.
	localPrefixes(cfg, d)
	for _, p := range d.LocalPrefixes {
		if p.Addr().Is4() {
			arpTable.Prefixes = append(arpTable.Prefixes, p)
			arpTable.PrefixReal = real
		}
	}
	if len(arpTable.Entries) > 0 || len(arpTable.Prefixes) > 0 {
		d.Tables[arpTable.Family()] = arpTable
	}
}

// resolveFirewalld: the VIPs are never local; nat redirects serve them.
func resolveFirewalld(cfg *Config, d *Desired) {
	d.Redirect = true
	nat4, nat6 := &firewall.NATTable{}, &firewall.NATTable{IPv6: true}
	for _, v := range cfg.VIPs {
		t := nat4
		if v.Address.Is6() {
			t = nat6
		}
		for _, p := range v.Ports {
			t.Redirects = append(t.Redirects, firewall.Redirect{VIP: v.Address, Proto: p.Protocol, Port: p.Port, ToPort: p.ToPort})
		}
	}
	// The VIP is never local here, so arp_ignore does not cover it: proxy
	// ARP (a forwarding host: every Docker host) or a proxy neighbour entry
	// would answer for it. Drop those requests (and NDP's solicitations) in
	// dsr-agent's own tables; docs/safety.md.
	// Prefixes likewise: an interval map beside the VIPs', and the
	// Neighbour Solicitation guard matches IPv6 ones by their first bits.
	for _, v := range cfg.Prefixes {
		t := nat4
		if v.Prefix.Addr().Is6() {
			t = nat6
		}
		for _, p := range v.Ports {
			t.Prefixes = append(t.Prefixes, firewall.PrefixRedirect{Prefix: v.Prefix, Proto: p.Protocol, Port: p.Port, ToPort: p.ToPort})
		}
	}
	guard := &firewall.ARPGuard{}
	for _, v := range cfg.VIPs {
		if v.Address.Is4() {
			guard.VIPs = append(guard.VIPs, v.Address)
		}
	}
	for _, v := range cfg.Prefixes {
		if v.Prefix.Addr().Is4() {
			guard.Prefixes = append(guard.Prefixes, v.Prefix)
		}
	}
	if len(guard.VIPs) > 0 || len(guard.Prefixes) > 0 {
		d.Tables[guard.Family()] = guard
	}
	nat6.DropNS = true
	for _, t := range []*firewall.NATTable{nat4, nat6} {
		if len(t.Redirects) > 0 || len(t.Prefixes) > 0 {
			d.Tables[t.Family()] = t
		}
	}
}
