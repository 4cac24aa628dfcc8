package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/dsr-agent/dsr-agent/arp"
	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/loopback"
)

// Host is the kernel state dsr-agent manages in one network namespace, plus
// the state dir that records what it owns.
type Host struct {
	nl     *netlink.Handle
	sysctl *arp.Proc
	addrs  *loopback.Manager
	tables *firewall.Manager
	store  *stateStore
}

// OpenHost binds to the caller's own network namespace.
func OpenHost(stateDir string) (*Host, error) {
	return OpenHostAt(stateDir, netns.None())
}

// OpenHostAt binds to the network namespace ns (netns.None() for the
// caller's own); tests use it to run against a throwaway namespace.
func OpenHostAt(stateDir string, ns netns.NsHandle) (*Host, error) {
	var nl *netlink.Handle
	var conn *nftables.Conn
	var err error
	proc := arp.NewProc()
	if ns.IsOpen() {
		nl, err = netlink.NewHandleAt(ns)
		if err == nil {
			conn, err = firewall.Dial(int(ns))
		}
		proc.NS = ns
	} else {
		nl, err = netlink.NewHandle()
		if err == nil {
			conn, err = firewall.Dial(-1)
		}
	}
	if err != nil {
		if nl != nil {
			nl.Close()
		}
		return nil, fmt.Errorf("open netlink and nftables sockets: %w", err)
	}
	return &Host{
		nl:     nl,
		sysctl: proc,
		addrs:  &loopback.Manager{NL: nl},
		tables: &firewall.Manager{Conn: conn},
		store:  &stateStore{dir: stateDir},
	}, nil
}

// Close releases the netlink sockets.
func (h *Host) Close() {
	h.nl.Close()
	_ = h.tables.Conn.CloseLasting()
	h.store.close()
}

// snapshot is one read of the kernel state that matters: every address
// (one dump) and dsr-agent's state file.
type snapshot struct {
	addrs []loopback.Addr
	state *State
}

// snapshot reads the kernel and the state file. Commands that change the
// host pass moveAside, so an unreadable state file is moved out of the way;
// read-only ones leave it where it is and work from the same recovery.
func (h *Host) snapshot(moveAside bool) (*snapshot, error) {
	if canChange() {
		// Root trusts this dir's files to say which addresses to delete.
		if err := CheckStateDir(h.store.dir); err != nil {
			return nil, err
		}
	}
	addrs, err := h.addrs.List()
	if err != nil {
		return nil, err
	}
	st, err := h.store.load(moveAside)
	if err != nil {
		return nil, err
	}
	// Addresses with dsr-agent's label are its own even if the state file
	// was lost; the state file is rewritten with them on the next change.
	for _, a := range addrs {
		if loopback.HasOwnLabel(a) {
			st.addAddr(a.Link, a.Prefix.String())
		}
	}
	if st.Recovered != "" {
		if st.LostSysctls, err = h.unknownOrigins(); err != nil {
			return nil, err
		}
	}
	return &snapshot{addrs: addrs, state: st}, nil
}

// unknownOrigins lists the ARP sysctls that hold dsr-agent's value: after
// the state file was lost, their values from before dsr-agent are unknown
// (they may have been dsr-agent's writes or the host's own choice).
func (h *Host) unknownOrigins() ([]string, error) {
	links, err := h.nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := []string{"all", "default"}
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	var lost []string
	for _, s := range arp.Suppression(names) {
		if v, err := h.sysctl.Read(s.Path); err == nil && v == s.Value() {
			lost = append(lost, s.Path.String())
		}
	}
	return lost, nil
}

// Validate checks the config against the host (interfaces exist, VIPs are not
// the host's own addresses) and fills the host-dependent defaults:
// Interfaces (the default route's interface) and Health.Listen.
func (h *Host) Validate(cfg *Config) error {
	snap, err := h.snapshot(false)
	if err != nil {
		return err
	}
	return h.validate(cfg, snap)
}

