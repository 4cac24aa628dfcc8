package agent

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
	"github.com/dsr-agent/dsr-agent/tunnel"
)

// fakeTunnel stands in for ipip, ip6_tunnel and fou on a kernel that has
// none of them (this one): "loading" ipip creates a device named tunl0 (one
// end of a veth pair, down, as the fallback device appears), link up/down
// are real, and the fou ports live in memory. The addresses, sysctls and
// nftables tables the plans put on and around it are the real kernel's.
type fakeTunnel struct {
	t       *testing.T
	ns      *netnstest.NS
	modules map[string]bool
	fou     []tunnel.FouPort
	// loadErr fails every module load (nothing proved it impossible).
	loadErr error
	// unloadable is what loadable answers (nil: every module can be had).
	unloadable error
}

func newFakeTunnel(t *testing.T, ns *netnstest.NS) *fakeTunnel {
	return &fakeTunnel{t: t, ns: ns, modules: map[string]bool{}}
}

var fakeKinds = map[string]string{tunnel.DevIPv4: "ipip", tunnel.DevIPv6: "ip6tnl"}

func (f *fakeTunnel) observe() (tunnel.Observed, error) {
	st := tunnel.Observed{Modules: map[string]bool{}, Links: map[string]tunnel.Link{}}
	for m, ok := range f.modules {
		st.Modules[m] = ok
	}
	for dev, kind := range fakeKinds {
		l, err := f.ns.Netlink.LinkByName(dev)
		if err != nil {
			continue
		}
		st.Links[dev] = tunnel.Link{Name: dev, Type: kind, Up: l.Attrs().Flags&net.FlagUp != 0}
	}
	st.Fou = slices.Clone(f.fou)
	return st, nil
}

func (f *fakeTunnel) addDev(dev string) error {
	return f.ns.Netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dev}, PeerName: netnstest.UniqueName("p")})
}

func (f *fakeTunnel) apply(s tunnel.Step) error {
	switch s.Kind {
	case tunnel.LoadModule:
		if f.loadErr != nil {
			return f.loadErr
		}
		f.modules[s.Module] = true
		for dev, mod := range map[string]string{tunnel.DevIPv4: tunnel.ModIPIP, tunnel.DevIPv6: tunnel.ModIP6Tnl} {
			if mod == s.Module {
				return f.addDev(dev)
			}
		}
	case tunnel.CreateLink:
		return f.addDev(s.Link)
	case tunnel.SetUp, tunnel.SetDown, tunnel.DeleteLink:
		l, err := f.ns.Netlink.LinkByName(s.Link)
		if err != nil {
			return err
		}
		switch s.Kind {
		case tunnel.SetUp:
			return f.ns.Netlink.LinkSetUp(l)
		case tunnel.SetDown:
			return f.ns.Netlink.LinkSetDown(l)
		}
		return f.ns.Netlink.LinkDel(l)
	case tunnel.AddFou:
		f.fou = append(f.fou, tunnel.FouPort{FouKey: s.Fou, Encap: "gue"})
	case tunnel.DelFou:
		f.fou = slices.DeleteFunc(f.fou, func(p tunnel.FouPort) bool { return p.FouKey == s.Fou })
	}
	return nil
}

func (f *fakeTunnel) loadable(string) error { return f.unloadable }

// The VIPs of the "before" and "after" configs: .10 and the IPv6 VIP are
// kept (moved when the mode changes), .11 is dropped, .12 is new.
var (
	vipsBefore = []string{"192.0.2.10", "192.0.2.11", "2001:db8::10"}
	vipsAfter  = []string{"192.0.2.10", "192.0.2.12", "2001:db8::10"}
	allModes   = []Mode{ModeLoopback, ModeARPTables, ModeFirewalld, ModeTunnel}
)

func modeConfig(m Mode, vips []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode: %s\ninterfaces: [eth0.100]\nvips:\n", m)
	for _, v := range vips {
		fmt.Fprintf(&b, "  - address: '%s'\n", v)
		if m == ModeFirewalld {
			b.WriteString("    ports: [{port: 80, to_port: 8080}]\n")
		}
	}
	if m == ModeTunnel {
		b.WriteString("tunnel: {encap: gue, mss: 1400}\n")
	}
	return b.String()
}

