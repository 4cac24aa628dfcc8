// Package lab builds a throwaway LVS-DR (direct server return) topology out of
// network namespaces, so dsr-agent can be proven with real packets:
//
//	              hub netns: bridge br0 (multicast snooping off)
//	     ┌──────────────┬───────────────┬───────────────┐
//	  client         director          rs1 ... rsN
//	10.77.0.10      10.77.0.2         10.77.0.21 ...
//	               + VIP 10.77.0.100   (VIP per dsr-agent mode)
//
// The director owns the VIP (so it answers ARP/NDP for it) and runs a netdev
// ingress chain that rewrites the destination MAC of every TCP packet to the
// VIP to one real server, chosen per flow by jhash(source address, source
// port), and sends it back out of the same NIC. Real servers answer the client
// directly. Every namespace, link and rule lives inside the lab's namespaces;
// the host is never touched (the bridge too lives in its own namespace).
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnsutil"
)

// Addressing inside the lab. These addresses exist only inside the lab's
// namespaces, so two labs running at once never clash; only namespace names
// must be unique on the host.
var (
	Prefix4 = netip.MustParsePrefix("10.77.0.0/24")
	Prefix6 = netip.MustParsePrefix("fd00:77::/64")
	VIP4    = netip.MustParseAddr("10.77.0.100")
	VIP6    = netip.MustParseAddr("fd00:77::100")
	// AnyIP4 is a whole prefix of VIPs (issue 21): the director has it as
	// a local route (its kernel answers ARP for every address of it at
	// arp_ignore 0, as a director with the VIPs would) and balances it; the
	// client reaches it on the segment (an on-link route), so it ARPs for
	// each address. Outside Prefix4: dsr-agent refuses a prefix VIP that
	// overlaps a connected subnet.
	AnyIP4 = netip.MustParsePrefix("10.77.1.0/28")
)

// NIC is the name of every node's lab-facing interface.
const NIC = "eth0"

// NamePrefix starts every namespace the lab creates; followed by the creating
// process id, so a later run can tell which leftovers are orphans.
const NamePrefix = "dsrlab-"

// Role says what a node does in the topology.
type Role string

// Node roles.
const (
	RoleClient   Role = "client"
	RoleDirector Role = "director"
	RoleServer   Role = "server"
)

// Node is one network namespace with one NIC on the lab bridge.
type Node struct {
	Name   string // short name: client, director, rs1...
	Role   Role
	NS     string // namespace name under /run/netns
	Handle netns.NsHandle
	NL     *netlink.Handle
	MAC    net.HardwareAddr
	IP4    netip.Addr
	IP6    netip.Addr
}

// Do runs fn on an OS thread inside the node's namespace (sockets, /proc/sys/net).
func (n *Node) Do(fn func() error) error {
	if err := netnsutil.Within(n.Handle, fn); err != nil {
		return fmt.Errorf("in netns %s (%s): %w", n.NS, n.Name, err)
	}
	return nil
}

// Link returns the node's lab NIC.
func (n *Node) Link() (netlink.Link, error) {
	l, err := n.NL.LinkByName(NIC)
	if err != nil {
		return nil, fmt.Errorf("%s: link %s: %w", n.Name, NIC, err)
	}
	return l, nil
}

// Options shape a lab.
type Options struct {
	Servers int          // number of real servers (default 2)
	Log     *slog.Logger // default: discard
}

// Lab is a running topology. Close it (always) to delete every namespace.
type Lab struct {
	ID       string // unique part of the namespace names
	Hub      *Node  // holds the bridge; no IP configuration
	Client   *Node
	Director *Node
	Servers  []*Node

	log       *slog.Logger
	closeOnce sync.Once
	closeErr  error
	created   []*Node
}

// mac returns a locally administered MAC whose last byte spells the node's
// IPv4 host part in decimal digits (host 21 → :21), so a MAC in a capture is
// easy to map to a node by eye.
func mac(host byte) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0xd5, 0, 0, 0, host/10<<4 | host%10}
}

func hostAddr(p netip.Prefix, host byte) netip.Addr {
	b := p.Addr().AsSlice()
	if p.Addr().Is6() {
		host = host/10<<4 | host%10 // fd00:77::21 for host 21, like the MAC
	}
	b[len(b)-1] = host
	a, _ := netip.AddrFromSlice(b)
	return a
}

// New builds the lab: hub with bridge, client, director (VIP + DR chain) and
// opts.Servers real servers with addresses but no DSR configuration: that is
// the job of dsr-agent (or of ConfigureByHand). On error everything created so
// far is removed.
func New(ctx context.Context, opts Options) (l *Lab, err error) {
	if opts.Servers <= 0 {
		opts.Servers = 2
	}
	if opts.Servers > 9 {
		return nil, fmt.Errorf("lab: at most 9 real servers, got %d", opts.Servers)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	SweepOrphans(log)
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	l = &Lab{ID: fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(id)), log: log}
	liveMu.Lock()
	live[l] = struct{}{}
	liveMu.Unlock()
	defer func() {
		if err != nil {
			_ = l.Close()
			l = nil
		}
	}()

	if l.Hub, err = l.newNode("hub", "", 0); err != nil {
		return nil, err
	}
	if err := l.makeBridge(); err != nil {
		return nil, err
	}
	if l.Client, err = l.newNode("client", RoleClient, 10); err != nil {
		return nil, err
	}
	if l.Director, err = l.newNode("director", RoleDirector, 2); err != nil {
		return nil, err
	}
	for i := 1; i <= opts.Servers; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rs, err := l.newNode("rs"+strconv.Itoa(i), RoleServer, byte(20+i))
		if err != nil {
			return nil, err
		}
		l.Servers = append(l.Servers, rs)
	}
	if err := l.setupDirector(); err != nil {
		return nil, err
	}
	if err := l.setupClientCounters(); err != nil {
		return nil, err
	}
	if err := l.setupAnyIP(); err != nil {
		return nil, err
	}
	log.Info("lab up", "id", l.ID, "servers", len(l.Servers))
	return l, nil
}

