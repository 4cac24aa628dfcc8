package lab

import (
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestAddressingReadable(t *testing.T) {
	if got := mac(21).String(); got != "02:d5:00:00:00:21" {
		t.Errorf("mac(21) = %s", got)
	}
	if got := hostAddr(Prefix6, 21); got != netip.MustParseAddr("fd00:77::21") {
		t.Errorf("hostAddr v6 = %s", got)
	}
	if got := hostAddr(Prefix4, 21); got != netip.MustParseAddr("10.77.0.21") {
		t.Errorf("hostAddr v4 = %s", got)
	}
}

func TestOrphanPattern(t *testing.T) {
	for name, want := range map[string]bool{
		"dsrlab-123-deadbeef-rs1":    true,
		"dsrlab-123-deadbeef-client": true,
		"dsrlab-notmine":             false,
		"dsrt-39b3001d":              false,
		"xdsrlab-123-deadbeef-rs1":   false,
		"dsrlab-123-deadbeef-rs1/..": false,
	} {
		if got := orphanRE.MatchString(name); got != want {
			t.Errorf("orphan pattern on %q = %v, want %v", name, got, want)
		}
	}
}

func TestICMPv6Checksum(t *testing.T) {
	// A message carrying its own correct checksum sums to zero.
	src, dst := netip.MustParseAddr("fd00:77::10"), netip.MustParseAddr("ff02::1:ff00:100")
	msg := []byte{135, 0, 0, 0, 0, 0, 0, 0, 0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	sum := icmp6Checksum(src, dst, msg)
	msg[2], msg[3] = byte(sum>>8), byte(sum)
	if got := icmp6Checksum(src, dst, msg); got != 0 {
		t.Errorf("checksum over a checksummed message = %#04x, want 0", got)
	}
}

func TestConfig(t *testing.T) {
	want := `mode: firewalld
interfaces: [eth0]
vips:
  - address: 10.77.0.100
    ports:
      - {port: 80, protocol: tcp, to_port: 8080}
      - {port: 53, protocol: udp, to_port: 5353}
`
	if got := Config(ModeFirewalld, VIP4); got != want {
		t.Errorf("Config =\n%s\nwant\n%s", got, want)
	}
}

func TestDNSWire(t *testing.T) {
	q, err := dnsQuery(0xbeef, WhoamiName, dnsTypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	pq, err := parseQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	if pq.ID != 0xbeef || pq.Name != WhoamiName || pq.Type != dnsTypeTXT || pq.Class != dnsClassIN || !pq.RD {
		t.Fatalf("parseQuery = %+v", pq)
	}
	ans := txtAnswer(q, pq, "rs1 10.77.0.21 go")
	txts, err := parseTXTAnswer(ans, 0xbeef, WhoamiName)
	if err != nil || len(txts) != 1 || txts[0] != "rs1 10.77.0.21 go" {
		t.Fatalf("parseTXTAnswer = %q, %v", txts, err)
	}
	// The checks a client relies on must be able to fail.
	if _, err := parseTXTAnswer(ans, 0xbeee, WhoamiName); err == nil {
		t.Error("answer with another id accepted")
	}
	if _, err := parseTXTAnswer(ans, 0xbeef, "other.dsr.lab."); err == nil {
		t.Error("answer for another name accepted")
	}
	if _, err := parseTXTAnswer(q, 0xbeef, WhoamiName); err == nil {
		t.Error("a query accepted as an answer")
	}
	if _, err := parseTXTAnswer(txtAnswer(q, pq, ""), 0xbeef, WhoamiName); err == nil {
		t.Error("NXDOMAIN accepted")
	}
	for i := 12; i < len(ans); i++ {
		if _, err := parseTXTAnswer(ans[:i], 0xbeef, WhoamiName); err == nil {
			t.Errorf("answer truncated to %d bytes accepted", i)
		}
	}
	// A compression loop must not hang the parser.
	loop := append([]byte(nil), q[:12]...)
	loop = append(loop, 0xc0, 12)
	if _, err := parseQuery(loop); err == nil {
		t.Error("compression loop accepted")
	}
}

func TestReplyPktinfo(t *testing.T) {
	// What the kernel hands a server for a datagram sent to the VIP ...
	var in4 unix.Inet4Pktinfo
	in4.Ifindex = 2
	in4.Spec_dst = [4]byte{10, 77, 0, 21}
	in4.Addr = VIP4.As4()
	out := replyPktinfo(unix.PktInfo4(&in4))
	// ... becomes a reply leaving from the VIP (spec_dst), on no fixed interface.
	var want4 unix.Inet4Pktinfo
	want4.Spec_dst = VIP4.As4()
	if string(out) != string(unix.PktInfo4(&want4)) {
		t.Errorf("IPv4 reply pktinfo = %x, want %x", out, unix.PktInfo4(&want4))
	}
	in6 := unix.Inet6Pktinfo{Addr: VIP6.As16(), Ifindex: 2}
	want6 := unix.Inet6Pktinfo{Addr: VIP6.As16()}
	if out := replyPktinfo(unix.PktInfo6(&in6)); string(out) != string(unix.PktInfo6(&want6)) {
		t.Errorf("IPv6 reply pktinfo = %x, want %x", out, unix.PktInfo6(&want6))
	}
	if out := replyPktinfo(nil); out != nil {
		t.Errorf("no pktinfo in: %x out", out)
	}
}

func TestUnboundConfig(t *testing.T) {
	rs := &Node{Name: "rs1", IP4: netip.MustParseAddr("10.77.0.21")}
	good := UnboundConfig(rs, "/tmp/x", UnboundOptions{Ports: []int{DNSRedirectPort}})
	for _, s := range []string{"interface-automatic: yes\n", `interface-automatic-ports: "5353"`, `TXT "rs1 10.77.0.21 unbound"`, "port: 5353\n"} {
		if !strings.Contains(good, s) {
			t.Errorf("config lacks %q:\n%s", s, good)
		}
	}
	vip := UnboundConfig(rs, "/tmp/x", UnboundOptions{Ports: []int{53}, Addresses: []netip.Addr{VIP4, VIP6}})
	for _, s := range []string{"interface: 10.77.0.100@53\n", "interface: fd00:77::100@53\n"} {
		if !strings.Contains(vip, s) || strings.Contains(vip, "interface-automatic") {
			t.Errorf("VIP-bound config lacks %q or has interface-automatic:\n%s", s, vip)
		}
	}
	bad := UnboundConfig(rs, "/tmp/x", UnboundOptions{Wildcard: true})
	if strings.Contains(bad, "interface-automatic: yes") || !strings.Contains(bad, "interface: 0.0.0.0@53\n") {
		t.Errorf("wildcard config:\n%s", bad)
	}
}
