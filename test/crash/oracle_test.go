//go:build crash

package crash

// The oracle: an independent reading of the kernel (netlink, /proc/sys, the
// nft tool) and the kernel's own rules for what suppresses ARP. It shares no
// code with dsr-agent, so a wrong rule in dsr-agent cannot hide here too.
//
// The rules (net/ipv4/arp.c; the kernel takes max(all, iface) of both
// sysctls, per receiving / sending interface):
//
//	arp_ignore  (arp_ignore(), per receiving interface X)
//	  0        answer for any local address                 -> answers
//	  1        answer only for addresses on X               -> suppresses a VIP not on X
//	  2        as 1, and the sender in the same subnet      -> suppresses a VIP not on X;
//	           (counted as answering for a VIP on X itself: whether the kernel answers
//	           then depends on the subnets, and the oracle stays conservative)
//	  3        answer unless the address has scope host     -> answers (a VIP is global)
//	  4..7     reserved, no filtering                       -> answers
//	  8        answer nothing                               -> suppresses
//	  >8       no filtering                                 -> answers
//	arp_announce (arp_solicit(), per sending interface X)
//	  2        the best local address for the target (X's primary)  -> suppresses
//	  0, >=3   the packet's source address may be the sender (the VIP)  -> does not
//	  1        counted as not suppressing (the design asks for exactly 2)
//
// A VIP on X itself (arptables mode: the VIP on the NIC) is answered on X
// whatever arp_ignore 1/2 say, so there the `arp dsr-agent` table must be in
// force: present, not dormant, an input-hook chain whose drop rule matches
// the VIP through its set (no accept, return, jump or goto before it), and
// for the sending side an output-hook rule that rewrites the VIP as sender
// through its map (or an effective arp_announce of 2).

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// ignoreSuppresses reports whether an effective arp_ignore value v on the
// receiving interface stops the kernel answering for a VIP; onRecv says the
// VIP is configured on that receiving interface itself.
func ignoreSuppresses(v int, onRecv bool) bool {
	switch {
	case v == 8:
		return true
	case (v == 1 || v == 2) && !onRecv:
		return true
	}
	return false
}

// announceSuppresses reports whether an effective arp_announce value keeps a
// VIP from being the sender address of ARP requests.
func announceSuppresses(v int) bool { return v == 2 }

// arpTable is what the oracle proves about `table arp dsr-agent`.
type arpTable struct {
	Flags []string // table flags from the text listing ("dormant")
	// Drops: VIPs an input-hook rule drops ARP for; Rewrites: VIPs an
	// output-hook rule rewrites as sender (to an address that is no VIP).
	Drops    map[netip.Addr]bool
	Rewrites map[netip.Addr]netip.Addr
	// SenderDrops: VIPs an output-hook rule drops every ARP packet from
	// (firewalld mode's guard): no ARP leaves with them as sender, which
	// suppresses the sending side as a rewrite does. The guard's input rule
	// drops requests for a VIP unless their sender is one; the kernel's
	// answer to those carries the VIP as sender and is dropped on output,
	// so a VIP counts in Drops only when it is in SenderDrops too.
	SenderDrops map[netip.Addr]bool
}

func (a *arpTable) dormant() bool { return slices.Contains(a.Flags, "dormant") }

// kernelView is the kernel's state as far as the invariant is concerned.
type kernelView struct {
	// On: VIP -> interfaces it is configured on.
	On       map[netip.Addr][]string
	Ignore   map[string]int // "all" and each LB-facing interface
	Announce map[string]int
	ARP      *arpTable // nil: no `arp dsr-agent` table
}

func (v *kernelView) effIgnore(iface string) int   { return max(v.Ignore["all"], v.Ignore[iface]) }
func (v *kernelView) effAnnounce(iface string) int { return max(v.Announce["all"], v.Announce[iface]) }