// kernelView is one read of what decides whether a VIP is served: the
// addresses, dsr-agent's nftables tables and the ARP sysctls, all from the
// kernel (ip, nft, /proc), none from dsr-agent's own code.
type kernelView struct {
	addrs  map[string][]string // VIP -> devices holding it
	up     map[string]bool     // device -> IFF_UP
	tables map[string]string   // "arp" / "ip" / "ip6" -> `nft list table FAM dsr-agent`
	// arpSuppressed: max(all, eth0.100) of arp_ignore is 1, 2 or 8 and of
	// arp_announce is 2 (the kernel's rule for a VIP off the NIC).
	arpSuppressed bool
	sysctls       string
}

func (th *testHost) kernelView() kernelView {
	th.t.Helper()
	v := kernelView{addrs: map[string][]string{}, up: map[string]bool{}, tables: map[string]string{}}
	// Netlink, and one nft run: the VM runs this under TCG, where every
	// process costs.
	links, err := th.ns.Netlink.LinkList()
	if err != nil {
		th.t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
		v.up[l.Attrs().Name] = l.Attrs().Flags&net.FlagUp != 0
	}
	addrs, err := th.ns.Netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		th.t.Fatal(err)
	}
	for _, a := range addrs {
		ip := a.IP.String()
		if strings.HasPrefix(ip, "192.0.2.") || strings.HasPrefix(ip, "2001:db8::") {
			v.addrs[ip] = append(v.addrs[ip], names[a.LinkIndex])
		}
	}
	var fam string
	for _, l := range strings.SplitAfter(th.ns.Exec(th.t, "nft", "list", "ruleset"), "\n") {
		if strings.HasPrefix(l, "table ") {
			fam = ""
			if f := strings.Fields(l); len(f) >= 3 && f[2] == "dsr-agent" {
				fam = f[1]
			}
		}
		if fam != "" {
			v.tables[fam] += l
		}
	}
	num := func(iface, key string) int {
		n, err := strconv.Atoi(th.sysctl(iface, key))
		if err != nil {
			th.t.Fatal(err)
		}
		return n
	}
	ign := max(num("all", "arp_ignore"), num("eth0.100", "arp_ignore"))
	ann := max(num("all", "arp_announce"), num("eth0.100", "arp_announce"))
	v.arpSuppressed = (ign == 1 || ign == 2 || ign == 8) && ann == 2
	v.sysctls = fmt.Sprintf("arp_ignore %d, arp_announce %d", ign, ann)
	return v
}

// arpTableDrops: the arp table is in force (not dormant) and lists vip.
func (v kernelView) arpTableDrops(vip string) bool {
	t := v.tables["arp"]
	return t != "" && !strings.Contains(t, "dormant") && hasAddr(t, vip)
}

// hasAddr reports whether s lists the address vip (not a longer one it is
// a prefix of).
func hasAddr(s, vip string) bool {
	for i := strings.Index(s, vip); i >= 0; {
		end := i + len(vip)
		if end == len(s) || !strings.ContainsRune("0123456789abcdef:.", rune(s[end])) {
			return true
		}
		j := strings.Index(s[end:], vip)
		if j < 0 {
			break
		}
		i = end + j
	}
	return false
}

func (v kernelView) on(vip, dev string) bool { return slices.Contains(v.addrs[vip], dev) }

// unsuppressed lists the VIPs present without what keeps the host from
// answering ARP for them: off the NIC (lo, tunl0) the sysctls; on the NIC
// the arp table. An IPv6 VIP has no ARP, but must never be on the NIC.
func (v kernelView) unsuppressed() []string {
	var bad []string
	for vip, devs := range v.addrs {
		for _, dev := range devs {
			switch {
			case strings.Contains(vip, ":") && dev != "lo" && dev != tunnel.DevIPv6:
				bad = append(bad, vip+" (IPv6) on "+dev)
			case strings.Contains(vip, ":"):
			case dev == "eth0.100" && !v.arpTableDrops(vip):
				bad = append(bad, vip+" on eth0.100 without the arp table dropping its ARP")
			case dev != "eth0.100" && !v.arpSuppressed:
				bad = append(bad, vip+" on "+dev+" with "+v.sysctls)
			}
		}
	}
	slices.Sort(bad)
	return bad
}