// Nodes returns every node except the hub.
func (l *Lab) Nodes() []*Node {
	return append([]*Node{l.Client, l.Director}, l.Servers...)
}

// Server returns the real server whose MAC is m, or nil.
func (l *Lab) Server(m net.HardwareAddr) *Node {
	for _, rs := range l.Servers {
		if rs.MAC.String() == m.String() {
			return rs
		}
	}
	return nil
}

// NameOf names the node owning MAC m, for messages.
func (l *Lab) NameOf(m net.HardwareAddr) string {
	for _, n := range l.Nodes() {
		if n.MAC.String() == m.String() {
			return n.Name
		}
	}
	return "unknown " + m.String()
}

// newNode creates a namespace with lo up and IPv6 DAD off, and (except for
// the hub) a veth whose lab end is in the hub's bridge.
func (l *Lab) newNode(name string, role Role, host byte) (*Node, error) {
	nsName := NamePrefix + l.ID + "-" + name
	h, err := netnsutil.NewNamed(nsName)
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", nsName, err)
	}
	n := &Node{Name: name, Role: role, NS: nsName, Handle: h}
	l.created = append(l.created, n)
	if n.NL, err = netlink.NewHandleAt(h); err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", nsName, err)
	}
	lo, err := n.NL.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("%s: lo: %w", name, err)
	}
	// A fresh namespace has lo down; local addresses would not work.
	if err := n.NL.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("%s: set lo up: %w", name, err)
	}
	// DAD would keep IPv6 addresses tentative (unusable) for about a second;
	// "default" must be set before the NIC arrives so it inherits it.
	if err := n.Do(func() error {
		for _, p := range [][]string{
			{"net", "ipv6", "conf", "all", "accept_dad"},
			{"net", "ipv6", "conf", "default", "accept_dad"},
		} {
			if err := writeSysctl(p, "0"); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if role == "" {
		return n, nil
	}
	n.MAC = mac(host)
	n.IP4 = hostAddr(Prefix4, host)
	n.IP6 = hostAddr(Prefix6, host)
	br, err := l.Hub.NL.LinkByName("br0")
	if err != nil {
		return nil, fmt.Errorf("hub bridge: %w", err)
	}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: "p-" + name, MasterIndex: br.Attrs().Index},
		PeerName:         NIC,
		PeerHardwareAddr: n.MAC,
		PeerNamespace:    netlink.NsFd(int(h)),
	}
	// Created from the hub's handle with the peer born in the node's
	// namespace: no link ever exists in the host namespace, not even briefly.
	if err := l.Hub.NL.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("%s: add veth: %w", name, err)
	}
	port, err := l.Hub.NL.LinkByName("p-" + name)
	if err != nil {
		return nil, fmt.Errorf("%s: hub port: %w", name, err)
	}
	if err := l.Hub.NL.LinkSetUp(port); err != nil {
		return nil, fmt.Errorf("%s: hub port up: %w", name, err)
	}
	nic, err := n.Link()
	if err != nil {
		return nil, err
	}
	for _, a := range []netip.Prefix{
		netip.PrefixFrom(n.IP4, Prefix4.Bits()),
		netip.PrefixFrom(n.IP6, Prefix6.Bits()),
	} {
		if err := addAddr(n, nic, a); err != nil {
			return nil, err
		}
	}
	if err := n.NL.LinkSetUp(nic); err != nil {
		return nil, fmt.Errorf("%s: %s up: %w", name, NIC, err)
	}
	return n, nil
}

func addAddr(n *Node, link netlink.Link, p netip.Prefix) error {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := n.NL.AddrAdd(link, a); err != nil {
		return fmt.Errorf("%s: ip addr add %s dev %s: %w", n.Name, p, link.Attrs().Name, err)
	}
	return nil
}

func (l *Lab) makeBridge() error {
	off := false
	br := &netlink.Bridge{
		LinkAttrs: netlink.LinkAttrs{Name: "br0"},
		// With snooping, the bridge would send a Neighbour Solicitation only
		// to ports that joined its solicited-node group, hiding exactly the
		// misbehaviour the lab is there to expose. Flood like a plain LAN.
		MulticastSnooping: &off,
	}
	if err := l.Hub.NL.LinkAdd(br); err != nil {
		return fmt.Errorf("hub: add bridge: %w", err)
	}
	if err := l.Hub.NL.LinkSetUp(br); err != nil {
		return fmt.Errorf("hub: bridge up: %w", err)
	}
	return nil
}

// setupAnyIP makes AnyIP4 reachable: on-link from the client, local on the
// director (so the director alone should answer ARP for it).
func (l *Lab) setupAnyIP() error {
	dst := &net.IPNet{IP: AnyIP4.Addr().AsSlice(), Mask: net.CIDRMask(AnyIP4.Bits(), 32)}
	nic, err := l.Client.Link()
	if err != nil {
		return err
	}
	if err := l.Client.NL.RouteAdd(&netlink.Route{LinkIndex: nic.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("client: route %s dev %s: %w", AnyIP4, NIC, err)
	}
	lo, err := l.Director.NL.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("director: lo: %w", err)
	}
	if err := l.Director.NL.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: dst, Table: unix.RT_TABLE_LOCAL,
		Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST}); err != nil {
		return fmt.Errorf("director: local route %s: %w", AnyIP4, err)
	}
	return nil
}