// violations lists every VIP present without suppression in force, grouped
// so 2,000 VIPs make a readable message. lb are the LB-facing interfaces.
func (v *kernelView) violations(lb []string) []string {
	groups := map[string][]netip.Addr{}
	for vip, links := range v.On {
		for _, link := range links {
			for _, x := range lb {
				onRecv := link == x
				tableOK := v.ARP != nil && !v.ARP.dormant()
				if !(tableOK && v.ARP.Drops[vip]) && !ignoreSuppresses(v.effIgnore(x), onRecv) {
					why := fmt.Sprintf("VIP on %s answered on %s: arp_ignore all=%d %s=%d (effective %d)", link, x, v.Ignore["all"], x, v.Ignore[x], v.effIgnore(x))
					if onRecv {
						why += ", " + v.tableDesc("input drop")
					}
					groups[why] = append(groups[why], vip)
				}
				_, rewritten := v.ARP.rewrite(vip)
				if !(tableOK && (rewritten || v.ARP.SenderDrops[vip])) && !announceSuppresses(v.effAnnounce(x)) {
					why := fmt.Sprintf("VIP on %s may be ARP sender on %s: arp_announce all=%d %s=%d (effective %d)", link, x, v.Announce["all"], x, v.Announce[x], v.effAnnounce(x))
					if onRecv {
						why += ", " + v.tableDesc("output rewrite")
					}
					groups[why] = append(groups[why], vip)
				}
			}
		}
	}
	var out []string
	for why, vips := range groups {
		slices.SortFunc(vips, func(a, b netip.Addr) int { return a.Compare(b) })
		ex := vips
		if len(ex) > 3 {
			ex = ex[:3]
		}
		out = append(out, fmt.Sprintf("%d VIP(s) (e.g. %v): %s", len(vips), ex, why))
	}
	sort.Strings(out)
	return out
}

func (a *arpTable) rewrite(vip netip.Addr) (netip.Addr, bool) {
	if a == nil {
		return netip.Addr{}, false
	}
	r, ok := a.Rewrites[vip]
	return r, ok
}

func (v *kernelView) tableDesc(what string) string {
	switch {
	case v.ARP == nil:
		return "no arp dsr-agent table"
	case v.ARP.dormant():
		return "arp dsr-agent table dormant"
	default:
		return "arp dsr-agent table has no " + what + " for it"
	}
}

// summary is one line of what a kill left behind (for the coverage log).
func (v *kernelView) summary(nic string) string {
	count := map[string]int{}
	for _, links := range v.On {
		for _, l := range links {
			count[l]++
		}
	}
	var where []string
	for l, n := range count {
		where = append(where, fmt.Sprintf("%s:%d", l, n))
	}
	sort.Strings(where)
	if len(where) == 0 {
		where = []string{"none"}
	}
	table := "none"
	if v.ARP != nil {
		table = fmt.Sprintf("drop %d rewrite %d", len(v.ARP.Drops), len(v.ARP.Rewrites))
		if v.ARP.dormant() {
			table += " DORMANT"
		}
	}
	return fmt.Sprintf("VIPs %s; ignore all=%d %s=%d; announce all=%d %s=%d; arp table: %s",
		strings.Join(where, ","), v.Ignore["all"], nic, v.Ignore[nic], v.Announce["all"], nic, v.Announce[nic], table)
}

// readView reads the kernel of ns. vips is the set of addresses that count
// as VIPs; lb the LB-facing interfaces.
func readView(ns *netnstest.NS, vips map[netip.Addr]bool, lb []string) (*kernelView, error) {
	v := &kernelView{On: map[netip.Addr][]string{}, Ignore: map[string]int{}, Announce: map[string]int{}}
	links, err := ns.Netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links in %s: %w", ns.Name, err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	addrs, err := addrList(ns, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if vips[ip] {
			v.On[ip] = append(v.On[ip], names[a.LinkIndex])
		}
	}
	for _, iface := range append([]string{"all"}, lb...) {
		for _, key := range []string{"arp_ignore", "arp_announce"} {
			n, err := readSysctlInt(ns, "net", "ipv4", "conf", iface, key)
			if err != nil {
				return nil, err
			}
			if key == "arp_ignore" {
				v.Ignore[iface] = n
			} else {
				v.Announce[iface] = n
			}
		}
	}
	v.ARP, err = readARPTable(ns, vips)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// addrList dumps addresses, retrying an interrupted dump.
