package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// prefixCfg is single VIPs and prefix VIPs together, both families.
func prefixCfg(mode string) string {
	return "mode: " + mode + "\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: 192.0.2.11}, {address: '2001:db8::10'}, " +
		"{prefix: 192.0.2.128/25, ports: [{port: 443}]}, {prefix: '2001:db8:100::/64', ports: [{port: 443}]}]\n"
}

// localTable is table local in both families, as `ip` prints it.
func (th *testHost) localTable() string {
	return th.ns.Exec(th.t, "ip", "route", "show", "table", "local") + th.ns.Exec(th.t, "ip", "-6", "route", "show", "table", "local")
}

// Issue 21 in loopback and arptables modes on the real kernel: a prefix and single VIPs
// together; the prefix's one local route (dry-run text, proto 213), every
// address of it local; status in sync with the prefix present; each drift
// (our route deleted, one of ours the config no longer has) named and
// repaired; remove leaves table local byte for byte as found, a hand-made
// AnyIP route included, and the single VIPs and sysctls as TestLoopbackModeKernel.
func TestPrefixModesKernel(t *testing.T) {
	for _, mode := range []string{"loopback", "arptables"} {
		t.Run(mode, func(t *testing.T) { testPrefixMode(t, mode) })
	}
}

func testPrefixMode(t *testing.T, mode string) {
	th := newTestHost(t)
	th.ns.Exec(t, "ip", "route", "add", "local", "203.0.113.0/24", "dev", "lo", "table", "local")
	th.ns.Exec(t, "ip", "-6", "route", "add", "local", "2001:db8:200::/64", "dev", "lo", "table", "local")
	cfg := prefixCfg(mode)
	localBefore := th.localTable()
	before := th.foreign()

	dry, err := th.host.Plan(mustConfig(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ip route add local 192.0.2.128/25 dev lo table local proto 213",
		"ip -6 route add local 2001:db8:100::/64 dev lo table local proto 213",
	} {
		if !strings.Contains(dry.String(), want) {
			t.Errorf("dry-run lacks %q:\n%s", want, dry)
		}
	}
	if th.localTable() != localBefore {
		t.Fatal("dry-run changed table local")
	}
	p := th.apply(cfg)
	if p.String() != dry.String() {
		t.Errorf("apply did other than the dry-run:\n%s\nwant\n%s", p, dry)
	}
	for _, a := range []string{"192.0.2.128", "192.0.2.200", "192.0.2.255"} {
		if got := th.ns.Exec(t, "ip", "route", "get", a); !strings.HasPrefix(got, "local "+a+" dev lo") {
			t.Errorf("%s is not local: %s", a, got)
		}
	}
	if got := th.ns.Exec(t, "ip", "-6", "route", "get", "2001:db8:100::beef"); !strings.HasPrefix(got, "local 2001:db8:100::beef") {
		t.Errorf("2001:db8:100::beef is not local: %s", got)
	}
	if got := th.ns.Exec(t, "ip", "route", "get", "192.0.2.127"); strings.HasPrefix(got, "local") {
		t.Errorf("the address below the prefix is local: %s", got)
	}
	if mode == "loopback" {
		th.requireAddr("lo", "192.0.2.10/32 scope global lo:dsr0")
	} else {
		th.requireAddr("eth0.100", "192.0.2.10/32 scope global eth0.100:dsr0")
		if got := th.ns.Exec(t, "nft", "list", "set", "arp", "dsr-agent", "vip_prefixes"); !strings.Contains(got, "192.0.2.128/25") || strings.Contains(got, "2001") {
			t.Errorf("the arp table's prefix set:\n%s", got)
		}
	}
	th.requireInSync(cfg)
	r := th.status(cfg)
	if len(r.Prefixes) != 2 || !r.Prefixes[0].Present || !r.Prefixes[1].Present {
		t.Errorf("status prefixes %+v, want both present", r.Prefixes)
	}
	// The wildcard listener of newTestHost serves 443 on every address.
	for _, l := range r.Listeners {
		if !l.Present {
			t.Errorf("listener %s not present: %+v", l.Subject, l)
		}
	}

	th.requireDrift(cfg, DriftPrefixMissing, "ip", "route", "del", "local", "192.0.2.128/25", "dev", "lo", "table", "local", "proto", "213")
	th.requireDrift(cfg, DriftPrefixMissing, "ip", "-6", "route", "del", "local", "2001:db8:100::/64", "dev", "lo", "table", "local")
	th.requireDrift(cfg, DriftPrefixUnexpected, "ip", "route", "add", "local", "198.18.0.0/24", "dev", "lo", "table", "local", "proto", "213")

	if _, err := th.host.Remove(); err != nil {
		t.Fatal(err)
	}
	th.requireNoVIPs()
	if after := th.localTable(); after != localBefore {
		t.Fatalf("table local after remove\n%s\nwant (as found)\n%s", after, localBefore)
	}
	if after := th.foreign(); after != before {
		t.Fatalf("foreign state changed\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// Ownership is the route's mark: with the state file gone, status is still
// in sync and remove still removes the prefixes, and only them.
func TestPrefixOwnershipAfterLostState(t *testing.T) {
	th := newTestHost(t)
	th.ns.Exec(t, "ip", "route", "add", "local", "203.0.113.0/24", "dev", "lo", "table", "local")
	localBefore := th.localTable()
	// Prefixes only: an IPv6 single VIP carries no label, and without the
	// state file remove leaves it (TestLostStateFileStillRemovesNICVIPs
	// covers the labelled IPv4 ones).
	cfg := "mode: loopback\ninterfaces: [eth0.100]\nvips: [{prefix: 192.0.2.128/25}, {prefix: '2001:db8:100::/64'}]\n"
	th.apply(cfg)
	if err := os.Remove(filepath.Join(th.state, stateFile)); err != nil {
		t.Fatal(err)
	}
	th.requireInSync(cfg)
	if _, err := th.host.Remove(); err != nil {
		t.Fatal(err)
	}
	if after := th.localTable(); after != localBefore {
		t.Fatalf("table local after remove without state\n%s\nwant\n%s", after, localBefore)
	}
}

// A foreign local route of the same prefix: apply refuses before its first
// change (the kernel would refuse the route, and counting the foreign one
// as dsr-agent's would let remove delete it); nothing changes.
func TestPrefixForeignSamePrefixRefused(t *testing.T) {
	th := newTestHost(t)
	th.ns.Exec(t, "ip", "route", "add", "local", "192.0.2.128/25", "dev", "lo", "table", "local")
	before := th.foreign() + th.localTable() + th.sysctl("all", "arp_ignore")
	_, err := th.host.Apply(mustConfig(t, prefixCfg("loopback")))
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "192.0.2.128/25") {
		t.Fatalf("apply = %v, want an invalid config naming the prefix", err)
	}
	if after := th.foreign() + th.localTable() + th.sysctl("all", "arp_ignore"); after != before {
		t.Fatalf("refused apply changed the host\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// ARP for a prefix on the real kernel (issue 21.2): with the prefix local
// and nothing else, the server answers ARP for every address of it (the
// negative control, arp_ignore 0); once dsr-agent applied it, in loopback
// mode (the sysctls) and in arptables mode (arp_ignore left at 0: the
// table's interval set), no address spread over the prefix is answered,
// and the server still answers for its own address.
func TestPrefixARPUnanswered(t *testing.T) {
	spread := []string{"192.0.2.128", "192.0.2.129", "192.0.2.200", "192.0.2.254", "192.0.2.255"}
	for _, mode := range []string{"loopback", "arptables"} {
		t.Run(mode, func(t *testing.T) {
			l := newARPLab(t)
			l.server.Exec(t, "ip", "route", "add", "local", "192.0.2.128/25", "dev", "lo", "table", "local")
			for _, a := range spread {
				if got := l.answers(t, a); len(got) == 0 {
					t.Fatalf("negative control: ARP for %s unanswered with the local route and arp_ignore 0; the test could not fail", a)
				}
			}
			l.server.Exec(t, "ip", "route", "del", "local", "192.0.2.128/25", "dev", "lo", "table", "local")
			cfg := mustConfig(t, "mode: "+mode+"\ninterfaces: [eth0]\nvips: [{address: 192.0.2.10}, {prefix: 192.0.2.128/25}]\n")
			if _, err := l.host.Apply(cfg); err != nil {
				t.Fatal(err)
			}
			if got := l.server.Exec(t, "ip", "route", "get", "192.0.2.200"); !strings.HasPrefix(got, "local") {
				t.Fatalf("the prefix is not local: %s", got)
			}
			for _, a := range append(spread, "192.0.2.10") {
				if got := l.answers(t, a); len(got) != 0 {
					t.Errorf("ARP for %s answered by %v", a, got)
				}
			}
			if got := l.answers(t, "198.51.100.21"); len(got) == 0 {
				t.Fatal("server no longer answers ARP for its own address")
			}
		})
	}
}

// In arptables mode arp_announce stays 0, so a reply sent from an address
// of the prefix makes the server ARP with that address as sender, and the
// client would learn it at the server's MAC (the negative control); the
// table's output rule rewrites the sender to the real IP.
func TestPrefixARPSenderRewritten(t *testing.T) {
	l := newARPLab(t)
	learns := func() bool {
		l.client.Exec(t, "ip", "neigh", "flush", "dev", "eth0")
		l.server.Exec(t, "ip", "neigh", "flush", "dev", "eth0")
		_, _ = l.server.ExecErr("ping", "-c", "1", "-W", "1", "-I", "192.0.2.200", "198.51.100.31")
		return strings.Contains(l.client.Exec(t, "ip", "neigh", "show", "dev", "eth0"), "192.0.2.200")
	}
	l.server.Exec(t, "ip", "route", "add", "local", "192.0.2.128/25", "dev", "lo", "table", "local")
	if !learns() {
		t.Fatal("negative control: the client did not learn 192.0.2.200 from the server's ARP; the test could not fail")
	}
	l.server.Exec(t, "ip", "route", "del", "local", "192.0.2.128/25", "dev", "lo", "table", "local")
	if _, err := l.host.Apply(mustConfig(t, "mode: arptables\ninterfaces: [eth0]\nvips: [{prefix: 192.0.2.128/25}]\n")); err != nil {
		t.Fatal(err)
	}
	if learns() {
		t.Fatal("the client learned 192.0.2.200 from the server's ARP despite the table")
	}
	if !strings.Contains(l.client.Exec(t, "ip", "neigh", "show", "dev", "eth0"), "198.51.100.21") {
		t.Fatal("the client did not learn the server's real IP from the rewritten ARP")
	}
}

// Issue 21 in firewalld mode on the real kernel: an IPv4 prefix and single
// VIPs together; nothing local (table local as found), the nat table's
// interval map and the ARP guard's prefix set in place; a client reaches
// the service through the redirect at addresses spread over the prefix;
// status in sync with the service on the wildcard; the prefix element
// deleted by hand is drift that apply repairs; remove leaves no table.
func TestPrefixFirewalldKernel(t *testing.T) {
	th := newTestHostNoServices(t)
	client := netnstest.New(t)
	netnstest.Connect(t, th.ns, "cl0", []string{"100.64.0.1/24", "2001:db8:2::1/64"}, client, "eth0", []string{"100.64.0.2/24", "2001:db8:2::2/64"})
	client.Exec(t, "ip", "route", "add", "192.0.2.128/25", "via", "100.64.0.1")
	client.Exec(t, "ip", "route", "add", "192.0.2.10/32", "via", "100.64.0.1")
	client.Exec(t, "ip", "-6", "route", "add", "2001:db8:100::/64", "via", "2001:db8:2::1")
	cfg := "mode: firewalld\ninterfaces: [cl0]\nvips: [{address: 192.0.2.10, ports: [{port: 80, to_port: 8080}]}, {prefix: 192.0.2.128/25, ports: [{port: 80, to_port: 8080}, {port: 53, protocol: udp}]}, " +
		"{prefix: '2001:db8:100::/64', ports: [{port: 80, to_port: 8080}]}]\n"
	localBefore := th.localTable()
	before := th.foreign()
	th.apply(cfg)
	if th.localTable() != localBefore {
		t.Fatalf("firewalld mode made something local:\n%s", th.localTable())
	}
	v4 := th.ns.Exec(t, "nft", "list", "table", "ip", "dsr-agent")
	for _, want := range []string{"192.0.2.128/25 . tcp . 80 : 8080", "192.0.2.128/25 . udp . 53 : 53", "map @prefix_ports"} {
		if !strings.Contains(v4, want) {
			t.Errorf("ip table lacks %q:\n%s", want, v4)
		}
	}
	if guard := th.ns.Exec(t, "nft", "list", "table", "arp", "dsr-agent"); !strings.Contains(guard, "arp daddr ip @vip_prefixes arp saddr ip != @vip_prefixes") ||
		!strings.Contains(guard, "192.0.2.128/25") {
		t.Errorf("arp guard lacks the prefix:\n%s", guard)
	}
	th.listen("tcp", ":8080")
	th.listen("udp", ":53")
	if v6 := th.ns.Exec(t, "nft", "list", "table", "ip6", "dsr-agent"); !strings.Contains(v6, "2001:db8:100::/64 . tcp . 80 : 8080") || !strings.Contains(v6, "@th,64,64 0x20010db801000000") {
		t.Errorf("ip6 table lacks the prefix's redirect or NS rule:\n%s", v6)
	}
	for _, a := range []string{"192.0.2.128", "192.0.2.200", "192.0.2.255", "192.0.2.10", "[2001:db8:100::]", "[2001:db8:100::beef]", "[2001:db8:100::ffff:ffff:ffff:ffff]"} {
		var err error
		client.Do(t, func() {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", a+":80", time.Second); err == nil {
				c.Close()
			}
		})
		if err != nil {
			t.Errorf("%s:80 not reached through the redirect: %v", a, err)
		}
	}
	th.requireInSync(cfg)
	th.requireDrift(cfg, DriftTableWrong, "nft", "delete", "element", "ip", "dsr-agent", "prefix_ports", "{ 192.0.2.128/25 . tcp . 80 }")
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

// The ARP guard covers the prefix on a forwarding host with proxy_arp (the
// exposure of a VIP that is not local, docs/safety.md): the server answers
// ARP for addresses of the prefix by proxy until dsr-agent's firewalld mode
// is applied (the negative control), and then for none of them.
func TestPrefixFirewalldProxyARP(t *testing.T) {
	l := newARPLab(t)
	// A route to the prefix through another interface makes proxy_arp
	// answer for it on eth0.
	netnstest.Connect(t, l.server, "eth1", []string{"100.64.1.1/24"}, netnstest.New(t), "eth0", []string{"100.64.1.2/24"})
	l.server.Exec(t, "ip", "route", "add", "192.0.2.128/25", "via", "100.64.1.2")
	l.server.Exec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.eth0.proxy_arp=1", "net.ipv4.neigh.eth0.proxy_delay=0")
	spread := []string{"192.0.2.128", "192.0.2.200", "192.0.2.255"}
	for _, a := range spread {
		if got := l.answers(t, a); len(got) == 0 {
			t.Fatalf("negative control: proxy ARP does not answer for %s; the test could not fail", a)
		}
	}
	cfg := mustConfig(t, "mode: firewalld\ninterfaces: [eth0]\nvips: [{prefix: 192.0.2.128/25, ports: [{port: 80}]}]\n")
	// Status judges the prefix by the proxy rules: before the guard, the
	// host answers for it.
	proxyDiffs := func(r *Report) (out []string) {
		for _, d := range r.Differences {
			if d.Kind == ProxyAnswers {
				out = append(out, d.Subject)
			}
		}
		return out
	}
	r, err := l.host.Status(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := proxyDiffs(r); !slices.Equal(got, []string{"192.0.2.128/25 (192.0.2.128) on eth0"}) || r.Suppression {
		t.Errorf("before apply: proxy differences %q (suppression %v), want the prefix's", got, r.Suppression)
	}
	if _, err := l.host.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	for _, a := range spread {
		if got := l.answers(t, a); len(got) != 0 {
			t.Errorf("ARP for %s answered by %v despite the guard", a, got)
		}
	}
	// With the guard in force it is a warning naming the table.
	if r, err = l.host.Status(cfg); err != nil {
		t.Fatal(err)
	}
	if got := proxyDiffs(r); len(got) != 0 || !r.Suppression || !strings.Contains(strings.Join(r.Warnings, "\n"), "proxy: 192.0.2.128/25 (192.0.2.128): eth0:") {
		t.Errorf("after apply: proxy differences %q, suppression %v, warnings %q", got, r.Suppression, r.Warnings)
	}
	if got := l.answers(t, "198.51.100.21"); len(got) == 0 {
		t.Fatal("server no longer answers ARP for its own address")
	}
}

// A prefix kept across every mode switch is served at every step of each
// plan (the executor's promise, docs/safety.md): before each step, every
// address of it is local or redirected; and wherever it is local, ARP for
// it is suppressed: arp_ignore at least 1 on all and the NIC, or the arp
// table's prefix set holding it.
func TestPrefixModeSwitchKeepsPrefix(t *testing.T) {
	th := newTestHostNoServices(t)
	th.listen("tcp", ":80")
	cfg := func(m string) string {
		return "mode: " + m + "\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10, ports: [{port: 80}]}, {prefix: 192.0.2.128/25, ports: [{port: 80}]}]\n"
	}
	check := func(when string) {
		local := strings.HasPrefix(th.ns.Exec(t, "ip", "route", "get", "192.0.2.200"), "local")
		v4, _ := th.ns.ExecErr("nft", "list", "map", "ip", "dsr-agent", "prefix_ports")
		if !local && !strings.Contains(v4, "192.0.2.128/25") {
			t.Errorf("%s: 192.0.2.128/25 neither local nor redirected", when)
		}
		if !local {
			return
		}
		arpSet, _ := th.ns.ExecErr("nft", "list", "set", "arp", "dsr-agent", "vip_prefixes")
		sysctls := th.sysctl("all", "arp_ignore") != "0" && th.sysctl("eth0.100", "arp_ignore") != "0"
		if !sysctls && !strings.Contains(arpSet, "192.0.2.128/25") {
			t.Errorf("%s: 192.0.2.128/25 local with ARP unsuppressed", when)
		}
	}
	modes := []string{"loopback", "firewalld", "arptables", "firewalld", "loopback", "arptables", "loopback"}
	th.apply(cfg(modes[0]))
	for i := 1; i < len(modes); i++ {
		pair := modes[i-1] + "-to-" + modes[i]
		th.host.inject = func(n int, c Change) error {
			check(pair + ": before step " + c.Subject + " " + string(c.Kind))
			return nil
		}
		th.apply(cfg(modes[i]))
		th.host.inject = nil
		check(pair + ": after the plan")
		th.requireInSync(cfg(modes[i]))
	}
}

// The listener check for a prefix port (issue 21.3): nothing listening is
// listener-missing naming the prefix; a wildcard socket serves it; so does
// a socket bound inside the prefix (IPv4 binds there as the address is
// local; IPv6 needs IPV6_FREEBIND, docs/anyip.md); one bound outside it,
// or to another port, does not.
func TestPrefixListeners(t *testing.T) {
	th := newTestHostNoServices(t)
	cfg := "mode: loopback\ninterfaces: [eth0.100]\nvips: [{prefix: 192.0.2.128/25, ports: [{port: 8443}]}, {prefix: '2001:db8:100::/64', ports: [{port: 8443}]}]\n"
	th.apply(cfg)
	missing := func() []string {
		var out []string
		for _, d := range th.status(cfg).Differences {
			if d.Kind == ListenerMissing {
				out = append(out, d.Subject)
			}
		}
		return out
	}
	if got := strings.Join(missing(), " "); got != "192.0.2.128/25:8443/tcp 2001:db8:100::/64:8443/tcp" {
		t.Fatalf("nothing listening: missing %q", got)
	}
	stop := th.listen("tcp4", "198.51.100.21:8443") // outside the prefix
	if len(missing()) != 2 {
		t.Errorf("a socket outside the prefix counted: %v", missing())
	}
	stop()
	stop = th.listen("tcp4", "192.0.2.200:8443")
	if got := missing(); len(got) != 1 || got[0] != "2001:db8:100::/64:8443/tcp" {
		t.Errorf("a socket bound inside the IPv4 prefix: missing %v", got)
	}
	stop()
	var ln net.Listener
	var err error
	th.ns.Do(t, func() {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1) }); err != nil {
				return err
			}
			return serr
		}}
		ln, err = lc.Listen(context.Background(), "tcp6", "[2001:db8:100::5]:8443")
	})
	if err != nil {
		t.Fatalf("listen with IPV6_FREEBIND inside the prefix: %v", err)
	}
	stop2 := th.listen("tcp4", "0.0.0.0:8443")
	if got := missing(); len(got) != 0 {
		t.Errorf("the IPv4 wildcard and an IPV6_FREEBIND socket inside the IPv6 prefix: missing %v", got)
	}
	ln.Close()
	stop2()
}

// Drift repair from the route monitor (issue 21.3): the surface list's
// watcher for the anyip surface, running in the namespace, wakes the
// daemon with "prefix" when one of the prefix routes is deleted by hand;
// the pass that follows names it prefix-missing and repairs it.
func TestPrefixWatcherWakesOnDrift(t *testing.T) {
	th := newTestHost(t)
	cfg := "mode: loopback\ninterfaces: [eth0.100]\nvips: [{prefix: 192.0.2.128/25}]\n"
	th.apply(cfg)
	var w watcher
	for _, sk := range surfaceKinds {
		if _, ok := sk.build(kernel{}, &Facts{}).(*anyipSurface); ok && sk.watch != nil {
			w = sk.watch()
		}
	}
	if w == nil {
		t.Fatal("the anyip surface has no watcher in surfaceKinds")
	}
	ctx, cancel := context.WithCancel(context.Background())
	woke := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		th.ns.Do(t, func() { w.run(ctx, func(s string) { woke <- s }, slog.Default(), WatchOptions{}) })
	}()
	defer func() { cancel(); <-done }()
	// Subscribed to RTNLGRP_IPV4_ROUTE (7) and RTNLGRP_IPV6_ROUTE (11).
	const groups = 1<<(unix.RTNLGRP_IPV4_ROUTE-1) | 1<<(unix.RTNLGRP_IPV6_ROUTE-1)
	deadline := time.Now().Add(10 * time.Second)
	for !routeSocketSubscribed(t, th, groups) {
		if time.Now().After(deadline) {
			t.Fatal("the watcher never subscribed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	th.ns.Exec(t, "ip", "route", "del", "local", "192.0.2.128/25", "dev", "lo", "table", "local", "proto", "213")
	select {
	case got := <-woke:
		if got != "prefix" {
			t.Errorf("woke with %q, want prefix", got)
		}
	case <-time.After(10 * time.Second): // a bound on failure, not a synchronisation
		t.Fatal("no wake after the prefix route was deleted")
	}
	if p, err := th.host.Plan(mustConfig(t, cfg)); err != nil || !strings.Contains(p.String(), "ip route add local 192.0.2.128/25") {
		t.Fatalf("the pass after the wake plans %v:\n%s", err, p)
	}
	th.apply(cfg)
	th.requireInSync(cfg)
}

// routeSocketSubscribed: the namespace has a NETLINK_ROUTE socket bound to
// exactly groups (/proc/thread-self/net/netlink lists the reader's
// namespace's sockets: sk Eth Pid Groups ...).
func routeSocketSubscribed(t *testing.T, th *testHost, groups uint32) bool {
	var table []byte
	th.ns.Do(t, func() {
		var err error
		if table, err = os.ReadFile("/proc/thread-self/net/netlink"); err != nil {
			t.Fatal(err)
		}
	})
	want := fmt.Sprintf("%08x", groups)
	for _, line := range strings.Split(string(table), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 4 && f[1] == "0" && f[3] == want {
			return true
		}
	}
	return false
}