func (h *Host) validate(cfg *Config, snap *snapshot) error {
	var errs fieldErrors
	links := map[string]bool{}
	var linkNames []string
	ll, err := h.nl.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range ll {
		links[l.Attrs().Name] = true
		if l.Attrs().Name != "lo" {
			linkNames = append(linkNames, l.Attrs().Name)
		}
	}
	if len(cfg.Interfaces) == 0 {
		def, err := h.defaultRouteLink()
		switch {
		case err != nil:
			return err
		case def != "":
			cfg.Interfaces = []string{def}
		case cfg.Mode != ModeFirewalld:
			errs.add("interfaces", "", "the LB-facing NIC(s): there is no default route to infer it from")
		}
	}
	for i, name := range cfg.Interfaces {
		if !links[name] {
			errs.add(fmt.Sprintf("interfaces[%d]", i), name, "an existing network interface (have: "+strings.Join(linkNames, ", ")+")")
		}
	}
	// The host's own addresses, except VIPs dsr-agent itself put there.
	own := map[netip.Addr]string{}
	for _, a := range snap.addrs {
		if a.Link == "lo" || snap.state.owns(a.Link, a.Prefix.String()) {
			continue
		}
		own[a.Prefix.Addr()] = a.Link
	}
	for i, v := range cfg.VIPs {
		if link, ok := own[v.Address]; ok {
			errs.add(fmt.Sprintf("vips[%d].address", i), v.Address.String(),
				"a VIP, not an address of this host's own interface "+link+" (that address would answer ARP and steal the VIP)")
		}
		if v.RealIP.IsValid() {
			if _, ok := own[v.RealIP]; !ok {
				errs.add(fmt.Sprintf("vips[%d].real_ip", i), v.RealIP.String(), "an IPv4 address configured on this host's NIC")
			}
		}
	}
	if err := h.checkVIPsAgainstRoutes(cfg, snap, &errs); err != nil {
		return err
	}
	if cfg.Mode == ModeARPTables && len(cfg.Interfaces) > 1 {
		// The VIPs go on one NIC and ARP leaving any NIC is rewritten to one
		// real IP: with several NICs that IP would be wrong on the others.
		errs.add("interfaces", strings.Join(cfg.Interfaces, ", "), "exactly one LB-facing NIC in arptables mode")
	}
	if cfg.Mode == ModeARPTables && len(cfg.Interfaces) > 0 && links[cfg.Interfaces[0]] {
		for i, v := range cfg.VIPs {
			if v.Address.Is4() && !v.RealIP.IsValid() && !primaryIPv4(snap, cfg.Interfaces[0]).IsValid() {
				errs.add(fmt.Sprintf("vips[%d].real_ip", i), "", "an address to announce instead of the VIP: "+cfg.Interfaces[0]+" has no IPv4 address")
				break
			}
		}
	}
	if cfg.Health != nil && cfg.Health.Listen == "" {
		var ip netip.Addr
		if len(cfg.Interfaces) > 0 {
			ip = primaryIPv4(snap, cfg.Interfaces[0])
		}
		if ip.IsValid() {
			cfg.Health.Listen = netip.AddrPortFrom(ip, DefaultHealthPort).String()
		} else {
			errs.add("health.listen", "", "ip:port: the first interface has no IPv4 address to default to")
		}
	}
	if hc := cfg.Health; hc != nil {
		hostAddrs := map[netip.Addr]string{}
		for _, a := range snap.addrs {
			if !snap.state.owns(a.Link, a.Prefix.String()) {
				hostAddrs[a.Prefix.Addr()] = a.Link
			}
		}
		checkListenIsOwn("health.listen", hc.Listen, hostAddrs, &errs)
		if hc.AgentCheck != nil {
			checkListenIsOwn("health.agent_check.listen", hc.AgentCheck.Listen, hostAddrs, &errs)
		}
	}
	return errs.hostErr()
}