func addrList(ns *netnstest.NS, family int) ([]netlink.Addr, error) {
	for range 5 {
		addrs, err := ns.Netlink.AddrList(nil, family)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("dump addresses in %s: %w", ns.Name, err)
		}
		return addrs, nil
	}
	return nil, fmt.Errorf("dump addresses in %s: interrupted 5 times", ns.Name)
}

func readSysctl(ns *netnstest.NS, components ...string) (string, error) {
	var val string
	err := netnstest.Within(ns.Handle, func() error {
		b, err := os.ReadFile("/proc/sys/" + strings.Join(components, "/"))
		val = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read sysctl %s in %s: %w", strings.Join(components, "/"), ns.Name, err)
	}
	return val, nil
}

func readSysctlInt(ns *netnstest.NS, components ...string) (int, error) {
	s, err := readSysctl(ns, components...)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("sysctl %s in %s: %q: %w", strings.Join(components, "/"), ns.Name, s, err)
	}
	return n, nil
}

func writeSysctl(ns *netnstest.NS, value string, components ...string) error {
	return netnstest.Within(ns.Handle, func() error {
		p := "/proc/sys/" + strings.Join(components, "/")
		if err := os.WriteFile(p, []byte(value), 0); err != nil {
			return fmt.Errorf("write %s=%s in %s: %w", p, value, ns.Name, err)
		}
		return nil
	})
}

// nftIn runs nft in ns and returns stdout.
func nftIn(ns *netnstest.NS, stdin string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name, "nft"}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("nft %s in %s: %w: %s", strings.Join(args, " "), ns.Name, err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// readARPTable reads `table arp dsr-agent`: flags from the text listing (nft
// 1.0.6 prints table flags in JSON as garbage), chains, rules, sets and maps
// from the JSON listing.
func readARPTable(ns *netnstest.NS, vips map[netip.Addr]bool) (*arpTable, error) {
	text, err := nftIn(ns, "", "-t", "list", "ruleset", "arp")
	if err != nil {
		return nil, err
	}
	flags, found := tableFlags(text, "arp", "dsr-agent")
	if !found {
		return nil, nil
	}
	js, err := nftIn(ns, "", "-j", "list", "ruleset", "arp")
	if err != nil {
		return nil, err
	}
	t, err := parseARPTable(js, "dsr-agent", vips)
	if err != nil {
		return nil, fmt.Errorf("arp dsr-agent in %s: %w", ns.Name, err)
	}
	t.Flags = flags
	return t, nil
}

// tableFlags finds `table FAMILY NAME {` in an nft text listing and returns
// the words of its `flags` line.
func tableFlags(text, family, name string) (flags []string, found bool) {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != "table "+family+" "+name+" {" {
			continue
		}
		for _, m := range lines[i+1:] {
			m = strings.TrimSpace(m)
			if m == "" || strings.HasPrefix(m, "comment") {
				continue
			}
			if f, ok := strings.CutPrefix(m, "flags "); ok {
				for _, w := range strings.Split(f, ",") {
					flags = append(flags, strings.TrimSpace(w))
				}
			}
			break
		}
		return flags, true
	}
	return nil, false
}

// The parts of nft's JSON schema the oracle reads.
type nftDoc struct {
	Nftables []map[string]json.RawMessage `json:"nftables"`
}

type nftSet struct {
	Family string            `json:"family"`
	Table  string            `json:"table"`
	Name   string            `json:"name"`
	Elem   []json.RawMessage `json:"elem"`
}

