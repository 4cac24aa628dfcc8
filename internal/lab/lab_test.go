package lab

import (
	"net/netip"
	"testing"
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
`
	if got := Config(ModeFirewalld, VIP4); got != want {
		t.Errorf("Config =\n%s\nwant\n%s", got, want)
	}
}