// serving is the definition status and health use, judged from the kernel:
// the VIP is where the mode puts it, and nothing answers ARP for it.
func (v kernelView) serving(m Mode, vip string) bool {
	v6 := strings.Contains(vip, ":")
	switch m {
	case ModeLoopback:
		return v.on(vip, "lo") && (v6 || v.arpSuppressed)
	case ModeARPTables:
		if v6 {
			return v.on(vip, "lo")
		}
		return v.on(vip, "eth0.100") && v.arpTableDrops(vip)
	case ModeFirewalld:
		fam := "ip"
		if v6 {
			fam = "ip6"
		}
		return strings.Contains(v.tables[fam], "redirect") && hasAddr(v.tables[fam], vip)
	case ModeTunnel:
		if v6 {
			return v.on(vip, "lo") && v.up[tunnel.DevIPv6]
		}
		return v.on(vip, tunnel.DevIPv4) && v.up[tunnel.DevIPv4] && v.arpSuppressed
	}
	return false
}

// checkTransition is the promise of a plan from config a to config b, at
// any point of its execution: no VIP present without ARP suppression, and
// every VIP served under a that b keeps is served (where a put it, or where
// b puts it). VIPs b drops may be gone.
func (th *testHost) checkTransition(when string, a, b Mode) {
	th.t.Helper()
	th.checkTransitionOf(when, a, b, vipsBefore, vipsAfter)
}

// checkTransitionOf is checkTransition from the VIPs from (mode a) to the
// VIPs to (mode b).
func (th *testHost) checkTransitionOf(when string, a, b Mode, from, to []string) {
	th.t.Helper()
	v := th.kernelView()
	if bad := v.unsuppressed(); len(bad) > 0 {
		th.t.Errorf("%s: VIPs present without ARP suppression: %s", when, strings.Join(bad, "; "))
	}
	for _, vip := range from {
		if !slices.Contains(to, vip) {
			continue
		}
		if !v.serving(a, vip) && !v.serving(b, vip) {
			th.t.Errorf("%s: VIP %s, served under %s and kept by %s, is served by neither (on %v; %s; tables %v)",
				when, vip, a, b, v.addrs[vip], v.sysctls, slices.Sorted(maps.Keys(v.tables)))
		}
	}
}

// realTunnel reports whether this kernel has what mode tunnel needs (the
// VM's does): then the failure tests run mode tunnel on the real devices.
func realTunnel() bool {
	for _, m := range []string{tunnel.ModIPIP, tunnel.ModIP6Tnl, tunnel.ModFou} {
		if tunnel.Loadable(m) != nil {
			return false
		}
	}
	return true
}

// newFailureHost is a test host with config a applied; mode tunnel on the
// real devices where the kernel has them, else on the stand-in.
func newFailureHost(t *testing.T, a Mode) *testHost {
	t.Helper()
	th := newTestHost(t)
	if !realTunnel() {
		th.host.tunnel = newFakeTunnel(t, th.ns)
	}
	th.apply(modeConfig(a, vipsBefore))
	th.checkTransition("after applying "+string(a), a, a)
	return th
}

var errInjected = errors.New("injected failure")

// TestFailedPlanNeverCostsAVIP: for every pair of modes (the same mode
// with a changed VIP list included) and every step of the plan between
// them, the kernel is checked at each step boundary of a full run, and
// after a run whose step N fails: no VIP without ARP suppression, every
// kept VIP still served, and the next apply converges. Mode tunnel runs on
// the stand-in devices on a kernel without ipip (this one); the VM runs
// TestTunnelModeSwitchesKeepVIPs on the real ones.
func TestFailedPlanNeverCostsAVIP(t *testing.T) {
	for _, a := range allModes {
		for _, b := range allModes {
			t.Run(string(a)+"-to-"+string(b), func(t *testing.T) {
				checkPlanFailures(t, a, b, func(steps int) []int {
					var all []int
					for n := range steps {
						all = append(all, n)
					}
					return all
				})
			})
		}
	}
}

