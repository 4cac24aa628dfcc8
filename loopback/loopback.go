// Package loopback owns the VIP addresses dsr-agent puts on interfaces: on lo
// in loopback mode, on the LB-facing NIC in arptables mode. It reads the
// kernel's addresses in one dump and adds or deletes single host prefixes.
package loopback

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/nldump"
)

// Addr is one address on one interface.
type Addr struct {
	Link   string
	Prefix netip.Prefix
	// Label is the IPv4 alias label (e.g. "lo:dsr0"); IPv6 has none.
	Label string
	// Secondary is set by List for addresses the kernel marks secondary
	// (not the interface's primary address in their subnet).
	Secondary bool
}

func (a Addr) String() string { return a.Prefix.String() + " dev " + a.Link }

// Command renders the equivalent ip(8) command.
func (a Addr) Command(verb string) string {
	s := "ip addr " + verb + " " + a.Prefix.String() + " dev " + a.Link
	if verb == "add" && a.Label != "" {
		s += " label " + a.Label
	}
	return s
}

// HostPrefix is the /32 or /128 of a VIP.
func HostPrefix(ip netip.Addr) netip.Prefix {
	return netip.PrefixFrom(ip, ip.BitLen())
}

// labelTag marks dsr-agent's aliases: "<dev>:dsr<N>". It is a courtesy for
// ip/ifconfig readers; ownership is recorded in the state dir.
const labelTag = ":dsr"

// maxLabel is IFNAMSIZ-1, the kernel's limit for address labels.
const maxLabel = 15

// Labeler hands out the lowest free "<dev>:dsr<N>" label per interface, so
// each IPv4 alias shows up in ifconfig as its own lo:dsrN like the RHEL
// guide's lo:0.
type Labeler struct {
	used map[string]map[int]bool
	// next is where the search for a free index resumes on each link, so
	// labelling n addresses is O(n), not O(n²).
	next map[string]int
}

// NewLabeler seeds the used labels from the observed addresses.
func NewLabeler(observed []Addr) *Labeler {
	l := &Labeler{used: map[string]map[int]bool{}, next: map[string]int{}}
	for _, a := range observed {
		if n, ok := labelIndex(a.Link, a.Label); ok {
			l.mark(a.Link, n)
		}
	}
	return l
}

// HasOwnLabel reports whether an address carries dsr-agent's alias label.
// It lets ownership be recovered when the state file is lost: leaving such a
// VIP behind on a NIC after its ARP table is gone would steal the VIP.
func HasOwnLabel(a Addr) bool {
	_, ok := labelIndex(a.Link, a.Label)
	return ok
}

func labelIndex(link, label string) (int, bool) {
	rest, ok := strings.CutPrefix(label, link+labelTag)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n >= 0
}

func (l *Labeler) mark(link string, n int) {
	if l.used[link] == nil {
		l.used[link] = map[int]bool{}
	}
	l.used[link][n] = true
}

// Next returns a free label for an IPv4 address on link, or "" when the
// interface name leaves no room for one (the kernel then shows the bare name).
func (l *Labeler) Next(link string) string {
	for n := l.next[link]; ; n++ {
		if l.used[link][n] {
			continue
		}
		l.next[link] = n + 1
		label := link + labelTag + strconv.Itoa(n)
		if len(label) > maxLabel {
			return ""
		}
		l.mark(link, n)
		return label
	}
}

// Manager reads and changes addresses through its own rtnetlink socket in
// one network namespace (the one under test, or the host's); names it has
// not listed are looked up through the handle NL. NewManager makes one;
// Close releases its socket.
type Manager struct {
	NL *netlink.Handle
	rt *rtnl

	// links caches interface indexes by name between one List (a fresh
	// snapshot) and the next, so adding N addresses costs N requests, not 2N.
	links map[string]int
	// listed is the last List's length: the next one's capacity.
	listed int
}

// NewManager binds a Manager to the handle nl and the network namespace ns
// the handle was opened in (netns.None() for the caller's own).
func NewManager(nl *netlink.Handle, ns netns.NsHandle) (*Manager, error) {
	rt, err := openRTNL(ns)
	if err != nil {
		return nil, err
	}
	return &Manager{NL: nl, rt: rt}, nil
}

