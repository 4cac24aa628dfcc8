// Package anyip owns AnyIP prefixes: a `local` route for a whole prefix in
// table local, dev lo (`ip route add local 198.51.100.0/24 dev lo table
// local proto 213`), which makes every address in it local at the cost of
// one route, where N addresses on lo cost N addresses and an O(N²) add.
//
// Ownership needs no state file: dsr-agent's routes carry route.Proto, and
// the kernel matches the protocol on delete (fib_table_delete,
// ip6_route_del), so a foreign local route of the same prefix (one an
// operator added by hand, or the kernel's own for an address) is never
// touched, even by a delete that names it.
//
// The ARP consequences (a local route is enough for arp_process to answer
// at arp_ignore 0) are the caller's: see docs/anyip.md and docs/safety.md.
package anyip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/nldump"
	"github.com/dsr-agent/dsr-agent/route"
)

// Link is the device of every AnyIP route: lo, where a local route needs no
// address and no neighbour.
const Link = "lo"

// Table is the kernel's local table, where input routing finds local
// destinations before any policy rule (priority 0).
const Table = unix.RT_TABLE_LOCAL

// Route is one AnyIP prefix (masked: 198.51.100.0/24, never .7/24).
type Route struct {
	Prefix netip.Prefix
}

// IPv6 reports the route's family.
func (r Route) IPv6() bool { return r.Prefix.Addr().Is6() }

// String is the route in `ip route` syntax.
func (r Route) String() string {
	return fmt.Sprintf("local %s dev %s table local proto %d", r.Prefix, Link, route.Proto)
}

// Command renders `ip route add|del …` (what dry-run and status print).
func (r Route) Command(verb string) string {
	fam := "ip"
	if r.IPv6() {
		fam = "ip -6"
	}
	return fmt.Sprintf("%s route %s %s", fam, verb, r)
}

// ParsePrefix parses a prefix as config gives it (`vips: - prefix:`). Its
// error is what was expected, for the caller's field error (as
// parseHostAddr's for `address:`): a network prefix (a host prefix belongs in
// `address:`), written masked, in no reserved range — the rules of a single
// VIP (not unspecified, loopback, multicast, link-local, broadcast, 0.0.0.0/8
// or 240.0.0.0/4), over the whole prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("an IPv4 or IPv6 network prefix such as 198.51.100.0/24 (required)")
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, errors.New("a network prefix such as 198.51.100.0/24 or 2001:db8:1::/64")
	}
	switch {
	case p.Addr().Is4In6():
		return p, errors.New("a plain IPv4 prefix, not IPv4-mapped IPv6")
	case p.IsSingleIP():
		return p, fmt.Errorf("a network prefix, not a single address (write a host VIP as `address: %s`)", p.Addr())
	case p.Masked() != p:
		return p, fmt.Errorf("a prefix without host bits (%s)", p.Masked())
	case p.Bits() == 0:
		return p, errors.New("a prefix of the VIPs, not every address")
	}
	for _, r := range reserved {
		if p.Overlaps(r) {
			return p, fmt.Errorf("a unicast range, not one that overlaps %s (%s)", r, reservedWhy(r))
		}
	}
	return p, nil
}

func reservedWhy(r netip.Prefix) string {
	switch a := r.Addr(); {
	case a.IsUnspecified() && a.Is4():
		return "this network"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a == netip.MustParseAddr("224.0.0.0"):
		return "multicast, reserved and broadcast"
	default:
		return "multicast"
	}
}

var reserved = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// Observed is what table local holds: dsr-agent's AnyIP routes, and the
// network prefixes (not host routes) of the others, which dsr-agent never
// changes.
type Observed struct {
	Ours []netip.Prefix
	// Foreign are the other routes of table local that cover more than
	// one address (127.0.0.0/8, ff00::/8, an operator's hand-made AnyIP
	// route), of any type: one of the same prefix takes the key dsr-agent's
	// would need. The kernel's host routes of addresses are left out.
	Foreign []netip.Prefix
}

// Manager reads and changes AnyIP routes through one netlink handle.
type Manager struct {
	NL *netlink.Handle
	// lo is lo's index, read once (it is 1 in every namespace today, but
	// that is not a promise).
	lo int
}