type nftChain struct {
	Family string `json:"family"`
	Table  string `json:"table"`
	Name   string `json:"name"`
	Type   string `json:"type"`
	Hook   string `json:"hook"`
}

type nftRule struct {
	Family string                       `json:"family"`
	Table  string                       `json:"table"`
	Chain  string                       `json:"chain"`
	Expr   []map[string]json.RawMessage `json:"expr"`
}

func parseARPTable(js, table string, vips map[netip.Addr]bool) (*arpTable, error) {
	var doc nftDoc
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		return nil, fmt.Errorf("parse nft JSON: %w", err)
	}
	sets := map[string][]netip.Addr{}              // set name -> elements
	maps := map[string]map[netip.Addr]netip.Addr{} // map name -> key:value
	chains := map[string]nftChain{}                // base chains by name
	var rules []nftRule
	for _, obj := range doc.Nftables {
		for kind, raw := range obj {
			switch kind {
			case "set", "map":
				var s nftSet
				if err := json.Unmarshal(raw, &s); err != nil {
					return nil, fmt.Errorf("parse %s: %w", kind, err)
				}
				if s.Table != table {
					continue
				}
				if kind == "set" {
					for _, e := range s.Elem {
						addrs, err := elemAddrs(e, vips)
						if err != nil {
							return nil, fmt.Errorf("set %s: %w", s.Name, err)
						}
						sets[s.Name] = append(sets[s.Name], addrs...)
					}
					continue
				}
				m := map[netip.Addr]netip.Addr{}
				for _, e := range s.Elem {
					var kv []json.RawMessage
					if err := json.Unmarshal(e, &kv); err != nil || len(kv) != 2 {
						return nil, fmt.Errorf("map %s: element %s: not a key:value pair", s.Name, e)
					}
					keys, err := elemAddrs(kv[0], vips)
					if err != nil {
						return nil, fmt.Errorf("map %s: %w", s.Name, err)
					}
					var val string
					if err := json.Unmarshal(kv[1], &val); err != nil {
						return nil, fmt.Errorf("map %s: value %s: %w", s.Name, kv[1], err)
					}
					to, err := netip.ParseAddr(val)
					if err != nil {
						return nil, fmt.Errorf("map %s: value %q: %w", s.Name, val, err)
					}
					for _, k := range keys {
						m[k] = to
					}
				}
				maps[s.Name] = m
			case "chain":
				var c nftChain
				if err := json.Unmarshal(raw, &c); err != nil {
					return nil, fmt.Errorf("parse chain: %w", err)
				}
				if c.Table == table {
					chains[c.Name] = c
				}
			case "rule":
				var r nftRule
				if err := json.Unmarshal(raw, &r); err != nil {
					return nil, fmt.Errorf("parse rule: %w", err)
				}
				if r.Table == table {
					rules = append(rules, r)
				}
			}
		}
	}
	t := &arpTable{Drops: map[netip.Addr]bool{}, Rewrites: map[netip.Addr]netip.Addr{}, SenderDrops: map[netip.Addr]bool{}}
	guardIn := map[netip.Addr]bool{}
	// Rules are listed in chain order. Once a chain has a rule that can end
	// or divert evaluation (accept, return, jump, goto, queue) before the
	// oracle's rule, later rules there no longer count.
	stopped := map[string]bool{}
	for _, r := range rules {
		c, ok := chains[r.Chain]
		if !ok || c.Type != "filter" || stopped[r.Chain] {
			continue
		}
		switch c.Hook {
		case "input":
			if set, ok := dropRule(r); ok {
				for _, a := range sets[set] {
					t.Drops[a] = true
				}
				continue
			}
			if set, ok := guardDropRule(r); ok {
				// Requests from an exempted sender (a VIP: the
				// director's gratuitous ARP) reach the kernel; only the
				// output drop covers its answer (see SenderDrops).
				for _, a := range sets[set] {
					guardIn[a] = true
				}
				continue
			}
		case "output":
			if set, ok := matchSet(r, "saddr ip", "drop"); ok && isDrop(r) {
				for _, a := range sets[set] {
					t.SenderDrops[a] = true
				}
				continue
			}
			if set, m, ok := rewriteRule(r); ok {
				for _, a := range sets[set] {
					if to, ok := maps[m][a]; ok && !vips[to] {
						t.Rewrites[a] = to
					}
				}
				continue
			}
		default:
			continue
		}
		if divertsFlow(r) {
			stopped[r.Chain] = true
		}
	}
	for a := range guardIn {
		if t.SenderDrops[a] {
			t.Drops[a] = true
		}
	}
	return t, nil
}

