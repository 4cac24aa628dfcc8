package route

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/inet"
	"github.com/dsr-agent/dsr-agent/internal/nldump"
)

// Shadow is a foreign rule (one without dsr-agent's mark) that the kernel
// reaches before one of dsr-agent's rules and that takes traffic that rule
// is for: the replies it means to send via the LB leave some other way.
type Shadow struct {
	// Foreign is the foreign rule in `ip rule` syntax.
	Foreign string
	// Want is dsr-agent's rule it shadows.
	Want Rule
	// Partly says which part of the traffic the foreign rule takes when
	// that depends on the client ("" takes every reply).
	Partly string
}

func (s Shadow) String() string {
	what := "takes every reply"
	if s.Partly != "" {
		what = "takes the replies " + s.Partly
	}
	return fmt.Sprintf("%s rule %q comes before %q and %s", familyFlag(s.Want.IPv6), s.Foreign, s.Want.String(), what)
}

// Shadows lists the foreign rules in the way of want's rules that send
// traffic to a table other than main (the port rules and the whole-default
// route's `lookup <table>`). It judges each foreign rule the way the
// kernel's fib_rule_match does for a locally generated reply (iif lo, no
// oif, fwmark 0, tos 0) from the wanted source, protocol and port, and
// whether its action takes the packet (a lookup of a table that holds a
// route, a drop, a goto past the wanted rule). The sources of the
// whole-default-route rule (from all) are the host's own addresses.
func (m *Manager) Shadows(want []Rule) ([]Shadow, error) {
	var out []Shadow
	for _, v6 := range []bool{false, true} {
		if !slices.ContainsFunc(want, func(w Rule) bool { return w.IPv6 == v6 }) {
			continue
		}
		var own []netip.Addr
		addrs, err := nldump.Retry(func() ([]netlink.Addr, error) { return m.NL.AddrList(nil, family(v6)) })
		if err != nil {
			return nil, fmt.Errorf("list %s addresses: %w", familyFlag(v6), err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().IsGlobalUnicast() {
				own = append(own, ip.Unmap())
			}
		}
		rules, err := nldump.Retry(func() ([]netlink.Rule, error) { return m.NL.RuleList(family(v6)) })
		if err != nil {
			return nil, fmt.Errorf("list %s rules: %w", familyFlag(v6), err)
		}
		routes := map[int][]netlink.Route{}
		tableRoutes := func(t int) ([]netlink.Route, error) {
			if r, ok := routes[t]; ok {
				return r, nil
			}
			r, err := nldump.Retry(func() ([]netlink.Route, error) {
				return m.NL.RouteListFiltered(family(v6), &netlink.Route{Table: t}, netlink.RT_FILTER_TABLE)
			})
			if err != nil {
				return nil, fmt.Errorf("list %s routes of table %d: %w", familyFlag(v6), t, err)
			}
			routes[t] = r
			return r, nil
		}
		for _, w := range want {
			if w.IPv6 != v6 || w.Table == unix.RT_TABLE_MAIN {
				continue
			}
			s, err := shadows(rules, w, own, tableRoutes)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
	}
	return out, nil
}

// shadows is the judgment for one wanted rule over the family's rule list
// in the kernel's order.
func shadows(rules []netlink.Rule, w Rule, own []netip.Addr, tableRoutes func(int) ([]netlink.Route, error)) ([]Shadow, error) {
	// Where the wanted rule is or will be: the kernel inserts a rule
	// after every rule of the same priority already there.
	end := len(rules)
	for i, r := range rules {
		if r.Protocol == Proto && fromNetlinkRule(w.IPv6, r) == w {
			end = i
			break
		}
	}
	var out []Shadow
	for _, r := range rules[:end] {
		if r.Protocol == Proto || r.Priority > w.Priority {
			continue
		}
		match, partly := selectorsMatch(r, w, own)
		if !match {
			continue
		}
		takes, why, err := actionTakes(r, w, tableRoutes)
		if err != nil {
			return nil, err
		}
		if !takes {
			continue
		}
		if whole := !w.Src.IsValid() && w.SPort == 0; whole && (len(partly) > 0 || (len(why) > 0 && strings.HasPrefix(why[0], "to "))) {
			// The whole default route already yields to the main
			// table's specific routes: a foreign rule that takes only
			// some of everything (ssh replies kept direct, some
			// destinations) reads as the same kind of exception.
			continue
		}
		partly = append(partly, why...)
		out = append(out, Shadow{Foreign: ruleText(r), Want: w, Partly: strings.Join(partly, ", ")})
	}
	return out, nil
}

// selectorsMatch is fib_rule_match for the wanted traffic; partly lists
// the selectors that match some of it only.
func selectorsMatch(r netlink.Rule, w Rule, own []netip.Addr) (bool, []string) {
	var partly []string
	ok := true
	if p, set := prefixOf(r.Src); set {
		switch {
		case w.Src.IsValid():
			ok = ok && p.Contains(w.Src.Addr())
		default:
			hit := false
			for _, a := range own {
				hit = hit || p.Contains(a)
			}
			// The whole default route: everything from an own address.
			ok = ok && hit
		}
	}
	if p, set := prefixOf(r.Dst); set {
		partly = append(partly, "to "+p.String())
	}
	// A reply the host sends is looked up with iif lo and no oif (unless
	// its socket is bound to a device).
	ok = ok && (r.IifName == "" || r.IifName == "lo") && r.OifName == ""
	mask := uint32(0xffffffff)
	if r.Mask != nil {
		mask = *r.Mask
	}
	ok = ok && r.Mark&mask == 0 && r.Tos == 0 && r.TunID == 0
	if r.IPProto != 0 {
		if w.IPProto == "" {
			partly = append(partly, fmt.Sprintf("of ipproto %d", r.IPProto))
		} else {
			ok = ok && r.IPProto == int(w.IPProto.Number())
		}
	}
	if r.Sport != nil {
		if w.SPort == 0 {
			partly = append(partly, fmt.Sprintf("from ports %d-%d", r.Sport.Start, r.Sport.End))
		} else {
			ok = ok && r.Sport.Start <= w.SPort && w.SPort <= r.Sport.End
		}
	}
	if r.Dport != nil {
		partly = append(partly, fmt.Sprintf("to client ports %d-%d", r.Dport.Start, r.Dport.End))
	}
	if r.UIDRange != nil {
		partly = append(partly, fmt.Sprintf("of uids %d-%d", r.UIDRange.Start, r.UIDRange.End))
	}
	if r.Invert {
		// `not …`: matches what the selectors do not; whether that is
		// all of the wanted traffic depends on the partial selectors.
		if len(partly) > 0 {
			return true, []string{"not " + strings.Join(partly, ", ")}
		}
		return !ok, nil
	}
	return ok, partly
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	if !ok || ones == 0 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

// actionTakes says whether a matching rule ends the lookup before w: a
// drop does, a goto past w does, a lookup does when its table holds a
// route that survives suppress_prefixlength (otherwise the kernel goes on
// to the next rule).
func actionTakes(r netlink.Rule, w Rule, tableRoutes func(int) ([]netlink.Route, error)) (bool, []string, error) {
	switch {
	case r.Goto >= 0:
		return r.Goto > w.Priority, nil, nil
	case r.Table == 0 && r.Protocol == unix.RTPROT_KERNEL:
		// The VRF driver's `l3mdev` rule (it marks it proto kernel):
		// only traffic of a VRF, never a reply of a socket outside one.
		return false, nil, nil
	case r.Table == 0:
		// The library does not read the rule's action type: a rule with
		// neither table nor goto is a drop (blackhole, unreachable,
		// prohibit), or a nop or an l3mdev rule made by hand, read the
		// same.
		return true, []string{"(it drops them: blackhole, unreachable or prohibit)"}, nil
	case r.Table == w.Table || r.Table == unix.RT_TABLE_LOCAL:
		// The local table answers only for the host's own and broadcast
		// addresses, never a client.
		return false, nil, nil
	}
	routes, err := tableRoutes(r.Table)
	if err != nil {
		return false, nil, err
	}
	var some []string
	for _, rt := range routes {
		bits := 0
		if rt.Dst != nil {
			bits, _ = rt.Dst.Mask.Size()
		}
		if r.SuppressPrefixlen >= 0 && bits <= r.SuppressPrefixlen {
			continue
		}
		if bits == 0 {
			return true, nil, nil
		}
		some = append(some, rt.Dst.String())
	}
	if len(some) == 0 {
		return false, nil, nil
	}
	// Connected and specific routes: only clients there.
	return true, []string{"to " + strings.Join(some, " ")}, nil
}

// ruleText renders a foreign rule as `ip rule` prints the parts this
// judgment reads.
func ruleText(r netlink.Rule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "priority %d", r.Priority)
	if r.Invert {
		b.WriteString(" not")
	}
	if p, set := prefixOf(r.Src); set {
		fmt.Fprintf(&b, " from %s", hostOrPrefix(p))
	} else {
		b.WriteString(" from all")
	}
	if p, set := prefixOf(r.Dst); set {
		fmt.Fprintf(&b, " to %s", hostOrPrefix(p))
	}
	if r.Mark != 0 {
		fmt.Fprintf(&b, " fwmark %#x", r.Mark)
	}
	if r.IifName != "" {
		fmt.Fprintf(&b, " iif %s", r.IifName)
	}
	if r.OifName != "" {
		fmt.Fprintf(&b, " oif %s", r.OifName)
	}
	if p := inet.ProtocolOf(uint8(r.IPProto)); p != "" {
		b.WriteString(" ipproto " + p.String())
	}
	for _, p := range []struct {
		name string
		r    *netlink.RulePortRange
	}{{"sport", r.Sport}, {"dport", r.Dport}} {
		switch {
		case p.r == nil:
		case p.r.Start == p.r.End:
			fmt.Fprintf(&b, " %s %d", p.name, p.r.Start)
		default:
			fmt.Fprintf(&b, " %s %d-%d", p.name, p.r.Start, p.r.End)
		}
	}
	if r.UIDRange != nil {
		fmt.Fprintf(&b, " uidrange %d-%d", r.UIDRange.Start, r.UIDRange.End)
	}
	switch {
	case r.Goto >= 0:
		fmt.Fprintf(&b, " goto %d", r.Goto)
	case r.Table == 0:
		b.WriteString(" unreachable|blackhole|prohibit")
	default:
		fmt.Fprintf(&b, " lookup %s", tableName(r.Table))
		if r.SuppressPrefixlen >= 0 {
			fmt.Fprintf(&b, " suppress_prefixlength %d", r.SuppressPrefixlen)
		}
	}
	if r.Protocol != 0 {
		fmt.Fprintf(&b, " proto %d", r.Protocol)
	}
	return b.String()
}
