package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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

// Issue 21 in loopback mode on the real kernel: a prefix and single VIPs
// together; the prefix's one local route (dry-run text, proto 213), every
// address of it local; status in sync with the prefix present; each drift
// (our route deleted, one of ours the config no longer has) named and
// repaired; remove leaves table local byte for byte as found, a hand-made
// AnyIP route included, and the single VIPs and sysctls as TestLoopbackModeKernel.
func TestPrefixLoopbackKernel(t *testing.T) {
	th := newTestHost(t)
	th.ns.Exec(t, "ip", "route", "add", "local", "203.0.113.0/24", "dev", "lo", "table", "local")
	th.ns.Exec(t, "ip", "-6", "route", "add", "local", "2001:db8:200::/64", "dev", "lo", "table", "local")
	cfg := prefixCfg("loopback")
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
	th.requireAddr("lo", "192.0.2.10/32 scope global lo:dsr0")
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
