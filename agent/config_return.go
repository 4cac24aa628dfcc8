package agent

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// ReturnViaConfig sends the replies of an L7 load balancer in transparent
// mode back through it: the LB connects with the client's address as source,
// so replies that took the host's normal default route would reach the
// client, not the LB, and be dropped.
type ReturnViaConfig struct {
	Gateway  netip.Addr // the LB on the LB-facing segment, IPv4 (invalid: none)
	Gateway6 netip.Addr // the same for IPv6
	// Ports are the service ports whose replies (source port, from the
	// host's own address) go via the LB. Empty: every packet's default
	// route is the LB, as the seed's "edit the default route" does, but
	// the main table's more specific routes still win.
	Ports []ReturnPort
	Table int // the routing table holding the LB default route
}

// ReturnPort is one service port of the L7 LB's backends.
type ReturnPort struct {
	Port     uint16
	Protocol Protocol
}

// Whole reports the seed's behaviour: all traffic's default route is the LB.
func (r *ReturnViaConfig) Whole() bool { return len(r.Ports) == 0 }

// DefaultReturnTable is the routing table of return_via (and the rules'
// priority): a number no distribution assigns, easy to find beside the
// health port.
const DefaultReturnTable = 8558

type rawReturnVia struct {
	Gateway  string          `yaml:"gateway"`
	Gateway6 string          `yaml:"gateway6"`
	Ports    []rawReturnPort `yaml:"ports"`
	Table    *strictInt      `yaml:"table"`
}

type rawReturnPort struct {
	Port     *strictInt `yaml:"port"`
	Protocol string     `yaml:"protocol"`
}

func (rr *rawReturnVia) validate(vips map[netip.Addr]bool, errs *fieldErrors) *ReturnViaConfig {
	r := &ReturnViaConfig{}
	gw := func(field, s string, want6 bool) netip.Addr {
		if s == "" {
			return netip.Addr{}
		}
		a, err := netip.ParseAddr(s)
		family := "an IPv4 address"
		if want6 {
			family = "an IPv6 address"
		}
		switch {
		case err != nil || a.Is4() == want6 || a.Zone() != "":
			errs.add(field, s, family+": the L7 load balancer on the LB-facing segment")
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
			errs.add(field, s, "a unicast address of the L7 load balancer")
		case vips[a]:
			errs.add(field, s, "the load balancer's own address, not a VIP")
		default:
			return a
		}
		return netip.Addr{}
	}
	r.Gateway = gw("return_via.gateway", rr.Gateway, false)
	r.Gateway6 = gw("return_via.gateway6", rr.Gateway6, true)
	if rr.Gateway == "" && rr.Gateway6 == "" {
		errs.add("return_via", "{}", "gateway (IPv4) and/or gateway6 (IPv6): the L7 load balancer replies go back through")
	}
	r.Table, _ = rr.Table.value(errs, "return_via.table", DefaultReturnTable, 1, 0x7fffffff,
		"a routing table number 1-2147483647 other than compat, default, main and local (252-255)")
	if r.Table >= unix.RT_TABLE_COMPAT && r.Table <= unix.RT_TABLE_LOCAL {
		errs.add("return_via.table", fmt.Sprint(r.Table), "a routing table number other than compat, default, main and local (252-255)")
	}
	seen := map[ReturnPort]bool{}
	for i, rp := range rr.Ports {
		field := fmt.Sprintf("return_via.ports[%d]", i)
		p := ReturnPort{Protocol: TCP}
		n, ok := rp.Port.value(errs, field+".port", 0, 1, 65535, "a port 1-65535")
		if rp.Port == nil {
			errs.add(field+".port", "", "a port 1-65535")
			ok = false
		}
		p.Port = uint16(n)
		switch Protocol(rp.Protocol) {
		case "", TCP:
		case UDP:
			p.Protocol = UDP
		default:
			errs.add(field+".protocol", rp.Protocol, "tcp or udp")
			ok = false
		}
		if ok && seen[p] {
			errs.add(field, fmt.Sprintf("%d/%s", p.Port, p.Protocol), "each port listed once")
		}
		if ok {
			seen[p] = true
		}
		r.Ports = append(r.Ports, p)
	}
	return r
}
