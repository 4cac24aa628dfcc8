// Package route owns the policy routing of an L7 load balancer's return path:
// a routing table whose default route is the LB, and the ip rules that send
// only replies from the listed service ports (source port, from the host's own
// address) to it. With a transparent L7 LB (HAProxy `usesrc clientip`, nginx
// `proxy_bind $remote_addr transparent`, KEMP transparency) the LB connects
// with the client's address as source, so the server's replies must go back
// through the LB; everything else keeps the host's normal default route.
//
// Ownership needs no state file: every rule and route dsr-agent makes carries
// the routing protocol Proto (as keepalived marks its routes with 18), and
// only rules and routes with that mark are ever changed or deleted.
package route

import (
	"errors"
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

// Proto is the rtnetlink protocol that marks dsr-agent's rules and routes
// (`proto 213` in ip(8)). iproute2's rt_protos names 0-18, 42, 99 and
// 186-192; 213 is unassigned.
const Proto = 213

// Rule is one policy rule. A zero Src is "from all"; a zero SPort matches
// any source port.
type Rule struct {
	IPv6     bool
	Priority int
	Src      netip.Prefix
	IPProto  inet.Protocol // "" any
	SPort    uint16
	Table    int
	// SuppressPrefixLen is suppress_prefixlength (-1 off): `lookup main
	// suppress_prefixlength 0` uses the main table for everything but its
	// default route, so the LB's table takes over only the default route.
	SuppressPrefixLen int
}

// Route is the default route of the return table.
type Route struct {
	Gateway netip.Addr
	Link    string
	Table   int
}

// IPv6 reports the route's family.
func (r Route) IPv6() bool { return r.Gateway.Is6() }

func familyFlag(v6 bool) string {
	if v6 {
		return "ip -6"
	}
	return "ip"
}

func family(v6 bool) int {
	if v6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// String is the rule in `ip rule` syntax (what the add/del commands take).
func (r Rule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "priority %d", r.Priority)
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " from %s", hostOrPrefix(r.Src))
	} else {
		b.WriteString(" from all")
	}
	switch r.IPProto {
	case inet.TCP, inet.UDP:
		b.WriteString(" ipproto " + r.IPProto.String())
	}
	if r.SPort != 0 {
		fmt.Fprintf(&b, " sport %d", r.SPort)
	}
	fmt.Fprintf(&b, " lookup %s", tableName(r.Table))
	if r.SuppressPrefixLen >= 0 {
		fmt.Fprintf(&b, " suppress_prefixlength %d", r.SuppressPrefixLen)
	}
	fmt.Fprintf(&b, " proto %d", Proto)
	return b.String()
}

func hostOrPrefix(p netip.Prefix) string {
	// 0.0.0.0/32 (a lookup with no source address yet) stays explicit:
	// `from 0.0.0.0` would read as "from all".
	if p.IsSingleIP() && !p.Addr().IsUnspecified() {
		return p.Addr().String()
	}
	return p.String()
}

func tableName(t int) string {
	if t == unix.RT_TABLE_MAIN {
		return "main"
	}
	return fmt.Sprint(t)
}

// Command renders `ip rule add|del …`.
func (r Rule) Command(verb string) string {
	return fmt.Sprintf("%s rule %s %s", familyFlag(r.IPv6), verb, r)
}

// String is the route in `ip route` syntax.
func (r Route) String() string {
	return fmt.Sprintf("default via %s dev %s table %d proto %d", r.Gateway, r.Link, r.Table, Proto)
}

// Command renders `ip route replace|del …`.
func (r Route) Command(verb string) string {
	return fmt.Sprintf("%s route %s %s", familyFlag(r.IPv6()), verb, r)
}

// Observed is what the kernel holds of dsr-agent's policy routing, plus what
// others put in the tables dsr-agent uses.
type Observed struct {
	Rules  []Rule
	Routes []Route
	// Foreign are routes without dsr-agent's mark in a table it uses, as
	// `ip route` prints them: the table is not free.
	Foreign []string
}

// Manager reads and changes rules and routes through one netlink handle.
type Manager struct {
	NL *netlink.Handle
}

