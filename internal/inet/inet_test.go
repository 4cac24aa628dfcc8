package inet

import "testing"

func TestProtocolNumbers(t *testing.T) {
	for n := 0; n < 256; n++ {
		p := ProtocolOf(uint8(n))
		if got := p.Number(); got != uint8(n) {
			t.Errorf("ProtocolOf(%d) = %q, Number() = %d", n, p, got)
		}
	}
	if TCP.Number() != 6 || UDP.Number() != 17 || Protocol("").Number() != 0 {
		t.Errorf("tcp %d udp %d any %d, want 6 17 0", TCP.Number(), UDP.Number(), Protocol("").Number())
	}
}

func TestParseProtocol(t *testing.T) {
	for _, s := range []string{"tcp", "udp"} {
		if p, err := ParseProtocol(s); err != nil || p.String() != s {
			t.Errorf("ParseProtocol(%q) = %q, %v", s, p, err)
		}
	}
	for _, s := range []string{"", "TCP", "6", "sctp"} {
		if _, err := ParseProtocol(s); err == nil {
			t.Errorf("ParseProtocol(%q) accepted", s)
		}
	}
}