// checkListenIsOwn: the director's heartbeat must reach this host, so the
// listener's address must be one of the host's own (binding elsewhere would
// "work" through IP_FREEBIND and answer nothing).
func checkListenIsOwn(field, listen string, own map[netip.Addr]string, errs *fieldErrors) {
	ap, err := netip.ParseAddrPort(listen)
	if err != nil || ap.Addr().IsUnspecified() {
		return // reported by the config's own checks
	}
	if _, ok := own[ap.Addr().Unmap()]; !ok {
		errs.add(field, listen, "an address of this host (not configured on any interface here)")
	}
}

// checkVIPsAgainstRoutes rejects VIPs that are the host's gateway or the
// network or broadcast address of a subnet the host is connected to: the
// host would send its own traffic, or subnet broadcasts, to itself.
func (h *Host) checkVIPsAgainstRoutes(cfg *Config, snap *snapshot, errs *fieldErrors) error {
	gateways := map[netip.Addr]bool{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.nl.RouteList(nil, fam)
		if err != nil {
			return fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			for _, gw := range append([]net.IP{r.Gw}, multipathGateways(r)...) {
				if a, ok := netip.AddrFromSlice(gw); ok {
					gateways[a.Unmap()] = true
				}
			}
		}
	}
	special := map[netip.Addr]string{}
	for _, a := range snap.addrs {
		p := a.Prefix.Masked()
		if a.Link == "lo" || snap.state.owns(a.Link, a.Prefix.String()) || p.IsSingleIP() {
			continue
		}
		if p.Addr().Is4() && p.Bits() >= 31 {
			continue // /31 point-to-point: both addresses are hosts (RFC 3021)
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
	for i, v := range cfg.VIPs {
		field := fmt.Sprintf("vips[%d].address", i)
		if gateways[v.Address] {
			errs.add(field, v.Address.String(), "a VIP, not a gateway of this host's routes")
		} else if why, ok := special[v.Address]; ok {
			errs.add(field, v.Address.String(), "a host address, not "+why)
		}
	}
	return nil
}

func multipathGateways(r netlink.Route) []net.IP {
	var out []net.IP
	for _, nh := range r.MultiPath {
		out = append(out, nh.Gw)
	}
	return out
}

// primaryIPv4 is the interface's first non-secondary IPv4 that is not a
// dsr-agent VIP.
func primaryIPv4(snap *snapshot, link string) netip.Addr {
	for _, a := range snap.addrs {
		if a.Link == link && a.Prefix.Addr().Is4() && !a.Secondary && !snap.state.owns(a.Link, a.Prefix.String()) {
			return a.Prefix.Addr()
		}
	}
	return netip.Addr{}
}

// defaultRouteLink is the interface of the best (lowest metric) default
// route, IPv4 first; for a multipath route, its first hop's interface.
func (h *Host) defaultRouteLink() (string, error) {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.nl.RouteList(nil, fam)
		if err != nil {
			return "", fmt.Errorf("list routes: %w", err)
		}
		best, bestPrio := 0, -1
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			idx := r.LinkIndex
			if idx == 0 && len(r.MultiPath) > 0 {
				idx = r.MultiPath[0].LinkIndex
			}
			if idx == 0 { // blackhole/unreachable default: no interface
				continue
			}
			if bestPrio == -1 || r.Priority < bestPrio {
				best, bestPrio = idx, r.Priority
			}
		}
		if best != 0 {
			l, err := h.nl.LinkByIndex(best)
			if err != nil {
				return "", fmt.Errorf("default route link %d: %w", best, err)
			}
			return l.Attrs().Name, nil
		}
	}
	return "", nil
}

// desired is the host state a config asks for.
type desired struct {
	sysctls []arp.Setting
	addrs   []loopback.Addr // labels are assigned when planning
	tables  map[firewall.Family]firewall.Spec
}

