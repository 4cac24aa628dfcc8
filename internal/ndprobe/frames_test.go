package ndprobe

import (
	"net"
	"net/netip"
	"testing"
)

func TestICMPv6Checksum(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 0x10}
	src, target := netip.MustParseAddr("fd00:77::10"), netip.MustParseAddr("fd00:77::100")
	f := NeighbourSolicitation(mac, src, target)
	// A message carrying its own correct checksum sums to zero.
	dst := netip.AddrFrom16([16]byte(f[38:54]))
	if got := ICMPv6Checksum(src, dst, f[54:]); got != 0 {
		t.Errorf("checksum over the checksummed NS = %#04x, want 0", got)
	}
	if dst.String() != "ff02::1:ff00:100" {
		t.Errorf("NS to %s, want the solicited-node group ff02::1:ff00:100", dst)
	}
}

func TestARPRequestParses(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 0x10}
	sender, target := netip.MustParseAddr("10.77.0.10"), netip.MustParseAddr("10.77.0.100")
	f := ARPRequest(mac, sender, target)
	if len(f) != 60 {
		t.Errorf("frame of %d bytes, want the Ethernet minimum 60", len(f))
	}
	s, tg, m, ok := Request(f)
	if !ok || s != sender || tg != target || m != mac.String() {
		t.Errorf("Request = %s %s %s %v", s, tg, m, ok)
	}
	if _, _, ok := Answer(f); ok {
		t.Error("a request parsed as an answer")
	}
	f[21] = 2 // op reply
	if a, m, ok := Answer(f); !ok || a != sender || m != mac.String() {
		t.Errorf("Answer = %s %s %v, want the sender %s", a, m, ok, sender)
	}
}