func isDrop(r nftRule) bool {
	if len(r.Expr) == 0 {
		return false
	}
	last := r.Expr[len(r.Expr)-1]
	_, drop := last["drop"]
	return drop && len(last) == 1
}

// guardDropRule recognises firewalld mode's guard input rule: `arp ...
// arp operation request arp daddr ip @SET arp saddr ip != @EXCEPT [counter]
// drop`.
func guardDropRule(r nftRule) (set string, ok bool) {
	if !isDrop(r) {
		return "", false
	}
	var except string
	request := false
	for _, e := range r.Expr {
		for k, raw := range e {
			switch k {
			case "match":
				var m nftMatch
				if json.Unmarshal(raw, &m) != nil || m.Left.Payload == nil || m.Left.Payload.Protocol != "arp" {
					return "", false
				}
				var ref string
				switch f := m.Left.Payload.Field; {
				case f == "operation" && m.Op == "==" && string(m.Right) == `"request"`:
					request = true
				case f == "daddr ip" && m.Op == "==" && json.Unmarshal(m.Right, &ref) == nil && strings.HasPrefix(ref, "@") && set == "":
					set = ref[1:]
				case f == "saddr ip" && m.Op == "!=" && json.Unmarshal(m.Right, &ref) == nil && strings.HasPrefix(ref, "@") && except == "":
					except = ref[1:]
				case m.Op == "==" && guardOK(f, m.Right):
				default:
					return "", false
				}
			case "counter", "drop":
			default:
				return "", false
			}
		}
	}
	return set, request && set != "" && except != ""
}