func desiredFor(cfg *Config, snap *snapshot) desired {
	d := desired{tables: map[firewall.Family]firewall.Spec{}}
	nicLink := ""
	if len(cfg.Interfaces) > 0 {
		nicLink = cfg.Interfaces[0]
	}
	switch cfg.Mode {
	case ModeLoopback:
		if len(cfg.VIPs) == 0 {
			// Nothing to protect: an installed but unconfigured host (the
			// packaged example has no VIPs) is left exactly as it was.
			break
		}
		d.sysctls = arp.Suppression(cfg.Interfaces)
		for _, v := range cfg.VIPs {
			d.addrs = append(d.addrs, loopback.Addr{Link: "lo", Prefix: loopback.HostPrefix(v.Address)})
		}
	case ModeARPTables:
		arpTable := &firewall.ARPTable{}
		real := primaryIPv4(snap, nicLink)
		for _, v := range cfg.VIPs {
			if !v.Address.Is4() {
				// ARP is IPv4 only; the kernel answers Neighbour Solicitations
				// only for addresses on the receiving interface, so an IPv6
				// VIP on lo is never claimed.
				d.addrs = append(d.addrs, loopback.Addr{Link: "lo", Prefix: loopback.HostPrefix(v.Address)})
				continue
			}
			r := v.RealIP
			if !r.IsValid() {
				r = real
			}
			arpTable.Entries = append(arpTable.Entries, firewall.ARPEntry{VIP: v.Address, Real: r})
			d.addrs = append(d.addrs, loopback.Addr{Link: nicLink, Prefix: loopback.HostPrefix(v.Address)})
		}
		if len(arpTable.Entries) > 0 {
			d.tables[arpTable.Family()] = arpTable
		}
	case ModeFirewalld:
		nat4, nat6 := &firewall.NATTable{}, &firewall.NATTable{IPv6: true}
		for _, v := range cfg.VIPs {
			t := nat4
			if v.Address.Is6() {
				t = nat6
			}
			for _, p := range v.Ports {
				t.Redirects = append(t.Redirects, firewall.Redirect{VIP: v.Address, Proto: protoNumber(p.Protocol), Port: p.Port, ToPort: p.ToPort})
			}
		}
		for _, t := range []*firewall.NATTable{nat4, nat6} {
			if len(t.Redirects) > 0 {
				d.tables[t.Family()] = t
			}
		}
	}
	loopback.SortAddrs(d.addrs)
	return d
}

func protoNumber(p string) uint8 {
	if p == "udp" {
		return 17
	}
	return 6
}

// observed is what the kernel has of the things dsr-agent manages.
type observed struct {
	addrs []loopback.Addr
	state *State
	// sysctls holds current values of desired and saved sysctls ("" when
	// the sysctl does not exist, e.g. its interface is gone).
	sysctls map[string]string
	// tablesPresent: which families have a dsr-agent table.
	tablesPresent map[firewall.Family]bool
	// tableDiff: for each desired table, "" when in sync, else why not.
	tableDiff map[firewall.Family]string
}

func (h *Host) observe(d desired, snap *snapshot) (*observed, error) {
	o := &observed{addrs: snap.addrs, state: snap.state, sysctls: map[string]string{}, tableDiff: map[firewall.Family]string{}}
	keys := map[string]bool{}
	for _, s := range d.sysctls {
		keys[s.Path.Key()] = true
	}
	for k := range snap.state.SavedSysctls {
		keys[k] = true
	}
	for k := range keys {
		v, err := h.sysctl.Read(arp.ParseKey(k))
		if err != nil && !errors.Is(err, arp.ErrNotFound) {
			return nil, err
		}
		o.sysctls[k] = v
	}
	present, err := h.tables.Present()
	if errors.Is(err, firewall.ErrPermission) {
		return nil, fmt.Errorf("%w: %w", ErrPrivileges, err)
	}
	if err != nil {
		return nil, err
	}
	o.tablesPresent = present
	for fam, spec := range d.tables {
		if !present[fam] {
			o.tableDiff[fam] = "table missing"
			continue
		}
		diff, err := h.tables.Diff(spec)
		if err != nil {
			return nil, err
		}
		o.tableDiff[fam] = diff
	}
	return o, nil
}