// Close releases the Manager's own socket (not the handle).
func (m *Manager) Close() error {
	if m == nil || m.rt == nil {
		return nil
	}
	return m.rt.close()
}

var errNoSocket = errors.New("loopback: Manager not made by NewManager")

func (m *Manager) link(name string) (int, error) {
	if i, ok := m.links[name]; ok {
		return i, nil
	}
	l, err := m.NL.LinkByName(name)
	if err != nil {
		return 0, err
	}
	if m.links == nil {
		m.links = map[string]int{}
	}
	m.links[name] = l.Attrs().Index
	return l.Attrs().Index, nil
}

// List dumps all links and all addresses once (the address dump is the
// cost that grows with the number of VIPs) and returns every address with
// its interface name. It reads the dumps itself, into nothing but the
// result: the daemon runs it on every pass, and vishvananda/netlink's
// AddrList made a third of a no-op pass's garbage (issue 19).
func (m *Manager) List() ([]Addr, error) {
	if m.rt == nil {
		return nil, errNoSocket
	}
	byIndex, err := nldump.Retry(func() ([]map[int]string, error) {
		names, err := m.rt.linkNames()
		return []map[int]string{names}, err
	})
	if err != nil {
		return nil, fmt.Errorf("dump links: %w", err)
	}
	names := byIndex[0]
	m.links = make(map[string]int, len(names))
	for i, n := range names {
		m.links[n] = i
	}
	out, err := nldump.Retry(func() ([]Addr, error) {
		out := make([]Addr, 0, m.listed)
		err := m.rt.addrs(func(a rawAddr) {
			name, ok := names[a.index]
			if !ok {
				return
			}
			label := ""
			if a.ip.Is4() && a.label != name {
				label = a.label
			}
			out = append(out, Addr{Link: name, Prefix: netip.PrefixFrom(a.ip, a.bits), Label: label,
				Secondary: a.flags&unix.IFA_F_SECONDARY != 0})
		})
		return out, err
	})
	if err != nil {
		return nil, fmt.Errorf("dump addresses: %w", err)
	}
	m.listed = len(out)
	return out, nil
}

// Add puts the address on its link. AddrReplace is used because AddrAdd
// fails with EEXIST when the address is already there (a racing repair or
// another tool), and that is success here.
func (m *Manager) Add(a Addr) error {
	link, err := m.link(a.Link)
	if err != nil {
		return fmt.Errorf("ip addr add %s: look up link: %w", a, err)
	}
	if m.rt == nil {
		return fmt.Errorf("ip addr add %s: %w", a, errNoSocket)
	}
	if err := m.rt.addr(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, link, a.Prefix, a.Label); err != nil {
		return fmt.Errorf("ip addr add %s: %w", a, err)
	}
	return nil
}

// Del removes the address; one already gone is not an error.
func (m *Manager) Del(a Addr) error {
	link, err := m.link(a.Link)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil // the interface went and took the address with it
		}
		return fmt.Errorf("ip addr del %s: look up link: %w", a, err)
	}
	if m.rt == nil {
		return fmt.Errorf("ip addr del %s: %w", a, errNoSocket)
	}
	if err := m.rt.addr(unix.RTM_DELADDR, 0, link, a.Prefix, ""); err != nil {
		if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("ip addr del %s: %w", a, err)
	}
	return nil
}

// Key identifies an address independent of its label. (One allocation: a
// pass builds it for every address on the host, twice.)
func Key(link string, p netip.Prefix) string {
	var b strings.Builder
	b.Grow(len(link) + 1 + len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"))
	b.WriteString(link)
	b.WriteByte(' ')
	var buf [64]byte
	b.Write(p.AppendTo(buf[:0]))
	return b.String()
}

// SortAddrs orders addresses by link then address, for stable plans.
func SortAddrs(as []Addr) {
	slices.SortFunc(as, func(a, b Addr) int {
		if c := strings.Compare(a.Link, b.Link); c != 0 {
			return c
		}
		return a.Prefix.Addr().Compare(b.Prefix.Addr())
	})
}
