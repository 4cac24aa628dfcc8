package agent

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// testHost is a throwaway namespace standing in for a real server: a NIC
// (eth0.100, 198.51.100.21/24) with a default route, and foreign state that
// dsr-agent must never touch: a firewalld-like inet table, a user's ip filter
// table, another address on lo and an unrelated sysctl set by hand.
type testHost struct {
	t     *testing.T
	ns    *netnstest.NS
	host  *Host
	state string
}

func newTestHost(t *testing.T) *testHost {
	t.Helper()
	th := newTestHostNoServices(t)
	// firewalld mode's ports (firewalldCfg) have their services, on the
	// dual-stack wildcard: a missing listener is a status difference.
	th.listen("tcp", ":8080")
	th.listen("tcp", ":443")
	th.listen("udp", ":53")
	return th
}

// newTestHostNoServices is newTestHost without a listening socket.
func newTestHostNoServices(t *testing.T) *testHost {
	t.Helper()
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0.100", "198.51.100.21/24", "2001:db8:1::21/64")
	ns.Exec(t, "ip", "route", "add", "default", "via", "198.51.100.1")
	ns.Exec(t, "ip", "addr", "add", "10.9.9.9/32", "dev", "lo", "label", "lo:admin")
	ns.Exec(t, "nft", "add table inet firewalld; add chain inet firewalld filter_INPUT { type filter hook input priority filter + 10; policy accept; }; add rule inet firewalld filter_INPUT tcp dport 22 accept")
	ns.Exec(t, "nft", "add table ip filter; add chain ip filter input { type filter hook input priority 0; }; add rule ip filter input ip saddr 203.0.113.0/24 drop")
	ns.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2")
	state := filepath.Join(t.TempDir(), "state")
	h, err := OpenHostAt(state, ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return &testHost{t: t, ns: ns, host: h, state: state}
}

// listen opens a TCP listener or a UDP socket in the namespace until the
// test ends and returns a function closing it earlier.
func (th *testHost) listen(network, addr string) func() {
	th.t.Helper()
	var c io.Closer
	var err error
	th.ns.Do(th.t, func() {
		if strings.HasPrefix(network, "udp") {
			c, err = net.ListenPacket(network, addr)
		} else {
			c, err = net.Listen(network, addr)
		}
	})
	if err != nil {
		th.t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	th.t.Cleanup(func() { c.Close() })
	return func() { c.Close() }
}

// foreign is everything on the host dsr-agent does not own, as the kernel
// reports it.
func (th *testHost) foreign() string {
	ruleset := th.ns.Exec(th.t, "nft", "list", "ruleset")
	// Drop dsr-agent's own tables from the listing.
	var keep []string
	skip := false
	for _, line := range strings.Split(ruleset, "\n") {
		if strings.HasPrefix(line, "table ") {
			skip = strings.HasSuffix(line, " dsr-agent {")
		}
		if !skip {
			keep = append(keep, line)
		}
		if line == "}" {
			skip = false
		}
	}
	addrs := th.ns.Exec(th.t, "ip", "-o", "addr", "show")
	var addrKeep []string
	for _, l := range strings.Split(addrs, "\n") {
		if !strings.Contains(l, "192.0.2.") && !strings.Contains(l, "2001:db8::") {
			addrKeep = append(addrKeep, l)
		}
	}
	return strings.Join(keep, "\n") + strings.Join(addrKeep, "\n") + "rp_filter=" + th.ns.Sysctl(th.t, "net", "ipv4", "conf", "all", "rp_filter")
}

func (th *testHost) apply(yaml string) *Plan {
	th.t.Helper()
	cfg := mustConfig(th.t, yaml)
	p, err := th.host.Apply(cfg)
	if err != nil {
		th.t.Fatalf("apply: %v\ndone so far:\n%s", err, p)
	}
	return p
}

func (th *testHost) status(yaml string) *Report {
	th.t.Helper()
	r, err := th.host.Status(mustConfig(th.t, yaml))
	if err != nil {
		th.t.Fatal(err)
	}
	return r
}

func (th *testHost) sysctl(iface, key string) string {
	return th.ns.Sysctl(th.t, "net", "ipv4", "conf", iface, key)
}

func (th *testHost) requireInSync(yaml string) {
	th.t.Helper()
	if p := th.apply(yaml); !p.Empty() {
		th.t.Fatalf("second apply not a no-op:\n%s", p)
	}
	if r := th.status(yaml); !r.InSync {
		th.t.Fatalf("status not in sync after apply:\n%s", r)
	}
}

// requireDrift breaks the host with a command, expects status to name a
// difference of kind, and apply to repair it so that the host is in sync.
func (th *testHost) requireDrift(yaml string, kind DriftKind, breakIt ...string) {
	th.t.Helper()
	th.ns.Exec(th.t, breakIt[0], breakIt[1:]...)
	r := th.status(yaml)
	found := false
	for _, d := range r.Differences {
		found = found || d.Kind == kind
	}
	if r.InSync || !found {
		th.t.Errorf("after %v: in sync %v, want a %s difference:\n%s", breakIt, r.InSync, kind, r)
	}
	th.apply(yaml)
	th.requireInSync(yaml)
}

func (th *testHost) requireAddr(dev, want string) {
	th.t.Helper()
	out := th.ns.Exec(th.t, "ip", "addr", "show", "dev", dev)
	if !strings.Contains(out, want) {
		th.t.Fatalf("ip addr show dev %s lacks %q:\n%s", dev, want, out)
	}
}

func (th *testHost) requireNoVIPs() {
	th.t.Helper()
	out := th.ns.Exec(th.t, "ip", "addr", "show")
	if strings.Contains(out, "192.0.2.") || strings.Contains(out, "2001:db8::") {
		th.t.Fatalf("VIP left on the host:\n%s", out)
	}
}

func (th *testHost) tables() string {
	out := th.ns.Exec(th.t, "nft", "list", "tables")
	var ours []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasSuffix(l, " dsr-agent") {
			ours = append(ours, strings.TrimPrefix(l, "table "))
		}
	}
	// nft lists in creation order, which follows the plan's phases.
	sort.Strings(ours)
	return strings.Join(ours, ",")
}

const loopbackCfg = "mode: loopback\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: 192.0.2.11}, {address: '2001:db8::10'}]\n"
const arptablesCfg = "mode: arptables\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: 192.0.2.11}, {address: '2001:db8::10'}]\n"
const firewalldCfg = "mode: firewalld\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10, ports: [{port: 80, to_port: 8080}, {port: 53, protocol: udp}]}, {address: '2001:db8::10', ports: [{port: 443}]}]\n"

func TestLoopbackModeKernel(t *testing.T) {
	th := newTestHost(t)
	before := th.foreign()
	th.apply(loopbackCfg)
	for _, iface := range []string{"all", "eth0.100"} {
		if th.sysctl(iface, "arp_ignore") != "1" || th.sysctl(iface, "arp_announce") != "2" {
			t.Fatalf("%s: arp_ignore=%s arp_announce=%s", iface, th.sysctl(iface, "arp_ignore"), th.sysctl(iface, "arp_announce"))
		}
	}
	th.requireAddr("lo", "192.0.2.10/32 scope global lo:dsr0")
	th.requireAddr("lo", "192.0.2.11/32 scope global lo:dsr1")
	th.requireAddr("lo", "2001:db8::10/128")
	if th.tables() != "" {
		t.Fatalf("loopback mode made tables: %s", th.tables())
	}
	th.requireInSync(loopbackCfg)
	if after := th.foreign(); after != before {
		t.Fatalf("foreign state changed by apply\n--- before\n%s\n--- after\n%s", before, after)
	}
	// Remove restores what was found: sysctls back to 0, VIPs gone, the
	// admin's lo alias and everything else untouched.
	if _, err := th.host.Remove(); err != nil {
		t.Fatal(err)
	}
	th.requireNoVIPs()
	for _, iface := range []string{"all", "eth0.100"} {
		if th.sysctl(iface, "arp_ignore") != "0" || th.sysctl(iface, "arp_announce") != "0" {
			t.Fatalf("%s not restored: arp_ignore=%s arp_announce=%s", iface, th.sysctl(iface, "arp_ignore"), th.sysctl(iface, "arp_announce"))
		}
	}
	if after := th.foreign(); after != before {
		t.Fatalf("foreign state changed by remove\n--- before\n%s\n--- after\n%s", before, after)
	}
	// A save interrupted by a crash left a temp file: remove deletes it.
	if err := os.WriteFile(filepath.Join(th.state, ".state.json.tmp123"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := th.host.Remove(); err != nil {
		t.Fatal(err)
	}
	// Only the lock file stays: deleting a file others may hold flock'ed
	// would let two processes each hold "the" lock.
	if left, _ := os.ReadDir(th.state); len(left) != 1 || left[0].Name() != "lock" {
		t.Fatalf("files left in the state dir after remove: %v, want only the lock", left)
	}
}

func TestARPTablesModeKernel(t *testing.T) {
	th := newTestHost(t)
	before := th.foreign()
	th.apply(arptablesCfg)
	th.requireAddr("eth0.100", "192.0.2.10/32 scope global eth0.100:dsr0")
	th.requireAddr("eth0.100", "192.0.2.11/32 scope global eth0.100:dsr1")
	th.requireAddr("lo", "2001:db8::10/128") // IPv6 has no ARP: on lo
	if got := th.tables(); got != "arp dsr-agent" {
		t.Fatalf("tables = %q, want arp dsr-agent", got)
	}
	list := th.ns.Exec(t, "nft", "list", "table", "arp", "dsr-agent")
	for _, want := range []string{
		"elements = { 192.0.2.10, 192.0.2.11 }",
		"elements = { 192.0.2.10 : 198.51.100.21, 192.0.2.11 : 198.51.100.21 }",
		"type filter hook input priority filter; policy accept;",
		"arp daddr ip @vips counter packets 0 bytes 0 drop",
		"type filter hook output priority filter; policy accept;",
		"arp saddr ip set arp saddr ip map @vip2real",
	} {
		if !strings.Contains(list, want) {
			t.Fatalf("nft list table arp dsr-agent lacks %q:\n%s", want, list)
		}
	}
	if n := strings.Count(list, "counter"); n != 2 {
		t.Fatalf("%d rules, want 2 whatever the number of VIPs:\n%s", n, list)
	}
	if th.sysctl("all", "arp_ignore") != "0" {
		t.Fatal("arptables mode changed arp_ignore")
	}
	th.requireInSync(arptablesCfg)
	if _, err := th.host.Remove(); err != nil {
		t.Fatal(err)
	}
	th.requireNoVIPs()
	if th.tables() != "" {
		t.Fatalf("tables left after remove: %s", th.tables())
	}
	if after := th.foreign(); after != before {
		t.Fatalf("foreign state changed\n--- before\n%s\n--- after\n%s", before, after)
	}
}

func TestFirewalldModeKernel(t *testing.T) {
	th := newTestHost(t)
	before := th.foreign()
	th.apply(firewalldCfg)
	th.requireNoVIPs()
	// The ARP guard and the NS drop: the VIP is never local here, so
	// proxy ARP/NDP would answer for it on a forwarding host.
	if got := th.tables(); got != "arp dsr-agent,ip dsr-agent,ip6 dsr-agent" {
		t.Fatalf("tables = %q", got)
	}
	guard := th.ns.Exec(t, "nft", "list", "table", "arp", "dsr-agent")
	for _, want := range []string{"192.0.2.10", "arp operation request arp daddr ip @vips", "drop"} {
		if !strings.Contains(guard, want) {
			t.Errorf("arp guard lacks %q:\n%s", want, guard)
		}
	}
	if v6 := th.ns.Exec(t, "nft", "list", "table", "ip6", "dsr-agent"); !strings.Contains(v6, "nd-neighbor-solicit") {
		t.Errorf("ip6 table lacks the NS drop:\n%s", v6)
	}
	v4 := th.ns.Exec(t, "nft", "list", "table", "ip", "dsr-agent")
	for _, want := range []string{"192.0.2.10 . tcp . 80 : 8080", "192.0.2.10 . udp . 53 : 53", "type nat hook prerouting priority dstnat"} {
		if !strings.Contains(v4, want) {
			t.Fatalf("ip table lacks %q:\n%s", want, v4)
		}
	}
	v6 := th.ns.Exec(t, "nft", "list", "table", "ip6", "dsr-agent")
	if !strings.Contains(v6, "2001:db8::10 . tcp . 443 : 443") {
		t.Fatalf("ip6 table:\n%s", v6)
	}
	th.requireInSync(firewalldCfg)
	if _, err := th.host.Remove(); err != nil {
		t.Fatal(err)
	}
	if th.tables() != "" {
		t.Fatalf("tables left: %s", th.tables())
	}
	if after := th.foreign(); after != before {
		t.Fatalf("foreign state changed\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// TestModeSwitchLeavesNothingBehind cycles through every mode and checks
// after each step that only the current mode's state exists, then removes.
func TestModeSwitchLeavesNothingBehind(t *testing.T) {
	th := newTestHost(t)
	before := th.foreign()
	check := func(mode string) {
		t.Helper()
		vipsOnLo := strings.Count(th.ns.Exec(t, "ip", "-4", "addr", "show", "dev", "lo"), "192.0.2.")
		vipsOnNIC := strings.Count(th.ns.Exec(t, "ip", "-4", "addr", "show", "dev", "eth0.100"), "192.0.2.")
		ignore := th.sysctl("all", "arp_ignore")
		tables := th.tables()
		var ok bool
		switch mode {
		case "loopback":
			ok = vipsOnLo == 2 && vipsOnNIC == 0 && ignore == "1" && tables == ""
		case "arptables":
			ok = vipsOnLo == 0 && vipsOnNIC == 2 && ignore == "0" && tables == "arp dsr-agent"
		case "firewalld":
			ok = vipsOnLo == 0 && vipsOnNIC == 0 && ignore == "0" && tables == "arp dsr-agent,ip dsr-agent,ip6 dsr-agent"
		}
		if !ok {
			t.Fatalf("after switch to %s: VIPs on lo %d, on NIC %d, arp_ignore %s, tables %q", mode, vipsOnLo, vipsOnNIC, ignore, tables)
		}
	}
	for _, step := range []struct{ mode, cfg string }{
		{"loopback", loopbackCfg}, {"arptables", arptablesCfg}, {"firewalld", firewalldCfg},
		{"loopback", loopbackCfg}, {"firewalld", firewalldCfg}, {"arptables", arptablesCfg}, {"loopback", loopbackCfg},
	} {
		th.apply(step.cfg)
		check(step.mode)
		th.requireInSync(step.cfg)
	}
	if _, err := th.host.Remove(); err != nil {
		t.Fatal(err)
	}
	th.requireNoVIPs()
	if th.tables() != "" || th.sysctl("all", "arp_ignore") != "0" || th.sysctl("eth0.100", "arp_announce") != "0" {
		t.Fatalf("left behind: tables %q, arp_ignore %s", th.tables(), th.sysctl("all", "arp_ignore"))
	}
	if after := th.foreign(); after != before {
		t.Fatalf("foreign state changed\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// TestConfigChangesConvergeMinimally: adding/removing a VIP or changing the
// interface changes only what differs.
func TestConfigChangesConvergeMinimally(t *testing.T) {
	th := newTestHost(t)
	th.ns.AddDummy(t, "eth1", "198.51.100.41/24")
	th.apply(loopbackCfg)
	p := th.apply("interfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: 192.0.2.11}, {address: '2001:db8::10'}, {address: 192.0.2.12}]\n")
	if got := p.String(); got != "ip addr add 192.0.2.12/32 dev lo label lo:dsr2\n" {
		t.Fatalf("adding a VIP planned:\n%s", got)
	}
	p = th.apply("interfaces: [eth0.100]\nvips: [{address: 192.0.2.11}, {address: '2001:db8::10'}, {address: 192.0.2.12}]\n")
	if got := p.String(); got != "ip addr del 192.0.2.10/32 dev lo  # no longer configured on lo\n" {
		t.Fatalf("removing a VIP planned:\n%s", got)
	}
	// Interface change: the new NIC gets the sysctls, the old one gets its
	// saved values back, the VIPs stay put.
	p = th.apply("interfaces: [eth1]\nvips: [{address: 192.0.2.11}, {address: '2001:db8::10'}, {address: 192.0.2.12}]\n")
	want := regexp.MustCompile(`^sysctl -w net.ipv4.conf.eth1.arp_ignore=1  # is 0, want 1
sysctl -w net.ipv4.conf.eth1.arp_announce=2  # is 0, want 2
sysctl -w net/ipv4/conf/eth0.100/arp_announce=0  # restore the value found before dsr-agent
sysctl -w net/ipv4/conf/eth0.100/arp_ignore=0  # restore the value found before dsr-agent
$`)
	if !want.MatchString(p.String()) {
		t.Fatalf("interface change planned:\n%s", p)
	}
	if th.sysctl("eth0.100", "arp_ignore") != "0" || th.sysctl("eth1", "arp_ignore") != "1" || th.sysctl("all", "arp_ignore") != "1" {
		t.Fatal("sysctls not converged after interface change")
	}
}

func TestStatusReportsEachDrift(t *testing.T) {
	th := newTestHost(t)
	th.apply(arptablesCfg)
	th.ns.Exec(t, "ip", "addr", "del", "192.0.2.10/32", "dev", "eth0.100")
	th.ns.Exec(t, "nft", "flush", "chain", "arp", "dsr-agent", "input")
	r := th.status(arptablesCfg)
	if r.InSync || r.Suppression {
		t.Fatalf("status in sync=%v suppression=%v after drift", r.InSync, r.Suppression)
	}
	kinds := map[DriftKind]string{}
	for _, d := range r.Differences {
		kinds[d.Kind] = d.Subject + ": " + d.Detail
	}
	if !strings.Contains(kinds["vip-missing"], "192.0.2.10") || !strings.Contains(kinds["table-wrong"], "chain input: 0 rules") {
		t.Fatalf("differences = %v", kinds)
	}
	th.apply(loopbackCfg)
	th.ns.Exec(t, "sysctl", "-qw", "net/ipv4/conf/eth0.100/arp_ignore=0")
	th.ns.Exec(t, "nft", "add table arp dsr-agent")
	r = th.status(loopbackCfg)
	kinds = map[DriftKind]string{}
	for _, d := range r.Differences {
		kinds[d.Kind] = d.Subject + ": " + d.Detail
	}
	if kinds["sysctl-wrong"] != "net/ipv4/conf/eth0.100/arp_ignore: is 0, want 1" || kinds["table-unexpected"] == "" {
		t.Fatalf("differences = %v", kinds)
	}
	th.apply(loopbackCfg)
	if r := th.status(loopbackCfg); !r.InSync {
		t.Fatalf("not repaired:\n%s", r)
	}
}

// TestInvalidConfigChangesNothing: a config that fails host validation
// (missing NIC, VIP equal to the host's own address) is refused before any
// kernel change, even when part of it would be valid.
func TestInvalidConfigChangesNothing(t *testing.T) {
	th := newTestHost(t)
	before := th.foreign() + th.ns.Exec(t, "ip", "addr") + th.sysctl("all", "arp_ignore")
	for _, bad := range []string{
		"interfaces: [eth9]\nvips: [{address: 192.0.2.10}]\n",
		"interfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: 198.51.100.21}]\n",
		"mode: arptables\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10, real_ip: 203.0.113.1}]\n",
	} {
		_, err := th.host.Apply(mustConfig(t, bad))
		if !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("err = %v, want ErrInvalidConfig (exit 2) for:\n%s", err, bad)
		}
		t.Logf("refused: %v", err)
	}
	after := th.foreign() + th.ns.Exec(t, "ip", "addr") + th.sysctl("all", "arp_ignore")
	if before != after {
		t.Fatalf("host changed by refused configs\n--- before\n%s\n--- after\n%s", before, after)
	}
	if _, err := os.Stat(filepath.Join(th.state, stateFile)); !os.IsNotExist(err) {
		t.Fatal("state written for a refused config")
	}
}

func TestDefaultInterfaceFromDefaultRoute(t *testing.T) {
	th := newTestHost(t)
	cfg := mustConfig(t, "vips: [{address: 192.0.2.10}]\nhealth: {}\n")
	d, err := th.host.Resolve(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Interfaces) != 1 || d.Interfaces[0] != "eth0.100" {
		t.Fatalf("Interfaces = %v, want [eth0.100] (default route)", d.Interfaces)
	}
	if d.Health.Listen != "198.51.100.21:8558" {
		t.Fatalf("Health.Listen = %q", d.Health.Listen)
	}
	if len(cfg.Interfaces) != 0 || cfg.Health.Listen != "" {
		t.Fatalf("Resolve changed the config: %v %q", cfg.Interfaces, cfg.Health.Listen)
	}
}

// TestAddressNotOwnedIsLeftAlone: a VIP an admin configured by hand before
// dsr-agent is accepted as present, but not owned: remove leaves it.
func TestAddressNotOwnedIsLeftAlone(t *testing.T) {
	th := newTestHost(t)
	th.ns.Exec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
	th.apply("interfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\n")
	if _, err := th.host.Remove(); err != nil {
		t.Fatal(err)
	}
	th.requireAddr("lo", "192.0.2.10/32")
}

// TestNoVIPsChangesNothing: the packaged example config (no VIPs) applied to
// a host changes nothing, not even sysctls.
func TestNoVIPsChangesNothing(t *testing.T) {
	th := newTestHost(t)
	if p := th.apply("vips: []\n"); !p.Empty() {
		t.Fatalf("empty config planned changes:\n%s", p)
	}
	if th.sysctl("all", "arp_ignore") != "0" {
		t.Fatal("arp_ignore changed with no VIPs")
	}
}

func TestHostMismatchIsMarked(t *testing.T) {
	th := newTestHost(t)
	err := th.host.Validate(mustConfig(t, "interfaces: [eth9]\nvips: [{address: 192.0.2.10}]\n"))
	if !errors.Is(err, ErrHostMismatch) || !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("err = %v, want ErrHostMismatch and ErrInvalidConfig", err)
	}
}

// TestLostStateFileStillRemovesNICVIPs: in arptables mode the VIPs sit on
// the NIC; if the state file is lost, remove must still take them away with
// the ARP table (recognised by their label), or the host would answer ARP
// for them.
func TestLostStateFileStillRemovesNICVIPs(t *testing.T) {
	th := newTestHost(t)
	th.apply(arptablesCfg)
	if err := os.Remove(filepath.Join(th.state, stateFile)); err != nil {
		t.Fatal(err)
	}
	th.requireInSync(arptablesCfg) // still recognised as its own
	if _, err := th.host.Remove(); err != nil {
		t.Fatal(err)
	}
	if out := th.ns.Exec(t, "ip", "-4", "addr", "show", "dev", "eth0.100"); strings.Contains(out, "192.0.2.") {
		t.Fatalf("VIP left on the NIC after remove without state:\n%s", out)
	}
}

// TestStricterSysctlKept: an operator's stricter arp_ignore (2) is not
// lowered to 1, and is not reported as drift.
func TestStricterSysctlKept(t *testing.T) {
	th := newTestHost(t)
	th.ns.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=2")
	th.apply(loopbackCfg)
	if got := th.sysctl("all", "arp_ignore"); got != "2" {
		t.Fatalf("all.arp_ignore = %s, want the operator's 2 kept", got)
	}
	th.requireInSync(loopbackCfg)
	// Changed by the operator after dsr-agent set it: remove leaves it.
	th.ns.Exec(t, "sysctl", "-qw", "net/ipv4/conf/eth0.100/arp_ignore=3")
	if _, err := th.host.Remove(); err != nil {
		t.Fatal(err)
	}
	if got := th.sysctl("eth0.100", "arp_ignore"); got != "3" {
		t.Fatalf("eth0.100.arp_ignore = %s, want the operator's later 3 kept", got)
	}
	if got := th.sysctl("eth0.100", "arp_announce"); got != "0" {
		t.Fatalf("eth0.100.arp_announce = %s, want restored 0", got)
	}
}

// TestDefaultRouteMultipath: the interface of an ECMP default route.
func TestDefaultRouteMultipath(t *testing.T) {
	th := newTestHost(t)
	th.ns.AddDummy(t, "eth1", "198.51.100.41/24")
	th.ns.Exec(t, "ip", "route", "del", "default")
	th.ns.Exec(t, "ip", "route", "add", "default", "nexthop", "via", "198.51.100.1", "dev", "eth1", "nexthop", "via", "198.51.100.2", "dev", "eth0.100")
	d, err := th.host.Resolve(mustConfig(t, "vips: [{address: 192.0.2.10}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Interfaces) != 1 || d.Interfaces[0] != "eth1" {
		t.Fatalf("Interfaces = %v, want [eth1]", d.Interfaces)
	}
}

// TestHostDependentConfigErrors: configs that parse but make no sense on
// this host are refused (exit 2 in the CLI), naming the field and value.
func TestHostDependentConfigErrors(t *testing.T) {
	th := newTestHost(t) // eth0.100 198.51.100.21/24, default via 198.51.100.1
	cases := map[string][]string{
		"vips: [{address: 198.51.100.1}]\n":                                     {"vips[0].address", "198.51.100.1", "gateway"},
		"vips: [{address: 198.51.100.0}]\n":                                     {"vips[0].address", "network address of 198.51.100.0/24"},
		"vips: [{address: 198.51.100.255}]\n":                                   {"vips[0].address", "broadcast address of 198.51.100.0/24"},
		"vips: [{address: '2001:db8:1::'}]\n":                                   {"vips[0].address", "network address of 2001:db8:1::/64"},
		"vips: [{address: 192.0.2.10}]\nhealth: {listen: '203.0.113.5:8558'}\n": {"health.listen", "203.0.113.5:8558", "an address of this host"},
		"vips: [{address: 192.0.2.10}]\nhealth: {listen: '198.51.100.21:8558', agent_check: {listen: '203.0.113.5:3333'}}\n": {"health.agent_check.listen", "203.0.113.5:3333"},
	}
	before := th.foreign()
	for yaml, want := range cases {
		cfg := mustConfig(t, "interfaces: [eth0.100]\n"+yaml)
		_, err := th.host.Apply(cfg)
		if err == nil || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("accepted:\n%s(err %v)", yaml, err)
			continue
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", yaml, err, w)
			}
		}
	}
	th.requireNoVIPs()
	if after := th.foreign(); after != before {
		t.Fatalf("refused configs changed the host")
	}
	// The same listener on the host's own address is fine.
	th.apply("interfaces: [eth0.100]\nvips: [{address: 192.0.2.10}]\nhealth: {listen: '198.51.100.21:8558', agent_check: {listen: '198.51.100.21:3333'}}\n")
}