// computePlan is the pure diff of desired and observed state.
func computePlan(d desired, o *observed) *Plan {
	var changes []Change
	present := map[string]loopback.Addr{}
	for _, a := range o.addrs {
		present[loopback.Key(a.Link, a.Prefix)] = a
	}
	want := map[string]bool{}
	for _, a := range d.addrs {
		want[loopback.Key(a.Link, a.Prefix)] = true
	}
	// The first IPv4 of each interface in the kernel's order: the host's
	// own address, unless dsr-agent's label says otherwise.
	primary := map[string]netip.Prefix{}
	for _, a := range o.addrs {
		if _, seen := primary[a.Link]; !seen && a.Prefix.Addr().Is4() && !a.Secondary {
			primary[a.Link] = a.Prefix
		}
	}
	// Owned addresses no longer wanted (VIP removed, mode or NIC changed).
	for _, oa := range o.state.Addresses {
		p, err := netip.ParsePrefix(oa.Prefix)
		if err != nil {
			continue
		}
		key := loopback.Key(oa.Link, p)
		if pa, ok := present[key]; ok && !want[key] {
			a := loopback.Addr{Link: oa.Link, Prefix: p}
			if why := notProvablyOwn(pa, primary[pa.Link]); why != "" {
				// Defence in depth behind the state dir check: a state file
				// must never make dsr-agent delete the host's own address.
				changes = append(changes, Change{Kind: AddrDel, Subject: p.Addr().String(), Reason: "not deleted: " + why,
					addr: a, forgetOnly: true})
				continue
			}
			changes = append(changes, Change{Kind: AddrDel, Subject: p.Addr().String(), Reason: "no longer configured on " + oa.Link,
				Command: a.Command("del"), addr: a})
		}
	}
	desiredSysctl := map[string]bool{}
	for _, s := range d.sysctls {
		desiredSysctl[s.Path.Key()] = true
	}
	for _, v := range arp.Needed(d.sysctls, o.sysctls) {
		changes = append(changes, Change{Kind: SysctlSet, Subject: v.Setting.Path.String(), Reason: v.Reason,
			Command: sysctlCommand(v.Setting.Path, v.Setting.Value()), sysctl: v.Setting.Path, value: v.Setting.Value()})
	}
	for _, fam := range firewall.Families {
		spec, ok := d.tables[fam]
		if !ok {
			if o.tablesPresent[fam] {
				changes = append(changes, Change{Kind: TableDelete, Subject: firewall.TableRef(fam), Reason: "not in the config",
					Command: firewall.RenderDelete(fam), family: fam})
			}
			continue
		}
		if diff := o.tableDiff[fam]; diff != "" {
			changes = append(changes, Change{Kind: TableReplace, Subject: firewall.TableRef(fam), Reason: diff,
				Command: firewall.RenderReplace(spec), spec: spec, family: fam})
		}
	}
	labels := loopback.NewLabeler(o.addrs)
	for _, a := range d.addrs {
		if _, ok := present[loopback.Key(a.Link, a.Prefix)]; ok {
			continue
		}
		if a.Prefix.Addr().Is4() {
			a.Label = labels.Next(a.Link)
		}
		changes = append(changes, Change{Kind: AddrAdd, Subject: a.Prefix.Addr().String(), Reason: "",
			Command: a.Command("add"), addr: a})
	}
	for _, k := range slices.Sorted(maps.Keys(o.state.SavedSysctls)) {
		if desiredSysctl[k] {
			continue
		}
		path := arp.ParseKey(k)
		val := o.state.SavedSysctls[k]
		cur := o.sysctls[k]
		rule := arp.RuleFor(path)
		if cur == "" || cur == val || rule == nil || cur != strconv.Itoa(rule.Target) {
			// Gone with its interface, already back, or changed by someone
			// since dsr-agent set it: nothing to restore, only to forget.
			changes = append(changes, Change{Kind: SysctlRestore, Subject: path.String(), sysctl: path, forgetOnly: true})
			continue
		}
		changes = append(changes, Change{Kind: SysctlRestore, Subject: path.String(), Reason: "restore the value found before dsr-agent",
			Command: sysctlCommand(path, val), sysctl: path, value: val})
	}
	return &Plan{Changes: sortedByPhase(changes)}
}