// elemAddrs expands one set element (address, prefix or range) into the
// VIPs it contains.
func elemAddrs(raw json.RawMessage, vips map[netip.Addr]bool) ([]netip.Addr, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("element %q: %w", s, err)
		}
		return []netip.Addr{a}, nil
	}
	var obj struct {
		Elem *struct {
			Val json.RawMessage `json:"val"`
		} `json:"elem"`
		Prefix *struct {
			Addr string `json:"addr"`
			Len  int    `json:"len"`
		} `json:"prefix"`
		Range []string `json:"range"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("element %s: %w", raw, err)
	}
	var in func(netip.Addr) bool
	switch {
	case obj.Elem != nil:
		return elemAddrs(obj.Elem.Val, vips)
	case obj.Prefix != nil:
		p, err := netip.ParsePrefix(fmt.Sprintf("%s/%d", obj.Prefix.Addr, obj.Prefix.Len))
		if err != nil {
			return nil, fmt.Errorf("element %s: %w", raw, err)
		}
		in = p.Contains
	case len(obj.Range) == 2:
		lo, err1 := netip.ParseAddr(obj.Range[0])
		hi, err2 := netip.ParseAddr(obj.Range[1])
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("element %s: %w", raw, err)
		}
		in = func(a netip.Addr) bool { return a.Compare(lo) >= 0 && a.Compare(hi) <= 0 }
	default:
		return nil, fmt.Errorf("element %s: unknown form", raw)
	}
	var out []netip.Addr
	for a := range vips {
		if in(a) {
			out = append(out, a)
		}
	}
	return out, nil
}

type nftMatch struct {
	Op   string `json:"op"`
	Left struct {
		Payload *struct {
			Protocol string `json:"protocol"`
			Field    string `json:"field"`
		} `json:"payload"`
	} `json:"left"`
	Right json.RawMessage `json:"right"`
}

// guardOK: the rule's htype/ptype/hlen/plen matches are the ones every
// Ethernet/IPv4 ARP packet satisfies (so they do not narrow the rule).
func guardOK(field string, right json.RawMessage) bool {
	want := map[string][]string{"htype": {"1"}, "ptype": {`"ip"`, "2048"}, "hlen": {"6"}, "plen": {"4"}}[field]
	return slices.Contains(want, string(right))
}

// matchSet checks a rule's matches: only the guard and `arp FIELD @set`.
// It returns the set name.
func matchSet(r nftRule, field string, allowed ...string) (set string, ok bool) {
	for _, e := range r.Expr {
		for k, raw := range e {
			switch k {
			case "match":
				var m nftMatch
				if json.Unmarshal(raw, &m) != nil || m.Left.Payload == nil || m.Left.Payload.Protocol != "arp" {
					return "", false
				}
				if m.Op != "==" && m.Op != "in" {
					return "", false
				}
				if m.Left.Payload.Field == field {
					var ref string
					if json.Unmarshal(m.Right, &ref) != nil || !strings.HasPrefix(ref, "@") || set != "" {
						return "", false
					}
					set = ref[1:]
					continue
				}
				if !guardOK(m.Left.Payload.Field, m.Right) {
					return "", false
				}
			case "counter":
			default:
				if !slices.Contains(allowed, k) {
					return "", false
				}
			}
		}
	}
	return set, set != ""
}

// dropRule recognises `arp ... arp daddr ip @SET [counter] drop`.
func dropRule(r nftRule) (set string, ok bool) {
	if len(r.Expr) == 0 {
		return "", false
	}
	last := r.Expr[len(r.Expr)-1]
	if _, isDrop := last["drop"]; !isDrop || len(last) != 1 {
		return "", false
	}
	return matchSet(r, "daddr ip", "drop")
}

// rewriteRule recognises `arp ... arp saddr ip @SET [counter] arp saddr ip set
// arp saddr ip map @MAP`.
func rewriteRule(r nftRule) (set, m string, ok bool) {
	set, ok = matchSet(r, "saddr ip", "mangle")
	if !ok {
		return "", "", false
	}
	for _, e := range r.Expr {
		raw, isMangle := e["mangle"]
		if !isMangle {
			continue
		}
		var mg struct {
			Key struct {
				Payload struct {
					Protocol string `json:"protocol"`
					Field    string `json:"field"`
				} `json:"payload"`
			} `json:"key"`
			Value struct {
				Map *struct {
					Key struct {
						Payload struct {
							Protocol string `json:"protocol"`
							Field    string `json:"field"`
						} `json:"payload"`
					} `json:"key"`
					Data string `json:"data"`
				} `json:"map"`
			} `json:"value"`
		}
		if json.Unmarshal(raw, &mg) != nil || mg.Key.Payload.Protocol != "arp" || mg.Key.Payload.Field != "saddr ip" ||
			mg.Value.Map == nil || mg.Value.Map.Key.Payload.Field != "saddr ip" || !strings.HasPrefix(mg.Value.Map.Data, "@") {
			return "", "", false
		}
		m = mg.Value.Map.Data[1:]
	}
	return set, m, m != ""
}

// divertsFlow: the rule has a verdict that can end or leave the chain before
// a later rule is evaluated.
func divertsFlow(r nftRule) bool {
	for _, e := range r.Expr {
		for _, k := range []string{"accept", "return", "jump", "goto", "queue", "vmap"} {
			if _, ok := e[k]; ok {
				return true
			}
		}
	}
	return false
}
