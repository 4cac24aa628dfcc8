package loopback

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

func TestLabelerLowestFree(t *testing.T) {
	l := NewLabeler([]Addr{
		{Link: "lo", Label: "lo:dsr0"},
		{Link: "lo", Label: "lo:dsr2"},
		{Link: "lo", Label: "lo:web"}, // someone else's alias: not ours, not counted
	})
	for _, want := range []string{"lo:dsr1", "lo:dsr3", "lo:dsr4"} {
		if got := l.Next("lo"); got != want {
			t.Fatalf("Next = %q, want %q", got, want)
		}
	}
	if got := l.Next("enp0s31f6.1000"); got != "" {
		t.Fatalf("Next on long name = %q, want no label (over IFNAMSIZ)", got)
	}
	if got := l.Next("eth0"); got != "eth0:dsr0" {
		t.Fatalf("Next(eth0) = %q", got)
	}
}

func TestAddrCommand(t *testing.T) {
	a := Addr{Link: "lo", Prefix: netip.MustParsePrefix("192.0.2.10/32"), Label: "lo:dsr0"}
	if got, want := a.Command("add"), "ip addr add 192.0.2.10/32 dev lo label lo:dsr0"; got != want {
		t.Fatalf("got %q want %q", got, want)
	}
	if got, want := a.Command("del"), "ip addr del 192.0.2.10/32 dev lo"; got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestAddListDelInNamespace(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "nic0", "198.51.100.21/24")
	m, err := NewManager(ns.Netlink, ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	v4 := Addr{Link: "lo", Prefix: netip.MustParsePrefix("192.0.2.10/32"), Label: "lo:dsr0"}
	v6 := Addr{Link: "lo", Prefix: netip.MustParsePrefix("2001:db8::10/128")}
	nic := Addr{Link: "nic0", Prefix: netip.MustParsePrefix("192.0.2.11/32"), Label: "nic0:dsr0"}
	for _, a := range []Addr{v4, v6, nic, v4} { // v4 twice: adding again is not an error
		if err := m.Add(a); err != nil {
			t.Fatal(err)
		}
	}
	got, err := m.List()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]Addr{}
	for _, a := range got {
		have[Key(a.Link, a.Prefix)] = a
	}
	for _, want := range []Addr{v4, v6, nic} {
		a, ok := have[Key(want.Link, want.Prefix)]
		if !ok {
			t.Fatalf("List missing %s; got %v", want, got)
		}
		if a.Label != want.Label {
			t.Errorf("%s label = %q, want %q", want, a.Label, want.Label)
		}
	}
	if a := have[Key("nic0", netip.MustParsePrefix("198.51.100.21/24"))]; a.Secondary || a.Link == "" {
		t.Errorf("nic0 primary address not listed as primary: %+v", a)
	}
	// The kernel's own view, as an admin would read it.
	out := ns.Exec(t, "ip", "-4", "addr", "show", "dev", "lo")
	if !strings.Contains(out, "192.0.2.10/32 scope global lo:dsr0") {
		t.Fatalf("ip addr show lo lacks the labelled alias:\n%s", out)
	}
	out6 := ns.Exec(t, "ip", "-6", "addr", "show", "dev", "lo")
	if !strings.Contains(out6, "2001:db8::10/128 scope global nodad") {
		t.Fatalf("ip -6 addr show lo lacks the VIP:\n%s", out6)
	}
	for _, a := range []Addr{v4, v6, nic, v4} { // deleting twice is not an error
		if err := m.Del(a); err != nil {
			t.Fatal(err)
		}
	}
	out = ns.Exec(t, "ip", "addr", "show")
	for _, s := range []string{"192.0.2.10", "2001:db8::10", "192.0.2.11"} {
		if strings.Contains(out, s) {
			t.Fatalf("%s still present after Del:\n%s", s, out)
		}
	}
	if !strings.Contains(out, "198.51.100.21/24") {
		t.Fatalf("foreign address on nic0 lost:\n%s", out)
	}
}