// TestTunnelModeSwitchesKeepVIPs is the part of TestFailedPlanNeverCostsAVIP
// with mode tunnel on either side, run in the VM (make test-tunnel) on the
// real tunl0, ip6tnl0 and fou: one host goes through every such pair, the
// kernel checked at every step boundary (a failed step stops the plan at
// the boundary before it; TestFailedPlanNeverCostsAVIP fails each step on
// the stand-in: the VM's TCG is too slow for a host per step).
func TestTunnelModeSwitchesKeepVIPs(t *testing.T) {
	if !realTunnel() {
		t.Log("this kernel cannot load ipip, ip6_tunnel and fou: on the stand-in devices (the VM runs the real ones)")
	}
	type state struct {
		m    Mode
		vips []string
	}
	chain := []state{
		{ModeLoopback, vipsBefore}, {ModeTunnel, vipsAfter}, {ModeARPTables, vipsBefore}, {ModeTunnel, vipsAfter},
		{ModeFirewalld, vipsBefore}, {ModeTunnel, vipsAfter}, {ModeTunnel, vipsBefore}, {ModeLoopback, vipsAfter},
	}
	th := newTestHost(t)
	if !realTunnel() {
		th.host.tunnel = newFakeTunnel(t, th.ns)
	}
	th.apply(modeConfig(chain[0].m, chain[0].vips))
	for i := 1; i < len(chain); i++ {
		from, to := chain[i-1], chain[i]
		pair := fmt.Sprintf("%s-to-%s", from.m, to.m)
		th.host.inject = func(n int, c Change) error {
			th.checkTransitionOf(fmt.Sprintf("%s: before step %d (%s %s)", pair, n, c.Kind, c.Subject), from.m, to.m, from.vips, to.vips)
			return nil
		}
		if _, err := th.host.Apply(mustConfig(t, modeConfig(to.m, to.vips))); err != nil {
			t.Fatalf("%s: %v", pair, err)
		}
		th.host.inject = nil
		th.checkTransitionOf(pair+": after the plan", from.m, to.m, from.vips, to.vips)
		th.requireInSync(modeConfig(to.m, to.vips))
	}
}

// checkPlanFailures applies a, then b with the kernel checked before each
// step; then, on fresh hosts, b with each step failAt picks failing.
func checkPlanFailures(t *testing.T, a, b Mode, failAt func(steps int) []int) {
	cfgB := mustConfig(t, modeConfig(b, vipsAfter))
	th := newFailureHost(t, a)
	steps := 0
	th.host.inject = func(i int, c Change) error {
		th.checkTransition(fmt.Sprintf("before step %d (%s %s)", i, c.Kind, c.Subject), a, b)
		steps++
		return nil
	}
	if _, err := th.host.Apply(cfgB); err != nil {
		t.Fatalf("apply %s: %v", b, err)
	}
	th.checkTransition("after the plan", a, b)
	th.host.inject = nil
	th.requireInSync(modeConfig(b, vipsAfter))
	for _, n := range failAt(steps) {
		if t.Failed() || n < 0 {
			return
		}
		th := newFailureHost(t, a)
		var failed Change
		th.host.inject = func(i int, c Change) error {
			if i == n {
				failed = c
				return errInjected
			}
			return nil
		}
		done, err := th.host.Apply(cfgB)
		if !errors.Is(err, errInjected) {
			t.Fatalf("step %d: apply = %v, want the injected failure", n, err)
		}
		th.checkTransition(fmt.Sprintf("after step %d (%s %s) failed (done: %q)", n, failed.Kind, failed.Subject, done), a, b)
		th.host.inject = nil
		th.apply(modeConfig(b, vipsAfter))
		th.requireInSync(modeConfig(b, vipsAfter))
		th.checkTransition(fmt.Sprintf("re-apply after step %d failed", n), b, b)
	}
}