func family(v6 bool) int {
	if v6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// Observe lists table local in both families.
func (m *Manager) Observe() (*Observed, error) {
	o := &Observed{}
	filter := &netlink.Route{Table: Table}
	for _, v6 := range []bool{false, true} {
		routes, err := nldump.Retry(func() ([]netlink.Route, error) {
			return m.NL.RouteListFiltered(family(v6), filter, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return nil, fmt.Errorf("list table local (%s): %w", familyName(v6), err)
		}
		for _, r := range routes {
			p, ok := prefixOf(r.Dst)
			if !ok {
				continue
			}
			switch {
			case r.Protocol == route.Proto && r.Type == unix.RTN_LOCAL:
				o.Ours = append(o.Ours, p)
			case !p.IsSingleIP():
				o.Foreign = append(o.Foreign, p)
			}
		}
	}
	return o, nil
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

func prefixOf(dst *net.IPNet) (netip.Prefix, bool) {
	if dst == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(dst.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := dst.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

func (m *Manager) netlinkRoute(p netip.Prefix) (*netlink.Route, error) {
	if m.lo == 0 {
		l, err := m.NL.LinkByName(Link)
		if err != nil {
			return nil, fmt.Errorf("link %s: %w", Link, err)
		}
		m.lo = l.Attrs().Index
	}
	return &netlink.Route{
		Family: family(p.Addr().Is6()), Table: Table, Type: unix.RTN_LOCAL,
		Protocol: route.Proto, Scope: netlink.SCOPE_HOST, LinkIndex: m.lo,
		Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
	}, nil
}

// ErrForeign: a local route of the same prefix without dsr-agent's mark
// already exists. It is not dsr-agent's to replace or to count as its own.
var ErrForeign = errors.New("a local route of the same prefix that dsr-agent did not make")

// Add installs the AnyIP route of p. One of ours already there is success;
// a foreign one of the same prefix is ErrForeign (the kernel refuses a
// second route with the same key whatever its protocol).
func (m *Manager) Add(p netip.Prefix) error {
	r := Route{p}
	nr, err := m.netlinkRoute(p)
	if err != nil {
		return fmt.Errorf("%s: %w", r.Command("add"), err)
	}
	err = m.NL.RouteAdd(nr)
	if errors.Is(err, unix.EEXIST) {
		o, oerr := m.Observe()
		if oerr != nil {
			return fmt.Errorf("%s: %w (and %w)", r.Command("add"), err, oerr)
		}
		if slices.Contains(o.Ours, p) {
			return nil
		}
		return fmt.Errorf("%s: %w", r.Command("add"), ErrForeign)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", r.Command("add"), err)
	}
	return nil
}

// Del deletes the AnyIP route of p if it is dsr-agent's; one already gone is
// not an error, and a foreign route of the same prefix stays (the kernel
// matches the protocol).
func (m *Manager) Del(p netip.Prefix) error {
	r := Route{p}
	nr, err := m.netlinkRoute(p)
	if err != nil {
		return fmt.Errorf("%s: %w", r.Command("del"), err)
	}
	if err := m.NL.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s: %w", r.Command("del"), err)
	}
	return nil
}

// Diff is the pure comparison of the wanted prefixes with what the kernel
// holds: missing are to add, unexpected (dsr-agent's, no longer wanted) to
// delete, and conflicts are wanted prefixes a foreign local route of the
// same prefix already holds (dsr-agent cannot add its own: the caller
// refuses, as return_via refuses a table that is not free).
func Diff(want []netip.Prefix, o *Observed) (missing, unexpected, conflicts []netip.Prefix) {
	ours := make(map[netip.Prefix]bool, len(o.Ours))
	for _, p := range o.Ours {
		ours[p] = true
	}
	foreign := make(map[netip.Prefix]bool, len(o.Foreign))
	for _, p := range o.Foreign {
		foreign[p] = true
	}
	wanted := make(map[netip.Prefix]bool, len(want))
	for _, p := range want {
		p = p.Masked()
		if wanted[p] {
			continue
		}
		wanted[p] = true
		switch {
		case ours[p]:
		case foreign[p]:
			conflicts = append(conflicts, p)
		default:
			missing = append(missing, p)
		}
	}
	for _, p := range o.Ours {
		if !wanted[p] {
			unexpected = append(unexpected, p)
		}
	}
	return missing, unexpected, conflicts
}

// Change kinds (stable: logs, JSON and metrics name them) and drift names
// as status reports a pending step.
const (
	KindAdd         = "prefix-add"
	KindDel         = "prefix-del"
	DriftMissing    = "prefix-missing"
	DriftUnexpected = "prefix-unexpected"
)

// Step is one change: what the executor runs (Do) and what dry-run and
// status print (Command, Drift).
type Step struct {
	// Kind is the change's kind: KindAdd or KindDel.
	Kind    string
	Add     bool
	Prefix  netip.Prefix
	Command string
	Drift   string
	Do      func() error
}

// Steps turns a diff into changes, adds before deletes: a prefix the
// config narrows (a /23 becoming two /24s) never leaves a moment in which
// its addresses are not local.
func (m *Manager) Steps(missing, unexpected []netip.Prefix) []Step {
	out := make([]Step, 0, len(missing)+len(unexpected))
	for _, p := range missing {
		out = append(out, Step{Kind: KindAdd, Add: true, Prefix: p, Command: Route{p}.Command("add"), Drift: DriftMissing,
			Do: func() error { return m.Add(p) }})
	}
	for _, p := range unexpected {
		out = append(out, Step{Kind: KindDel, Prefix: p, Command: Route{p}.Command("del"), Drift: DriftUnexpected,
			Do: func() error { return m.Del(p) }})
	}
	return out
}

// Describe is the conflicts as one sentence for an error naming field.
func Describe(conflicts []netip.Prefix) string {
	var parts []string
	for _, p := range conflicts {
		parts = append(parts, "local "+p.String())
	}
	return strings.Join(parts, ", ")
}