// notProvablyOwn says why an address recorded as owned cannot be proven to
// be dsr-agent's ("" when it can): dsr-agent only adds host prefixes, IPv6
// ones only on lo, and labels its IPv4 ones (when the name fits IFNAMSIZ).
func notProvablyOwn(a loopback.Addr, primary netip.Prefix) string {
	switch {
	case loopback.HasOwnLabel(a):
		return ""
	case !a.Prefix.IsSingleIP():
		return "a network prefix, and dsr-agent only adds host addresses"
	case a.Prefix.Addr().Is6() && a.Link != "lo":
		return "an IPv6 address on " + a.Link + ", and dsr-agent puts IPv6 VIPs only on lo"
	case a.Prefix == primary && a.Link != "lo":
		return "the primary address of " + a.Link + " without dsr-agent's label"
	}
	return ""
}

// planned is a plan with the snapshot and desired state it came from.
type planned struct {
	plan *Plan
	snap *snapshot
	want desired
	obs  *observed
}

func (h *Host) planFor(cfg *Config, moveAside bool) (*planned, error) {
	snap, err := h.snapshot(moveAside)
	if err != nil {
		return nil, err
	}
	if err := h.validate(cfg, snap); err != nil {
		return nil, err
	}
	d := desiredFor(cfg, snap)
	o, err := h.observe(d, snap)
	if err != nil {
		return nil, err
	}
	return &planned{plan: computePlan(d, o), snap: snap, want: d, obs: o}, nil
}

// Plan computes what Apply would change, changing nothing.
func (h *Host) Plan(cfg *Config) (*Plan, error) {
	p, err := h.planFor(cfg, false)
	if err != nil {
		return nil, err
	}
	p.plan.Notes = stateNotes(p.snap.state, noteApply)
	return p.plan, nil
}

// Apply converges the host to cfg and returns the changes it made (empty
// when already in sync). The whole config is validated against one snapshot
// before the first change. On error the returned plan lists what was done.
func (h *Host) Apply(cfg *Config) (*Plan, error) {
	unlock, err := h.store.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	p, err := h.planFor(cfg, true)
	if err != nil {
		return nil, err
	}
	pruned := forgetVanished(p.snap, p.want.addrs)
	if p.snap.state.Recovered != "" {
		adoptConfiguredVIPs(p.snap, p.want.addrs)
	}
	done, err := h.execute(p.plan, p.snap.state, pruned || p.snap.state.Recovered != "")
	if done != nil {
		done.Notes = stateNotes(p.snap.state, noteApply)
	}
	return done, err
}

// adoptConfiguredVIPs records as owned the configured VIPs already in place
// when the state file was lost: IPv6 addresses carry no label, so without
// this a later remove would leave them behind.
func adoptConfiguredVIPs(snap *snapshot, want []loopback.Addr) {
	present := map[OwnedAddr]bool{}
	for _, a := range snap.addrs {
		present[OwnedAddr{Link: a.Link, Prefix: a.Prefix.String()}] = true
	}
	for _, a := range want {
		if present[OwnedAddr{Link: a.Link, Prefix: a.Prefix.String()}] {
			snap.state.addAddr(a.Link, a.Prefix.String())
		}
	}
}

// forgetVanished drops owned addresses that are neither present nor wanted
// (someone else deleted them after they stopped being wanted), so the state
// file does not grow stale entries.
func forgetVanished(snap *snapshot, want []loopback.Addr) (changed bool) {
	keep := map[OwnedAddr]bool{}
	for _, a := range snap.addrs {
		keep[OwnedAddr{Link: a.Link, Prefix: a.Prefix.String()}] = true
	}
	for _, a := range want {
		keep[OwnedAddr{Link: a.Link, Prefix: a.Prefix.String()}] = true
	}
	return snap.state.keepAddrs(func(a OwnedAddr) bool { return keep[a] }) > 0
}

