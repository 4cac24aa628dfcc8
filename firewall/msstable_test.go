package firewall

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/internal/golden"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

func mss4Spec() *MSSTable {
	return NewMSSClamp(false, []netip.Addr{
		netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("192.0.2.10"),
		netip.MustParseAddr("192.0.2.11"),
	}, 1400)
}

func mss6Spec() *MSSTable {
	return NewMSSClamp(true, []netip.Addr{
		netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10"),
	}, 1400)
}

func TestNewMSSClampSplitsFamilies(t *testing.T) {
	v4 := NewMSSClamp(false, []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:192.0.2.1")}, 1400)
	if len(v4.VIPs) != 1 || v4.VIPs[0] != netip.MustParseAddr("192.0.2.1") || v4.Family() != Families[1] {
		t.Fatalf("v4 clamp = %+v", v4)
	}
	v6 := NewMSSClamp(true, []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.1")}, 1400)
	if len(v6.VIPs) != 1 || v6.VIPs[0] != netip.MustParseAddr("2001:db8::1") || v6.Family() != Families[2] {
		t.Fatalf("v6 clamp = %+v", v6)
	}
}

func TestMSSRenderGolden(t *testing.T) {
	golden.Assert(t, "mss4.render.nft", RenderReplace(mss4Spec()))
	golden.Assert(t, "mss6.render.nft", RenderReplace(mss6Spec()))
}

// TestMSSReplaceMatchesKernel: the kernel's listing of what Replace built is
// the golden one, Diff is in sync, and what nft itself builds from the
// rendered plan compares equal (the expressions are nft's own).
func TestMSSReplaceMatchesKernel(t *testing.T) {
	for name, spec := range map[string]*MSSTable{"mss4": mss4Spec(), "mss6": mss6Spec()} {
		t.Run(name, func(t *testing.T) {
			m := replaceRoundTrip(t, name, spec)
			// Another MSS is another table.
			other := *spec
			other.MSS = 1300
			if d, err := m.Diff(&other); err != nil || !strings.Contains(d, "chain output: rule 1: changed") {
				t.Fatalf("Diff against MSS 1300 = %q, %v", d, err)
			}
		})
	}
}

const mssRule = "ip saddr @vips tcp flags & (syn | ack) == (syn | ack) tcp option maxseg size > %d counter tcp option maxseg size set %d"

// TestMSSDrift: hand edits are named by Diff and undone by Replace.
func TestMSSDrift(t *testing.T) {
	cases := []struct {
		name, script, want string
	}{
		{"rule deleted", "flush chain ip dsr-agent output", "chain output: 0 rules, want 1"},
		{"MSS changed by hand", "flush chain ip dsr-agent output\nadd rule ip dsr-agent output " + fmt.Sprintf(mssRule, 1300, 1300), "chain output: rule 1: changed"},
		{"only the value set changed", "flush chain ip dsr-agent output\nadd rule ip dsr-agent output " + fmt.Sprintf(mssRule, 1400, 1460), "chain output: rule 1: changed"},
		{"table dormant", "add table ip dsr-agent { flags dormant; }", "table flags dormant, want none"},
		{"VIP removed from the set", "delete element ip dsr-agent vips { 192.0.2.10 }", "set vips: 1 elements missing"},
		{"chain re-hooked at postrouting", `flush chain ip dsr-agent output
delete chain ip dsr-agent output
add chain ip dsr-agent output { type filter hook postrouting priority mangle; policy accept; }
add rule ip dsr-agent output ` + fmt.Sprintf(mssRule, 1400, 1400), "chain output: hook postrouting, want output"},
		{"priority filter", `flush chain ip dsr-agent output
delete chain ip dsr-agent output
add chain ip dsr-agent output { type filter hook output priority filter; policy accept; }
add rule ip dsr-agent output ` + fmt.Sprintf(mssRule, 1400, 1400), "chain output: priority filter, want mangle"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns := netnstest.New(t)
			m := &Manager{Conn: ns.NFT(t)}
			spec := mss4Spec()
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			nftScript(t, ns, c.script+"\n")
			d, err := m.Diff(spec)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(d, c.want) {
				t.Fatalf("Diff = %q, want it to name %q", d, c.want)
			}
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			if d, err := m.Diff(spec); err != nil || d != "" {
				t.Fatalf("after repair Diff = %q, %v", d, err)
			}
			golden.Assert(t, "mss4.kernel.nft", listTable(t, ns, spec.Family()))
		})
	}
}

func TestMSSForeignTablesUntouched(t *testing.T) {
	ns := netnstest.New(t)
	ns.Exec(t, "nft", "add table inet firewalld; add chain inet firewalld filter_OUTPUT { type filter hook output priority filter + 10; policy accept; }; add rule inet firewalld filter_OUTPUT tcp sport 22 accept")
	ns.Exec(t, "nft", "add table ip mangle; add chain ip mangle output { type route hook output priority mangle; }; add rule ip mangle output tcp flags syn tcp option maxseg size set rt mtu")
	before := ns.Exec(t, "nft", "list", "ruleset")
	m := &Manager{Conn: ns.NFT(t)}
	for _, s := range []Spec{mss4Spec(), mss6Spec()} {
		if err := m.Replace(s); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range Families {
		if err := m.Delete(f); err != nil {
			t.Fatal(err)
		}
	}
	if after := ns.Exec(t, "nft", "list", "ruleset"); after != before {
		t.Fatalf("foreign tables changed\n--- before\n%s\n--- after\n%s", before, after)
	}
}

// TestMSSClampSYNACK is the packet-level proof: a TCP server on a VIP on lo,
// a client in another namespace over a veth of MTU 1500; the SYN-ACK the
// client receives carries the clamp with the table, and the kernel's own MSS
// (MTU - 40 for IPv4, - 60 for IPv6) without it (the negative control) or
// when the clamp is above it (the clamp only lowers).
func TestMSSClampSYNACK(t *testing.T) {
	type fam struct {
		ipv6                 bool
		vip, srv, cli, plain string
		natural              uint16
	}
	fams := []fam{
		{false, "192.0.2.10", "10.1.0.1/24", "10.1.0.2/24", "10.1.0.1", 1460},
		{true, "2001:db8::10", "2001:db8:1::1/64", "2001:db8:1::2/64", "2001:db8:1::1", 1440},
	}
	for _, f := range fams {
		for _, c := range []struct {
			name  string
			clamp uint16 // 0: no table
		}{{"no table", 0}, {"clamp 1400", 1400}, {"clamp 1436", 1436}, {"clamp above the kernel's MSS", 1480}} {
			want := f.natural
			if c.clamp != 0 && c.clamp < want {
				want = c.clamp
			}
			t.Run(fmt.Sprintf("ipv6=%v/%s", f.ipv6, c.name), func(t *testing.T) {
				got := synAckMSS(t, f.ipv6, f.vip, "", f.srv, f.cli, f.plain, c.clamp)
				if got != want {
					t.Fatalf("SYN-ACK MSS = %d, want %d", got, want)
				}
			})
		}
	}
}

// TestMSSClampSYNACKPrefix: the same proof for an address inside an AnyIP
// prefix (issue 21, tunnel mode): the prefix set's rule clamps SYN-ACKs
// from it, and without the table the kernel's own MSS leaves (the control).
func TestMSSClampSYNACKPrefix(t *testing.T) {
	for _, f := range []struct {
		ipv6                         bool
		vip, prefix, srv, cli, plain string
		natural                      uint16
	}{
		{false, "198.51.100.200", "198.51.100.0/24", "10.1.0.1/24", "10.1.0.2/24", "10.1.0.1", 1460},
		{true, "2001:db8:100::77", "2001:db8:100::/64", "2001:db8:1::1/64", "2001:db8:1::2/64", "2001:db8:1::1", 1440},
	} {
		for _, clamp := range []uint16{0, 1400} {
			want := f.natural
			if clamp != 0 {
				want = clamp
			}
			t.Run(fmt.Sprintf("ipv6=%v/clamp=%d", f.ipv6, clamp), func(t *testing.T) {
				if got := synAckMSS(t, f.ipv6, f.vip, f.prefix, f.srv, f.cli, f.plain, clamp); got != want {
					t.Fatalf("SYN-ACK MSS = %d, want %d", got, want)
				}
			})
		}
	}
}

// mssPrefixSpecs are tunnel mode's tables with prefixes beside the VIPs
// (IPv6: with the Neighbour Solicitation guard, as tunnel mode builds it).
func mss4PrefixSpec() *MSSTable {
	return NewMSSClamp(false, []netip.Addr{netip.MustParseAddr("192.0.2.10")}, 1400,
		netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:100::/64"), netip.MustParsePrefix("192.0.2.128/25"))
}

func mss6PrefixSpec() *MSSTable {
	m := NewMSSClamp(true, []netip.Addr{netip.MustParseAddr("2001:db8::10")}, 1400,
		netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:100::/64"))
	m.DropNS = true
	return m
}

// TestMSSPrefixes: the golden renderings, the kernel's listing after
// Replace and after nft -f of the rendering (equal, in sync), one rule more
// whatever the number of prefixes, and hand edits of the prefix set seen
// as drift.
func TestMSSPrefixes(t *testing.T) {
	golden.Assert(t, "mss4prefix.render.nft", RenderReplace(mss4PrefixSpec()))
	golden.Assert(t, "mss6guardprefix.render.nft", RenderReplace(mss6PrefixSpec()))
	replaceRoundTrip(t, "mss4prefix", mss4PrefixSpec())
	replaceRoundTrip(t, "mss6guardprefix", mss6PrefixSpec())
	many := mss4PrefixSpec()
	for i := range 200 {
		many.Prefixes = append(many.Prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24))
	}
	if n := len(many.expected().chains[0].rules); n != 2 {
		t.Errorf("output rules with 202 prefixes: %d, want 2", n)
	}
	if n := len(mss4Spec().expected().chains[0].rules); n != 1 {
		t.Errorf("output rules without prefixes: %d, want 1", n)
	}
	for name, script := range map[string]string{
		"prefix deleted":      "delete element ip dsr-agent vip_prefixes { 192.0.2.128/25 }",
		"prefix narrowed":     "delete element ip dsr-agent vip_prefixes { 203.0.113.0/24 }\nadd element ip dsr-agent vip_prefixes { 203.0.113.0/25 }",
		"prefix rule deleted": "flush chain ip dsr-agent output\nadd rule ip dsr-agent output " + fmt.Sprintf(mssRule, 1400, 1400),
	} {
		t.Run(name, func(t *testing.T) {
			ns := netnstest.New(t)
			m := &Manager{Conn: ns.NFT(t)}
			spec := mss4PrefixSpec()
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			nftScript(t, ns, script+"\n")
			if d, err := m.Diff(spec); err != nil || d == "" {
				t.Fatalf("hand edit not detected (%v)", err)
			} else {
				t.Logf("%s: %s", name, d)
			}
			if err := m.Replace(spec); err != nil {
				t.Fatal(err)
			}
			if d, _ := m.Diff(spec); d != "" {
				t.Fatalf("after repair Diff = %q", d)
			}
		})
	}
}

// synAckMSS builds the pair of namespaces, installs the clamp (unless 0),
// opens one connection to the VIP and returns the MSS option of the SYN-ACK
// as captured on the client's side of the veth.
func synAckMSS(t *testing.T, ipv6 bool, vip, prefix, srvCIDR, cliCIDR, gw string, clamp uint16) uint16 {
	srv, cli := netnstest.New(t), netnstest.New(t)
	netnstest.Connect(t, cli, "c0", []string{cliCIDR}, srv, "s0", []string{srvCIDR})
	plen := "/32"
	if ipv6 {
		plen = "/128"
	}
	listen := net.JoinHostPort(vip, "80")
	if prefix != "" {
		// vip is an address of an AnyIP prefix: a local route, served by
		// a wildcard listener (an IPv6 bind inside it needs FREEBIND).
		srv.Exec(t, "ip", "route", "add", "local", prefix, "dev", "lo", "table", "local")
		listen = ":80"
	} else {
		args := []string{"addr", "add", vip + plen, "dev", "lo"}
		if ipv6 {
			// Even on lo an IPv6 address starts tentative for a moment (DAD
			// work is queued, then skipped): bind raced it (EADDRNOTAVAIL).
			args = append(args, "nodad")
		}
		srv.Exec(t, "ip", args...)
	}
	cli.Exec(t, "ip", "route", "add", vip+plen, "via", gw)
	if clamp != 0 {
		m := &Manager{Conn: srv.NFT(t)}
		spec := NewMSSClamp(ipv6, []netip.Addr{netip.MustParseAddr(vip)}, clamp)
		if prefix != "" {
			spec = NewMSSClamp(ipv6, nil, clamp, netip.MustParsePrefix(prefix))
		}
		if err := m.Replace(spec); err != nil {
			t.Fatal(err)
		}
	}
	var ln net.Listener
	var err error
	srv.Do(t, func() { ln, err = net.Listen("tcp", listen) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	var pfd int
	cli.Do(t, func() { pfd, err = captureOn("c0") })
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pfd)

	cli.Do(t, func() {
		var conn net.Conn
		conn, err = (&net.Dialer{Timeout: 30 * time.Second}).Dial("tcp", net.JoinHostPort(vip, "80"))
		if err == nil {
			conn.Close()
		}
	})
	if err != nil {
		t.Fatalf("connect to the VIP: %v", err)
	}
	// The handshake completed, so the SYN-ACK is already in the capture
	// socket's queue; the receive timeout only guards against a hang.
	want := netip.MustParseAddr(vip)
	buf := make([]byte, 65536)
	for {
		n, _, err := unix.Recvfrom(pfd, buf, 0)
		if err != nil {
			t.Fatalf("no SYN-ACK from %s captured: %v", vip, err)
		}
		if mss, ok := synAckFrom(buf[:n], want); ok {
			return mss
		}
	}
}

// captureOn opens an AF_PACKET socket that sees every packet on dev, as the
// network layer sees it (no link header).
func captureOn(dev string) (int, error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return -1, fmt.Errorf("interface %s: %w", dev, err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind packet socket to %s: %w", dev, err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 30}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("receive timeout: %w", err)
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// synAckFrom returns the MSS option of pkt if it is a TCP SYN-ACK from src
// (IPv4, or IPv6 without extension headers).
func synAckFrom(pkt []byte, src netip.Addr) (uint16, bool) {
	if len(pkt) < 1 {
		return 0, false
	}
	var tcp []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 || pkt[9] != unix.IPPROTO_TCP {
			return 0, false
		}
		ihl := int(pkt[0]&0x0f) * 4
		if a, _ := netip.AddrFromSlice(pkt[12:16]); a != src || len(pkt) < ihl {
			return 0, false
		}
		tcp = pkt[ihl:]
	case 6:
		if len(pkt) < 40 || pkt[6] != unix.IPPROTO_TCP {
			return 0, false
		}
		if a, _ := netip.AddrFromSlice(pkt[8:24]); a != src {
			return 0, false
		}
		tcp = pkt[40:]
	default:
		return 0, false
	}
	if len(tcp) < 20 || tcp[13]&(tcpFlagSYN|tcpFlagACK) != tcpFlagSYN|tcpFlagACK {
		return 0, false
	}
	doff := int(tcp[12]>>4) * 4
	if doff < 20 || len(tcp) < doff {
		return 0, false
	}
	for opts := tcp[20:doff]; len(opts) > 0; {
		switch opts[0] {
		case 0:
			return 0, true
		case 1:
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || int(opts[1]) < 2 || len(opts) < int(opts[1]) {
			return 0, true
		}
		if opts[0] == tcpOptMSS && opts[1] == 4 {
			return binary.BigEndian.Uint16(opts[2:4]), true
		}
		opts = opts[opts[1]:]
	}
	return 0, true
}