// Observe lists dsr-agent's rules (both families) and the routes of tables.
func (m *Manager) Observe(tables []int) (*Observed, error) {
	o := &Observed{}
	for _, v6 := range []bool{false, true} {
		rules, err := nldump.Retry(func() ([]netlink.Rule, error) { return m.NL.RuleList(family(v6)) })
		if err != nil {
			return nil, fmt.Errorf("list %s rules: %w", familyFlag(v6), err)
		}
		for _, r := range rules {
			if r.Protocol != Proto {
				continue
			}
			o.Rules = append(o.Rules, fromNetlinkRule(v6, r))
		}
	}
	names := map[int]string{}
	tables = slices.Clone(tables)
	slices.Sort(tables)
	for _, t := range slices.Compact(tables) {
		for _, v6 := range []bool{false, true} {
			routes, err := nldump.Retry(func() ([]netlink.Route, error) {
				return m.NL.RouteListFiltered(family(v6), &netlink.Route{Table: t}, netlink.RT_FILTER_TABLE)
			})
			if err != nil {
				return nil, fmt.Errorf("list %s routes of table %d: %w", familyFlag(v6), t, err)
			}
			for _, r := range routes {
				link := names[r.LinkIndex]
				if link == "" {
					if l, err := m.NL.LinkByIndex(r.LinkIndex); err == nil {
						link = l.Attrs().Name
						names[r.LinkIndex] = link
					}
				}
				gw, _ := netip.AddrFromSlice(r.Gw)
				if r.Protocol != Proto || !isDefault(r.Dst) || !gw.IsValid() {
					o.Foreign = append(o.Foreign, fmt.Sprintf("%s table %d proto %d dev %s", describeDst(r.Dst), t, r.Protocol, link))
					continue
				}
				o.Routes = append(o.Routes, Route{Gateway: gw.Unmap(), Link: link, Table: t})
			}
		}
	}
	return o, nil
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

func describeDst(dst *net.IPNet) string {
	if isDefault(dst) {
		return "default"
	}
	return dst.String()
}

func fromNetlinkRule(v6 bool, r netlink.Rule) Rule {
	out := Rule{IPv6: v6, Priority: r.Priority, Table: r.Table, IPProto: inet.ProtocolOf(uint8(r.IPProto)), SuppressPrefixLen: r.SuppressPrefixlen}
	if r.Src != nil {
		if a, ok := netip.AddrFromSlice(r.Src.IP); ok {
			ones, _ := r.Src.Mask.Size()
			out.Src = netip.PrefixFrom(a.Unmap(), ones)
		}
	}
	if r.Sport != nil && r.Sport.Start == r.Sport.End {
		out.SPort = r.Sport.Start
	}
	return out
}

func (r Rule) netlink() *netlink.Rule {
	nr := netlink.NewRule()
	nr.Family = family(r.IPv6)
	nr.Priority = r.Priority
	nr.Table = r.Table
	nr.Protocol = Proto
	nr.SuppressPrefixlen = r.SuppressPrefixLen
	if r.Src.IsValid() {
		nr.Src = &net.IPNet{IP: r.Src.Addr().AsSlice(), Mask: net.CIDRMask(r.Src.Bits(), r.Src.Addr().BitLen())}
	}
	nr.IPProto = int(r.IPProto.Number())
	if r.SPort != 0 {
		nr.Sport = netlink.NewRulePortRange(r.SPort, r.SPort)
	}
	return nr
}

// AddRule adds a rule.
func (m *Manager) AddRule(r Rule) error {
	if err := m.NL.RuleAdd(r.netlink()); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%s: %w", r.Command("add"), err)
	}
	return nil
}

// DelRule deletes a rule; one already gone is not an error.
func (m *Manager) DelRule(r Rule) error {
	if err := m.NL.RuleDel(r.netlink()); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s: %w", r.Command("del"), err)
	}
	return nil
}

func (m *Manager) netlinkRoute(r Route) (*netlink.Route, error) {
	l, err := m.NL.LinkByName(r.Link)
	if err != nil {
		return nil, fmt.Errorf("%s: link %s: %w", r.Command("replace"), r.Link, err)
	}
	bits := 32
	if r.IPv6() {
		bits = 128
	}
	return &netlink.Route{
		Family: family(r.IPv6()), Table: r.Table, Protocol: Proto, LinkIndex: l.Attrs().Index,
		Dst: &net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)},
		Gw:  r.Gateway.AsSlice(), Scope: netlink.SCOPE_UNIVERSE,
	}, nil
}

// ReplaceRoute installs the table's default route (a changed gateway
// replaces the old one in one step).
func (m *Manager) ReplaceRoute(r Route) error {
	nr, err := m.netlinkRoute(r)
	if err != nil {
		return err
	}
	if err := m.NL.RouteReplace(nr); err != nil {
		return fmt.Errorf("%s: %w", r.Command("replace"), err)
	}
	return nil
}

// DelRoute deletes the table's default route if it is still dsr-agent's.
func (m *Manager) DelRoute(r Route) error {
	nr, err := m.netlinkRoute(r)
	if err != nil {
		// The link is gone, and with it the kernel deleted the route.
		return nil
	}
	if err := m.NL.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s: %w", r.Command("del"), err)
	}
	return nil
}

// Diff is the pure comparison: rules to delete and add, routes to delete
// and replace. Only rules and routes with dsr-agent's mark are in observed.
func Diff(wantRules []Rule, wantRoutes []Route, o *Observed) (delRules, addRules []Rule, delRoutes, putRoutes []Route) {
	for _, r := range o.Rules {
		if !slices.Contains(wantRules, r) {
			delRules = append(delRules, r)
		}
	}
	// Rules go in the reverse of their lookup order: the whole-default-route
	// pair must never be left as `lookup 8558` without the `lookup main
	// suppress_prefixlength 0` before it, which would send even on-link
	// traffic to the LB.
	slices.SortStableFunc(delRules, func(a, b Rule) int { return b.Priority - a.Priority })
	for _, r := range wantRules {
		if !slices.Contains(o.Rules, r) {
			addRules = append(addRules, r)
		}
	}
	for _, r := range o.Routes {
		if !slices.ContainsFunc(wantRoutes, func(w Route) bool { return w.Table == r.Table && w.IPv6() == r.IPv6() }) {
			delRoutes = append(delRoutes, r)
		}
	}
	for _, r := range wantRoutes {
		if !slices.Contains(o.Routes, r) {
			putRoutes = append(putRoutes, r)
		}
	}
	return
}