// Remove undoes everything dsr-agent owns: its addresses first (no instant
// with a VIP and no suppression), then its tables, then the saved sysctls.
func (h *Host) Remove() (*Plan, error) {
	unlock, err := h.store.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	snap, err := h.snapshot(true)
	if err != nil {
		return nil, err
	}
	none := desired{tables: map[firewall.Family]firewall.Spec{}}
	o, err := h.observe(none, snap)
	if err != nil {
		return nil, err
	}
	pruned := forgetVanished(snap, nil)
	done, err := h.execute(computePlan(none, o), snap.state, pruned || snap.state.Recovered != "")
	if done != nil {
		done.Notes = stateNotes(snap.state, noteRemove)
	}
	if err != nil {
		return done, err
	}
	if len(snap.state.Addresses) == 0 && len(snap.state.SavedSysctls) == 0 {
		if err := h.store.clear(); err != nil {
			return done, err
		}
	}
	return done, nil
}

// execute runs the plan in phase order, keeping the state file ahead of the
// kernel: ownership and saved values are written before the change they
// cover, and dropped only after it.
func (h *Host) execute(plan *Plan, st *State, dirty bool) (*Plan, error) {
	done := &Plan{}
	saveIfDirty := func() error {
		if !dirty {
			return nil
		}
		dirty = false
		return h.store.save(st)
	}
	// Record what will be saved or owned before touching the kernel.
	for _, c := range plan.Changes {
		switch c.Kind {
		case SysctlSet:
			k := c.sysctl.Key()
			if _, ok := st.SavedSysctls[k]; !ok {
				cur, err := h.sysctl.Read(c.sysctl)
				if err != nil {
					return done, fmt.Errorf("save sysctl %s before changing it: %w", c.sysctl, err)
				}
				st.SavedSysctls[k] = cur
				dirty = true
			}
		case AddrAdd:
			if !st.owns(c.addr.Link, c.addr.Prefix.String()) {
				st.addAddr(c.addr.Link, c.addr.Prefix.String())
				dirty = true
			}
		}
	}
	if err := saveIfDirty(); err != nil {
		return done, err
	}
	deleted := map[OwnedAddr]bool{}
	forgetDeleted := func() {
		if len(deleted) > 0 {
			st.keepAddrs(func(a OwnedAddr) bool { return !deleted[a] })
			clear(deleted)
		}
	}
	for _, c := range plan.Changes {
		if c.Kind != AddrDel {
			forgetDeleted()
		}
		var err error
		switch c.Kind {
		case AddrDel:
			if c.forgetOnly {
				slog.Warn("owned address left in place", "address", c.addr.String(), "why", c.Reason)
			} else {
				err = h.addrs.Del(c.addr)
			}
		case SysctlSet:
			err = h.sysctl.Write(c.sysctl, c.value)
		case TableReplace:
			err = h.tables.Replace(c.spec)
		case AddrAdd:
			err = h.addrs.Add(c.addr)
		case TableDelete:
			err = h.tables.Delete(c.family)
		case SysctlRestore:
			if !c.forgetOnly {
				err = h.sysctl.Write(c.sysctl, c.value)
				if errors.Is(err, arp.ErrNotFound) {
					err = nil
				}
			}
		}
		if err != nil {
			forgetDeleted()
			_ = saveIfDirty()
			return done, fmt.Errorf("%s %s: %w", c.Kind, c.Subject, err)
		}
		switch c.Kind {
		case AddrDel:
			deleted[OwnedAddr{Link: c.addr.Link, Prefix: c.addr.Prefix.String()}] = true
			dirty = true
		case SysctlRestore:
			delete(st.SavedSysctls, c.sysctl.Key())
			dirty = true
		}
		slog.Debug("applied", "kind", c.Kind, "subject", c.Subject, "reason", c.Reason)
		done.Changes = append(done.Changes, c)
	}
	forgetDeleted()
	if err := saveIfDirty(); err != nil {
		return done, err
	}
	return done, nil
}