// TestKernelErrorsReachTheCaller: an address the kernel refuses is an error
// that names it and wraps the kernel's errno, and a Manager's socket is in
// its namespace, not the caller's.
func TestKernelErrorsReachTheCaller(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "nic0")
	ns.Exec(t, "sysctl", "-qw", "net.ipv6.conf.nic0.disable_ipv6=1")
	m, err := NewManager(ns.Netlink, ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	a := Addr{Link: "nic0", Prefix: netip.MustParsePrefix("2001:db8::11/128")}
	err = m.Add(a)
	if !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), "ip addr add 2001:db8::11/128 dev nic0") {
		t.Fatalf("Add with IPv6 disabled on nic0: %v, want EACCES naming the address", err)
	}
	if err := (&Manager{NL: ns.Netlink}).Add(a); !errors.Is(err, errNoSocket) {
		t.Fatalf("Add through a Manager not made by NewManager: %v", err)
	}
}

// TestListReadsWhatVishvanandaReads: List's own dump parser against
// vishvananda/netlink's (what List used before issue 19) on every kind of
// address it must tell apart: labelled and not, secondary, a point-to-point
// local address with a peer, IPv6, on several links.
func TestListReadsWhatVishvanandaReads(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "nic0", "198.51.100.21/24", "2001:db8:1::21/64")
	ns.AddDummy(t, "nic1")
	for _, args := range [][]string{
		{"addr", "add", "198.51.100.22/24", "dev", "nic0"}, // secondary
		{"addr", "add", "192.0.2.10/32", "dev", "lo", "label", "lo:dsr0"},
		{"addr", "add", "192.0.2.11/32", "dev", "lo", "label", "lo:web"},
		{"addr", "add", "10.9.0.1", "peer", "10.9.0.0/24", "dev", "nic1"}, // the prefix is the peer's
		{"addr", "add", "2001:db8::10/128", "dev", "lo", "nodad"},
	} {
		ns.Exec(t, "ip", args...)
	}
	m, err := NewManager(ns.Netlink, ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	got, err := m.List()
	if err != nil {
		t.Fatal(err)
	}
	links, err := ns.Netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	ref, err := ns.Netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var want []Addr
	for _, a := range ref {
		ip, _ := netip.AddrFromSlice(a.IP)
		ip = ip.Unmap()
		ones, _ := a.Mask.Size()
		label := ""
		if ip.Is4() && a.Label != names[a.LinkIndex] {
			label = a.Label
		}
		want = append(want, Addr{Link: names[a.LinkIndex], Prefix: netip.PrefixFrom(ip, ones), Label: label,
			Secondary: a.Flags&unix.IFA_F_SECONDARY != 0})
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List:\n%v\nvishvananda/netlink:\n%v", got, want)
	}
	for _, must := range []Addr{
		{Link: "nic0", Prefix: netip.MustParsePrefix("198.51.100.22/24"), Secondary: true},
		{Link: "nic1", Prefix: netip.MustParsePrefix("10.9.0.1/32")},
		{Link: "lo", Prefix: netip.MustParsePrefix("192.0.2.11/32"), Label: "lo:web"},
		{Link: "lo", Prefix: netip.MustParsePrefix("2001:db8::10/128")},
	} {
		if !slices.Contains(got, must) {
			t.Errorf("List lacks %+v:\n%v", must, got)
		}
	}
}

func TestKey(t *testing.T) {
	for _, tc := range []struct {
		link, prefix, want string
	}{
		{"lo", "192.0.2.10/32", "lo 192.0.2.10/32"},
		{"enp0s31f6.1000", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128", "enp0s31f6.1000 2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128"},
	} {
		if got := Key(tc.link, netip.MustParsePrefix(tc.prefix)); got != tc.want {
			t.Errorf("Key(%s, %s) = %q, want %q", tc.link, tc.prefix, got, tc.want)
		}
	}
}
