package anyip

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/route"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestCommand(t *testing.T) {
	for _, c := range []struct {
		p, verb, want string
	}{
		{"198.51.100.0/24", "add", "ip route add local 198.51.100.0/24 dev lo table local proto 213"},
		{"2001:db8:1::/64", "del", "ip -6 route del local 2001:db8:1::/64 dev lo table local proto 213"},
	} {
		if got := (Route{pfx(c.p)}).Command(c.verb); got != c.want {
			t.Errorf("Command(%s, %s) = %q, want %q", c.p, c.verb, got, c.want)
		}
	}
}

func TestDiff(t *testing.T) {
	o := &Observed{
		Ours:    []netip.Prefix{pfx("198.51.100.0/24"), pfx("203.0.113.0/25"), pfx("2001:db8:1::/64")},
		Foreign: []netip.Prefix{pfx("127.0.0.0/8"), pfx("192.0.2.0/24")},
	}
	want := []netip.Prefix{pfx("198.51.100.0/24"), pfx("2001:db8:2::/64"), pfx("192.0.2.0/24"), pfx("2001:db8:2::/64")}
	missing, unexpected, conflicts := Diff(want, o)
	if !slices.Equal(missing, []netip.Prefix{pfx("2001:db8:2::/64")}) {
		t.Errorf("missing = %v", missing)
	}
	if !slices.Equal(unexpected, []netip.Prefix{pfx("203.0.113.0/25"), pfx("2001:db8:1::/64")}) {
		t.Errorf("unexpected = %v", unexpected)
	}
	// A wanted prefix a foreign route already holds is neither added (the
	// kernel would refuse) nor counted as present.
	if !slices.Equal(conflicts, []netip.Prefix{pfx("192.0.2.0/24")}) {
		t.Errorf("conflicts = %v", conflicts)
	}
	if m, u, c := Diff(o.Ours, o); len(m)+len(u)+len(c) != 0 {
		t.Errorf("no-op diff = %v %v %v", m, u, c)
	}
}

func TestStepsAddBeforeDelete(t *testing.T) {
	m := &Manager{}
	steps := m.Steps([]netip.Prefix{pfx("198.51.100.0/25"), pfx("198.51.100.128/25")}, []netip.Prefix{pfx("198.51.100.0/24")})
	var got []string
	for _, s := range steps {
		got = append(got, s.Kind+" "+s.Drift+" "+s.Command)
	}
	want := []string{
		"prefix-add prefix-missing ip route add local 198.51.100.0/25 dev lo table local proto 213",
		"prefix-add prefix-missing ip route add local 198.51.100.128/25 dev lo table local proto 213",
		"prefix-del prefix-unexpected ip route del local 198.51.100.0/24 dev lo table local proto 213",
	}
	if !slices.Equal(got, want) {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestParsePrefix(t *testing.T) {
	for _, c := range []struct {
		s    string
		want string // "" valid, else the error (what was expected)
	}{
		{"198.51.100.0/24", ""},
		{"2001:db8:1::/64", ""},
		{"", "an IPv4 or IPv6 network prefix such as 198.51.100.0/24 (required)"},
		{"198.51.100.0", "a network prefix such as 198.51.100.0/24 or 2001:db8:1::/64"},
		{"198.51.100.0/16", "a prefix without host bits (198.51.0.0/16)"},
		{"198.51.100.7/32", "a network prefix, not a single address (write a host VIP as `address: 198.51.100.7`)"},
		{"2001:db8::1/128", "a network prefix, not a single address (write a host VIP as `address: 2001:db8::1`)"},
		{"0.0.0.0/0", "a prefix of the VIPs, not every address"},
		{"0.0.0.0/1", "a unicast range, not one that overlaps 0.0.0.0/8 (this network)"},
		{"96.0.0.0/3", "a unicast range, not one that overlaps 127.0.0.0/8 (loopback)"},
		{"169.254.0.0/24", "a unicast range, not one that overlaps 169.254.0.0/16 (link-local)"},
		{"240.0.0.0/24", "a unicast range, not one that overlaps 224.0.0.0/3 (multicast, reserved and broadcast)"},
		{"fe80::/64", "a unicast range, not one that overlaps fe80::/10 (link-local)"},
		{"ff02::/16", "a unicast range, not one that overlaps ff00::/8 (multicast)"},
		{"::/64", "a unicast range, not one that overlaps ::/128 (unspecified)"},
		{"::ffff:198.51.100.0/120", "a plain IPv4 prefix, not IPv4-mapped IPv6"},
	} {
		_, err := ParsePrefix(c.s)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: %v", c.s, err)
		case c.want != "" && (err == nil || err.Error() != c.want):
			t.Errorf("%q: error %v, want %q", c.s, err, c.want)
		}
	}
}

// rtmsg builds a notification header as the kernel sends it.
func rtmsg(table, proto, typ uint8) []byte {
	m := nl.NewRtMsg()
	m.Table, m.Protocol, m.Type = table, proto, typ
	return m.Serialize()
}

func TestOurs(t *testing.T) {
	for _, c := range []struct {
		name              string
		msg               uint16
		table, proto, typ uint8
		want              bool
	}{
		{"ours deleted", unix.RTM_DELROUTE, unix.RT_TABLE_LOCAL, route.Proto, unix.RTN_LOCAL, true},
		{"ours added", unix.RTM_NEWROUTE, unix.RT_TABLE_LOCAL, route.Proto, unix.RTN_LOCAL, true},
		{"kernel's local route of an address", unix.RTM_NEWROUTE, unix.RT_TABLE_LOCAL, unix.RTPROT_KERNEL, unix.RTN_LOCAL, false},
		{"hand-made AnyIP route", unix.RTM_DELROUTE, unix.RT_TABLE_LOCAL, unix.RTPROT_BOOT, unix.RTN_LOCAL, false},
		{"return_via's default route", unix.RTM_DELROUTE, 100, route.Proto, unix.RTN_UNICAST, false},
		{"an address", unix.RTM_NEWADDR, unix.RT_TABLE_LOCAL, route.Proto, unix.RTN_LOCAL, false},
	} {
		if got := Ours(c.msg, rtmsg(c.table, c.proto, c.typ)); got != c.want {
			t.Errorf("%s: Ours = %v, want %v", c.name, got, c.want)
		}
	}
	if Ours(unix.RTM_DELROUTE, rtmsg(unix.RT_TABLE_LOCAL, route.Proto, unix.RTN_LOCAL)[:4]) {
		t.Error("a truncated message counts as ours")
	}
}
