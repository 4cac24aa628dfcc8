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
		got = append(got, s.Drift+" "+s.Command)
	}
	want := []string{
		"prefix-missing ip route add local 198.51.100.0/25 dev lo table local proto 213",
		"prefix-missing ip route add local 198.51.100.128/25 dev lo table local proto 213",
		"prefix-unexpected ip route del local 198.51.100.0/24 dev lo table local proto 213",
	}
	if !slices.Equal(got, want) {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		p    string
		want string // "" valid, else a fragment of the error
	}{
		{"198.51.100.0/24", ""},
		{"2001:db8:1::/64", ""},
		{"198.51.100.0/16", "host bits set: expected 198.51.0.0/16"},
		{"198.51.100.7/32", "write a host VIP as `address: 198.51.100.7`"},
		{"2001:db8::1/128", "write a host VIP as `address: 2001:db8::1`"},
		{"0.0.0.0/0", "every address"},
		{"0.0.0.0/1", "reserved"},
		{"96.0.0.0/3", "overlaps the reserved range 127.0.0.0/8"},
		{"127.0.0.0/8", "reserved"},
		{"169.254.0.0/24", "reserved"},
		{"224.0.0.0/24", "reserved"},
		{"fe80::/64", "reserved"},
		{"::ffff:198.51.100.0/120", "IPv4-mapped"},
	} {
		err := Validate("vips[3].prefix", pfx(c.p))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.p, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "vips[3].prefix: ")):
			t.Errorf("%s: error %v, want one naming the field and containing %q", c.p, err, c.want)
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