const stateMarker = "\n--- state file\n"

// kernelSnapshot is everything apply could change, as the kernel and the
// state dir report it (the state file after stateMarker).
func (th *testHost) kernelSnapshot() string {
	th.t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-o", "addr", "show"}, {"ip", "-o", "link", "show"}, {"nft", "list", "ruleset"},
		{"ip", "rule", "show"}, {"ip", "-6", "rule", "show"}, {"ip", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
	} {
		b.WriteString(th.ns.Exec(th.t, args[0], args[1:]...))
	}
	th.ns.Do(th.t, func() {
		for _, pat := range []string{"/proc/sys/net/ipv4/conf/*/arp_*", "/proc/sys/net/ipv4/conf/*/rp_filter"} {
			files, _ := filepath.Glob(pat)
			for _, f := range files {
				v, _ := os.ReadFile(f)
				fmt.Fprintf(&b, "%s=%s", f, v)
			}
		}
	})
	b.WriteString(stateMarker)
	if st, err := os.ReadFile(filepath.Join(th.state, stateFile)); err == nil {
		b.Write(st)
	}
	return b.String()
}

// requireRefused: apply of y is an invalid config (exit 2) whose message
// has want, and the host, kernel and state file, is exactly as before.
func (th *testHost) requireRefused(y, want string) {
	th.t.Helper()
	before := th.kernelSnapshot()
	done, err := th.host.Apply(mustConfig(th.t, y))
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), want) {
		th.t.Errorf("apply = %v, want an invalid config (exit 2) naming %q", err, want)
	}
	if !done.Empty() {
		th.t.Errorf("a refused apply reports changes:\n%s", done)
	}
	if after := th.kernelSnapshot(); after != before {
		th.t.Errorf("a refused apply changed the host:\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// Issue 17.1 on the host it was found on (this one: no ipip, no fou, no
// module loading): a switch from loopback to tunnel mode is refused before
// the first change, the VIPs still on lo and served; so is the same config
// on a fresh host, and the daemon's reload (Load) refuses it too.
func TestTunnelRefusedWithoutModules(t *testing.T) {
	// On a kernel that can load ipip (the VM), the stand-in says it cannot.
	var standIn func(*testHost)
	if err := tunnel.Loadable(tunnel.ModIPIP); err == nil {
		t.Log("this kernel can load ipip: the refusal runs on the stand-in tunnel, told that ipip cannot be had")
		standIn = func(th *testHost) {
			f := newFakeTunnel(t, th.ns)
			f.unloadable = fmt.Errorf("%w: the stand-in's ipip", tunnel.ErrNotLoadable)
			th.host.tunnel = f
		}
	}
	newHost := func() *testHost {
		th := newTestHost(t)
		if standIn != nil {
			standIn(th)
		}
		return th
	}
	cfg := modeConfig(ModeTunnel, vipsBefore)
	fresh := newHost()
	fresh.requireRefused(cfg, "ipip")

	th := newHost()
	th.apply(modeConfig(ModeLoopback, vipsBefore))
	th.requireRefused(cfg, "ipip")
	th.checkTransition("after the refused switch", ModeLoopback, ModeLoopback)
	th.requireInSync(modeConfig(ModeLoopback, vipsBefore))

	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := th.host.Load(path, ""); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "ipip") {
		t.Errorf("Load (the daemon's reload) = %v, want the refusal naming ipip", err)
	}
	if _, err := th.host.Plan(mustConfig(t, cfg)); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("apply --dry-run = %v, want the same refusal", err)
	}
}

