package listener

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// TestCountEstablishedKernel: in a throwaway namespace, connections to the
// VIPs (IPv4, IPv6, IPv4 through a dual-stack socket) are counted by the
// kernel's filter; connections to the host's own address, the client ends
// of the connections, listening sockets and other ports are not; a
// firewalld-style port match counts the connections to that port on any
// address; a prefix (an AnyIP route, docs/anyip.md) counts the connections
// to every address in it and none outside. The user-space fallback counts
// the same.
func TestCountEstablishedKernel(t *testing.T) {
	ns := netnstest.New(t)
	for _, a := range []string{"10.77.100.1/32", "10.77.0.2/32"} {
		ns.Exec(t, "ip", "addr", "add", a, "dev", "lo")
	}
	for _, a := range []string{"fd00:77::100/128", "fd00:77::2/128"} {
		ns.Exec(t, "ip", "addr", "add", a, "dev", "lo", "nodad")
	}
	for _, a := range []string{"fd00:77::100", "fd00:77::2"} {
		awaitUsable(t, ns, a)
	}
	ns.Exec(t, "ip", "route", "add", "local", "10.77.128.0/24", "dev", "lo", "table", "local")
	ns.Exec(t, "ip", "-6", "route", "add", "local", "fd00:77:1::/64", "dev", "lo", "table", "local")
	s := newSockets(t, ns)
	s.listen("tcp4", "0.0.0.0:80")
	s.listen("tcp6", "[::]:80") // v6only: Go sets IPV6_V6ONLY for tcp6
	s.listen("tcp", ":81")      // dual-stack: IPv4 arrives v4-mapped
	s.listen("tcp4", "0.0.0.0:8080")
	// Connections stay in the listener's accept queue, established (the
	// kernel counts them).
	connect := func(n int, src, dst string) {
		for range n {
			s.dial("tcp", src, dst)
		}
	}
	connect(3, "10.77.0.2", "10.77.100.1:80")
	connect(2, "fd00:77::2", "[fd00:77::100]:80")
	connect(4, "10.77.0.2", "10.77.100.1:81") // AF_INET6 sockets, ::ffff:10.77.100.1
	connect(5, "10.77.0.2", "10.77.0.2:80")   // the host's own address: not a VIP
	connect(6, "10.77.0.2", "10.77.0.2:8080")
	connect(1, "10.77.0.2", "10.77.128.0:80") // the prefix's first and last addresses
	connect(1, "10.77.0.2", "10.77.128.255:81")
	connect(2, "10.77.0.2", "10.77.128.77:8080")
	connect(3, "fd00:77::2", "[fd00:77:1::5]:80")

	d, err := Open(int(ns.Handle))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	vips := []netip.Prefix{netip.MustParsePrefix("10.77.100.1/32"), netip.MustParsePrefix("fd00:77::100/128")}
	prefixes := []netip.Prefix{netip.MustParsePrefix("10.77.128.0/24"), netip.MustParsePrefix("fd00:77:1::/64")}
	// Many VIPs without connections: the program grows (a long accept
	// jump) and the kernel still takes it.
	many := append([]netip.Prefix(nil), vips...)
	for i := range 500 {
		many = append(many, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 78, byte(i >> 8), byte(i)}), 32))
	}
	for _, c := range []struct {
		name  string
		addrs []netip.Prefix
		ports []uint16
		want  int
	}{
		{"prefixes", prefixes, nil, 1 + 1 + 2 + 3},
		{"ipv4 prefix", prefixes[:1], nil, 1 + 1 + 2},
		{"ipv6 prefix", prefixes[1:], nil, 3},
		{"vips and prefixes", append(slices.Clone(vips), prefixes...), nil, 3 + 2 + 4 + 1 + 1 + 2 + 3},
		{"a neighbouring prefix", []netip.Prefix{netip.MustParsePrefix("10.77.129.0/24"), netip.MustParsePrefix("fd00:77:2::/64")}, nil, 0},
		{"vips", vips, nil, 3 + 2 + 4},
		{"ipv4 vip", vips[:1], nil, 3 + 4},
		{"ipv6 vip", vips[1:], nil, 2},
		{"500 more vips", many, nil, 3 + 2 + 4},
		{"port 8080", nil, []uint16{8080}, 6 + 2},
		{"vips or port 8080", vips, []uint16{8080}, 3 + 2 + 4 + 6 + 2},
		{"port 80 on any address", nil, []uint16{80}, 3 + 2 + 5 + 1 + 3},
		{"nothing to match", nil, nil, 0},
		{"no connections", []netip.Prefix{netip.MustParsePrefix("10.77.100.9/32")}, []uint16{9}, 0},
	} {
		got, err := d.CountEstablished(c.addrs, c.ports)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: counted %d, want %d", c.name, got, c.want)
		}
		if len(c.addrs)+len(c.ports) == 0 {
			continue
		}
		// The user-space match (used for programs too big for the kernel)
		// agrees.
		got, err = d.countEstablished(nil, matchFunc(c.addrs, c.ports))
		if err != nil {
			t.Fatalf("%s in user space: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s in user space: counted %d, want %d", c.name, got, c.want)
		}
	}
	if n := len(matchProgram(make([]netip.Prefix, 5000), nil)); n <= maxBytecode {
		t.Errorf("5000 addresses make a %d-byte program: the fallback is never taken", n)
	}
}
