package listener

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/dsr-agent/dsr-agent/internal/inet"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

func TestReceives(t *testing.T) {
	v4 := netip.MustParseAddrPort("192.0.2.10:80")
	v6 := netip.MustParseAddrPort("[2001:db8::10]:80")
	sock := func(addr string, v6only bool) Socket {
		return Socket{Proto: inet.TCP, Addr: netip.MustParseAddr(addr), Port: 80, V6Only: v6only}
	}
	for _, c := range []struct {
		s        Socket
		dst      netip.AddrPort
		receives bool
	}{
		{sock("192.0.2.10", false), v4, true},
		{sock("0.0.0.0", false), v4, true},
		{sock("192.0.2.11", false), v4, false},
		{sock("0.0.0.0", false), v6, false},
		{sock("::", false), v4, true}, // dual-stack wildcard
		{sock("::", true), v4, false}, // IPV6_V6ONLY
		{sock("::", true), v6, true},  // but IPv6 is fine
		{sock("::ffff:192.0.2.10", false), v4, true},
		{sock("::ffff:192.0.2.11", false), v4, false},
		{sock("2001:db8::10", true), v6, true},
		{sock("2001:db8::11", false), v6, false},
		{Socket{Proto: inet.UDP, Addr: netip.MustParseAddr("0.0.0.0"), Port: 80}, v4, false}, // other protocol
		{Socket{Proto: inet.TCP, Addr: netip.MustParseAddr("0.0.0.0"), Port: 81}, v4, false}, // other port
	} {
		if got := c.s.Receives(inet.TCP, c.dst); got != c.receives {
			t.Errorf("%s receives tcp %s = %v, want %v", c.s, c.dst, got, c.receives)
		}
	}
}

// TestListKernel: the dump sees listening TCP and unconnected UDP sockets
// of a throwaway namespace (IPv4, IPv6, dual-stack, v6only) and nothing
// else: not the namespace the test runs in, not established connections,
// not connected UDP sockets.
func TestListKernel(t *testing.T) {
	ns := netnstest.New(t)
	ns.AddDummy(t, "eth0", "10.77.0.2/24", "fd00:77::2/64")
	ns.Exec(t, "ip", "addr", "add", "10.77.100.1/32", "dev", "lo")
	awaitUsable(t, ns, "fd00:77::2")
	s := newSockets(t, ns)
	s.listen("tcp4", "10.77.100.1:80")
	s.listen("tcp4", "0.0.0.0:81")
	s.listen("tcp4", "10.77.0.2:82")
	s.listen("tcp", ":83")      // dual-stack [::]
	s.listen("tcp6", "[::]:84") // v6only
	lc := s.listen("tcp4", "127.0.0.1:85")
	s.udp("udp4", "0.0.0.0:53")
	s.udp("udp6", "[fd00:77::2]:54")
	// An established connection and a connected UDP socket: not listeners.
	s.dial("tcp4", "", lc.Addr().String())
	s.dial("udp4", "", "10.77.0.2:9")

	d, err := Open(int(ns.Handle))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	socks, err := d.List([]inet.Protocol{inet.TCP, inet.UDP}, true)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range socks {
		got = append(got, s.String())
	}
	slices.Sort(got)
	want := []string{
		"0.0.0.0:53/udp", "0.0.0.0:81/tcp", "10.77.0.2:82/tcp", "10.77.100.1:80/tcp", "127.0.0.1:85/tcp",
		"[::]:83/tcp", "[::]:84/tcp (v6only)", "[fd00:77::2]:54/udp",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("sockets:\n got %q\nwant %q", got, want)
	}
	vip := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(netip.MustParseAddr("10.77.100.1"), port) }
	served := func(proto inet.Protocol, dst netip.AddrPort) bool {
		return slices.ContainsFunc(socks, func(s Socket) bool { return s.Receives(proto, dst) })
	}
	for port, want := range map[uint16]bool{80: true, 81: true, 82: false, 83: true, 84: false, 85: false} {
		if got := served(inet.TCP, vip(port)); got != want {
			t.Errorf("VIP:%d/tcp served = %v, want %v", port, got, want)
		}
	}
	if !served(inet.UDP, vip(53)) || served(inet.TCP, vip(53)) {
		t.Error("udp wildcard :53 not seen as serving udp only")
	}

	// Only TCP asked: no UDP dump. IPv6 only: no IPv4 sockets.
	socks, err = d.List([]inet.Protocol{inet.TCP}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range socks {
		if s.Proto != inet.TCP || s.Addr.Is4() {
			t.Errorf("List(tcp, ipv6 only) returned %s", s)
		}
	}
}