// A foreign object in mode tunnel's way is known before the first change:
// a device named tunl0 of another kind (real kernel: a veth), and a fou
// socket on the GUE port with another encapsulation (stand-in fou). The
// switch from loopback is refused, exit 2, the host as it was.
func TestTunnelConflictRefusedBeforeAnyChange(t *testing.T) {
	th := newTestHost(t)
	th.apply(modeConfig(ModeLoopback, vipsBefore))
	if _, err := th.ns.Netlink.LinkByName(tunnel.DevIPv4); err == nil {
		// ipip is loaded (the VM): every namespace has its fallback tunl0.
		t.Log("tunl0 is ipip's fallback device here: the foreign-device case runs on kernels without ipip")
	} else {
		th.ns.AddDummy(t, tunnel.DevIPv4)
		th.requireRefused("mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: 192.0.2.11}]\n", "tunl0 exists as a veth device")
		th.checkTransition("after the refused switch", ModeLoopback, ModeLoopback)
	}

	th = newTestHost(t)
	fake := newFakeTunnel(t, th.ns)
	fake.fou = []tunnel.FouPort{{FouKey: tunnel.FouKey{Family: 4, Port: DefaultGUEPort}, Encap: "direct", Protocol: 4}}
	th.host.tunnel = fake
	th.apply(modeConfig(ModeLoopback, vipsBefore))
	th.requireRefused(modeConfig(ModeTunnel, vipsBefore), "fou port 6080/IPv4 exists with encap direct ipproto 4")
	if len(fake.fou) != 1 || len(fake.modules) != 0 {
		t.Errorf("the refused plan touched the tunnel: fou %v, modules %v", fake.fou, fake.modules)
	}
	th.checkTransition("after the refused switch", ModeLoopback, ModeLoopback)
}

// validate, apply --dry-run, status and the daemon's Load read the host and
// change nothing, in every mode, on a fresh host and on a configured one.
func TestReadOnlyCommandsChangeNothing(t *testing.T) {
	for _, from := range []string{"", modeConfig(ModeLoopback, vipsBefore)} {
		th := newTestHost(t)
		th.host.tunnel = newFakeTunnel(t, th.ns)
		if from != "" {
			th.apply(from)
		}
		before := th.kernelSnapshot()
		for _, m := range allModes {
			y := modeConfig(m, vipsAfter) + "return_via: {gateway: 198.51.100.252, ports: [{port: 443}]}\n"
			cfg := mustConfig(t, y)
			if err := th.host.Validate(cfg); err != nil {
				t.Fatalf("validate %s: %v", m, err)
			}
			if p, err := th.host.Plan(cfg); err != nil || p.Empty() {
				t.Fatalf("dry-run %s: %v\n%s", m, err, p)
			}
			if r, err := th.host.Status(cfg); err != nil || r.InSync {
				t.Fatalf("status %s: in sync %v, %v", m, r != nil && r.InSync, err)
			}
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := th.host.Load(path, ""); err != nil {
				t.Fatalf("load %s: %v", m, err)
			}
			if after := th.kernelSnapshot(); after != before {
				t.Fatalf("%s: a read-only command changed the host:\n--- before\n%s\n--- after\n%s", m, before, after)
			}
		}
	}
}

// Where nothing proves a module missing (the packaged unit hides
// /lib/modules), the load itself is the test: it is the plan's first
// change, so when it fails the kernel is as it was (the state file may
// hold ownership recorded ahead, which the next pass forgets), the error is
// a failure (exit 1), and the VIPs are still served on lo.
func TestModuleLoadFailureChangesNothing(t *testing.T) {
	th := newTestHost(t)
	fake := newFakeTunnel(t, th.ns)
	fake.loadErr = errors.New("modprobe ipip: Operation not permitted")
	th.host.tunnel = fake
	th.apply(modeConfig(ModeLoopback, vipsBefore))
	kernel := func() string {
		snap, _, _ := strings.Cut(th.kernelSnapshot(), stateMarker)
		return snap
	}
	before := kernel()
	done, err := th.host.Apply(mustConfig(t, modeConfig(ModeTunnel, vipsAfter)))
	if err == nil || errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "modprobe ipip") {
		t.Errorf("apply = %v, want the load's failure (exit 1)", err)
	}
	if !done.Empty() {
		t.Errorf("changes before the failing load:\n%s", done)
	}
	if after := kernel(); after != before {
		t.Errorf("a failed module load changed the kernel:\n--- before\n%s\n--- after\n%s", before, after)
	}
	th.checkTransition("after the failed load", ModeLoopback, ModeLoopback)
	th.requireInSync(modeConfig(ModeLoopback, vipsBefore))
}
