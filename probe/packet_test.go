package probe

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"
)

var update = flag.Bool("update", false, "rewrite testdata/built/*.hex")

type captured struct {
	name string
	Captured
	frame []byte
}

// loadCaptured reads testdata/captured: frames the probe sent and the real
// kernel's answers, recorded in the lab (lab_test.go, PROBE_CAPTURE).
func loadCaptured(t *testing.T) []captured {
	t.Helper()
	files, err := filepath.Glob("testdata/captured/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no captured frames: %v", err)
	}
	var out []captured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c captured
		if err := json.Unmarshal(b, &c.Captured); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if c.frame, err = hex.DecodeString(c.Frame); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		c.name = strings.TrimSuffix(filepath.Base(f), ".json")
		out = append(out, c)
	}
	return out
}

// TestParseCaptured: each answer the real kernel gave in the lab parses to
// the kind and source the fault produces.
func TestParseCaptured(t *testing.T) {
	want := map[string]struct {
		kind    AnswerKind
		fromVIP bool
	}{
		"healthy":                         {AnswerSYNACK, true},
		"arp-flux":                        {AnswerSYNACK, true},
		"service-on-the-real-ip-only":     {AnswerRST, true},
		"nftables-reject-on-vip-80":       {AnswerICMP, true},
		"udp-on-the-wildcard-without-pkt": {AnswerUDP, false},
	}
	n := 0
	for _, c := range loadCaptured(t) {
		if c.Kind != "answer" {
			continue
		}
		var w struct {
			kind    AnswerKind
			fromVIP bool
		}
		found := false
		for k, v := range want {
			if strings.Contains(c.name, k) {
				w, found = v, true
			}
		}
		if !found {
			t.Errorf("%s: no expectation", c.name)
			continue
		}
		n++
		a, err := c.Flow.Parse(c.frame)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if a.Kind != w.kind || (a.From == c.Flow.VIP) != w.fromVIP {
			t.Errorf("%s: kind %d from %s, want kind %d from the VIP %v", c.name, a.Kind, a.From, w.kind, w.fromVIP)
		}
		if a.Kind == AnswerSYNACK && (a.MSS == 0 || a.Window == 0) {
			t.Errorf("%s: SYN-ACK without MSS or window: %+v", c.name, a)
		}
		// The same frame is not an answer to another flow.
		other := c.Flow
		other.SrcPort++
		if _, err := other.Parse(c.frame); err == nil {
			t.Errorf("%s: parsed as an answer to source port %d too", c.name, other.SrcPort)
		}
	}
	if n < 10 {
		t.Fatalf("only %d captured answers", n)
	}
}

// TestNeighCaptured: the ARP reply and the Neighbour Advertisement a real
// server with ARP flux sent for the VIP name the VIP and the server's MAC.
func TestNeighCaptured(t *testing.T) {
	n := 0
	for _, c := range loadCaptured(t) {
		if c.Kind != "neigh" {
			continue
		}
		n++
		na, ok := parseNeighAnswer(c.frame)
		if !ok || na.target != c.Flow.VIP || na.mac.String() != c.Flow.DstMAC.String() {
			t.Errorf("%s: %+v %v, want an answer for %s with MAC %s", c.name, na, ok, c.Flow.VIP, c.Flow.DstMAC)
		}
	}
	if n != 2 {
		t.Fatalf("%d neighbour answers captured, want 2 (ARP, NDP)", n)
	}
}

// TestBuildMatchesCaptured: rebuilding each frame the probe sent in the lab
// from its flow gives the same bytes (the kernel accepted those).
func TestBuildMatchesCaptured(t *testing.T) {
	for _, c := range loadCaptured(t) {
		if c.Kind != "sent" {
			continue
		}
		f := c.Flow
		var got []byte
		var err error
		switch et := binary.BigEndian.Uint16(c.frame[12:]); {
		case et == 0x0806 || (et == 0x86dd && c.frame[20] == 58):
			got, err = solicitation(f.SrcMAC, f.Src, f.VIP)
		case f.Proto == UDP:
			pkt := gopacket.NewPacket(c.frame, layers.LayerTypeEthernet, gopacket.Default)
			got, err = f.Datagram(pkt.TransportLayer().LayerPayload())
		default:
			pkt := gopacket.NewPacket(c.frame, layers.LayerTypeEthernet, gopacket.Default)
			if pkt.TransportLayer().(*layers.TCP).RST {
				got, err = f.RST()
			} else {
				got, err = f.SYN()
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !bytes.Equal(got, c.frame) {
			t.Errorf("%s: built\n%x\nsent\n%x", c.name, got, c.frame)
		}
	}
}

// TestFilter runs the socket's BPF program on the captured frames: every
// answer and neighbour answer passes, the probe's own SYNs (to the service
// port) and the same answers for another source port do not.
func TestFilter(t *testing.T) {
	for _, c := range loadCaptured(t) {
		prog, err := filter(c.Flow.SrcPort)
		if err != nil {
			t.Fatal(err)
		}
		insns := make([]bpf.Instruction, len(prog))
		for i, r := range prog {
			insns[i] = r.Disassemble()
		}
		vm, err := bpf.NewVM(insns)
		if err != nil {
			t.Fatal(err)
		}
		n, err := vm.Run(c.frame)
		if err != nil {
			t.Fatal(err)
		}
		et := binary.BigEndian.Uint16(c.frame[12:])
		neighOrICMP := et == 0x0806 || (et == 0x86dd && c.frame[20] == 58) || (et == 0x0800 && c.frame[23] == 1)
		switch {
		case c.Kind != "sent" && n == 0:
			t.Errorf("%s: the filter drops an answer", c.name)
		case c.Kind == "sent" && !neighOrICMP && n != 0:
			t.Errorf("%s: the filter passes the probe's own packet", c.name)
		}
		if c.Kind == "answer" && !neighOrICMP {
			other, _ := filter(c.Flow.SrcPort + 1)
			insns := make([]bpf.Instruction, len(other))
			for i, r := range other {
				insns[i] = r.Disassemble()
			}
			vm, _ := bpf.NewVM(insns)
			if n, _ := vm.Run(c.frame); n != 0 {
				t.Errorf("%s: the filter for another port passes it", c.name)
			}
		}
	}
}

var (
	mac1 = net.HardwareAddr{2, 0xd5, 0, 0, 0, 2}
	mac2 = net.HardwareAddr{2, 0xd5, 0, 0, 0, 0x21}
)

func l3Flow(enc Encap, vip, src, real string) *Flow {
	return &Flow{Proto: TCP, Src: netip.MustParseAddr(src), VIP: netip.MustParseAddr(vip), SrcPort: 40001, Port: 80,
		Seq: 0x01020304, MSS: 1400, Real: netip.MustParseAddr(real), OuterSrc: netip.MustParseAddr(src),
		Encap: enc, GUESport: 50001, SrcMAC: mac1, DstMAC: mac2}
}

// checksumOK verifies an IPv4 header or TCP/UDP checksum: the ones'
// complement sum over pseudo-header and data is 0xffff.
func checksumOK(pseudo, data []byte) bool {
	var sum uint32
	b := append(append([]byte{}, pseudo...), data...)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	for i := 0; i < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

func pseudoHeader(src, dst netip.Addr, proto byte, length int) []byte {
	p := append(src.AsSlice(), dst.AsSlice()...)
	if src.Is4() {
		return append(p, 0, proto, byte(length>>8), byte(length))
	}
	return append(p, 0, 0, byte(length>>8), byte(length), 0, 0, 0, proto)
}

// TestBuildL3: the encapsulated SYNs (IPIP, IPv6-in-IPv6, IPv4-in-IPv6, GUE
// over IPv4 and IPv6) decode to the outer header to the real server, the GUE
// header (version 0, inner protocol, no flags) and the inner SYN with its MSS
// option and valid checksums; their bytes are kept in testdata/built (-update).
func TestBuildL3(t *testing.T) {
	for _, c := range []struct {
		name           string
		f              *Flow
		outerProto     layers.IPProtocol
		innerProtoByte byte
	}{
		{"ipip4", l3Flow(Encap{Kind: IPIP}, "192.0.2.10", "198.51.100.2", "203.0.113.21"), layers.IPProtocolIPv4, 4},
		{"ipip6", l3Flow(Encap{Kind: IPIP}, "2001:db8::10", "2001:db8:1::2", "2001:db8:2::21"), layers.IPProtocolIPv6, 41},
		{"ipip4in6", l3Flow(Encap{Kind: IPIP}, "192.0.2.10", "198.51.100.2", "2001:db8:2::21"), layers.IPProtocolIPv4, 4},
		{"gue4", l3Flow(Encap{Kind: GUE, Port: 6080}, "192.0.2.10", "198.51.100.2", "203.0.113.21"), layers.IPProtocolUDP, 4},
		{"gue6", l3Flow(Encap{Kind: GUE, Port: 6080}, "2001:db8::10", "2001:db8:1::2", "2001:db8:2::21"), layers.IPProtocolUDP, 41},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := c.f
			if f.VIP.Is4() && f.Real.Is6() {
				f.OuterSrc = netip.MustParseAddr("2001:db8:1::2")
			}
			b, err := f.SYN()
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "built", c.name+".hex")
			if *update {
				_ = os.MkdirAll(filepath.Dir(golden), 0o755)
				if err := os.WriteFile(golden, []byte(hex.EncodeToString(b)+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(string(want)) != hex.EncodeToString(b) {
				t.Errorf("built %x\nwant  %s", b, want)
			}
			eth := b[14:]
			var outerPayload []byte
			if f.Real.Is4() {
				if eth[9] != byte(c.outerProto) || !bytes.Equal(eth[16:20], f.Real.AsSlice()) || !checksumOK(nil, eth[:20]) {
					t.Fatalf("outer IPv4 header %x: want protocol %d to %s with a valid checksum", eth[:20], c.outerProto, f.Real)
				}
				outerPayload = eth[20:]
			} else {
				if eth[6] != byte(c.outerProto) || !bytes.Equal(eth[24:40], f.Real.AsSlice()) {
					t.Fatalf("outer IPv6 header %x: want next header %d to %s", eth[:40], c.outerProto, f.Real)
				}
				outerPayload = eth[40:]
			}
			inner := outerPayload
			if f.Encap.Kind == GUE {
				if got := binary.BigEndian.Uint16(outerPayload[2:]); got != f.Encap.Port {
					t.Fatalf("GUE UDP port %d, want %d", got, f.Encap.Port)
				}
				if !checksumOK(pseudoHeader(f.OuterSrc, f.Real, 17, len(outerPayload)), outerPayload) {
					t.Errorf("outer UDP checksum invalid")
				}
				gue := outerPayload[8:12]
				if !bytes.Equal(gue, []byte{0, c.innerProtoByte, 0, 0}) {
					t.Fatalf("GUE header %x, want 00%02x0000", gue, c.innerProtoByte)
				}
				inner = outerPayload[12:]
			}
			var tcp []byte
			if f.VIP.Is4() {
				if !checksumOK(nil, inner[:20]) || !bytes.Equal(inner[16:20], f.VIP.AsSlice()) {
					t.Fatalf("inner IPv4 header %x", inner[:20])
				}
				tcp = inner[20:]
			} else {
				if !bytes.Equal(inner[24:40], f.VIP.AsSlice()) {
					t.Fatalf("inner IPv6 header %x", inner[:40])
				}
				tcp = inner[40:]
			}
			if !checksumOK(pseudoHeader(f.Src, f.VIP, 6, len(tcp)), tcp) {
				t.Errorf("inner TCP checksum invalid")
			}
			if tcp[13] != 0x02 || binary.BigEndian.Uint16(tcp) != f.SrcPort || binary.BigEndian.Uint32(tcp[4:]) != f.Seq {
				t.Errorf("inner TCP %x: want a SYN from port %d seq %d", tcp[:20], f.SrcPort, f.Seq)
			}
			if !bytes.Equal(tcp[20:24], []byte{2, 4, byte(f.MSS >> 8), byte(f.MSS)}) {
				t.Errorf("MSS option %x, want 0204%04x", tcp[20:24], f.MSS)
			}
		})
	}
}

func TestMaxMSS(t *testing.T) {
	for _, c := range []struct {
		mtu            int
		e              Encap
		outer6, inner6 bool
		want           int
	}{
		{1500, Encap{Kind: L2}, false, false, 1460},
		{1500, Encap{Kind: IPIP}, false, false, 1440}, // tunl0's MTU 1480 - 40
		{1500, Encap{Kind: GUE, Port: 6080}, false, false, 1428},
		{1500, Encap{Kind: IPIP}, true, true, 1400},
		{1500, Encap{Kind: GUE, Port: 6080}, true, true, 1388},
	} {
		if got := maxMSS(c.mtu, c.e, c.outer6, c.inner6); got != c.want {
			t.Errorf("maxMSS(%d, %s, %v, %v) = %d, want %d", c.mtu, c.e, c.outer6, c.inner6, got, c.want)
		}
	}
}

// TestStaleSYNACK: a SYN-ACK for our ports acknowledging another sequence
// number (an earlier probe's half-open connection) is recognised, and the
// RST that clears it carries that acknowledgement as its sequence number.
func TestStaleSYNACK(t *testing.T) {
	n := 0
	for _, c := range loadCaptured(t) {
		if c.Kind != "answer" || !strings.Contains(c.name, "healthy") {
			continue
		}
		n++
		f := c.Flow
		f.Seq += 1000
		a, err := f.Parse(c.frame)
		if err != nil || a.Kind != AnswerStaleSYNACK || a.Seq != c.Flow.Seq+1 {
			t.Fatalf("%s with another ISN: %+v %v, want a stale SYN-ACK acknowledging %d", c.name, a, err, c.Flow.Seq+1)
		}
		rst, err := f.RSTSeq(a.Seq)
		if err != nil {
			t.Fatal(err)
		}
		pkt := gopacket.NewPacket(rst, layers.LayerTypeEthernet, gopacket.Default)
		tcp := pkt.TransportLayer().(*layers.TCP)
		if !tcp.RST || tcp.Seq != a.Seq || uint16(tcp.SrcPort) != f.SrcPort {
			t.Errorf("RST %+v, want seq %d from port %d", tcp, a.Seq, f.SrcPort)
		}
	}
	if n != 2 {
		t.Fatalf("%d healthy SYN-ACKs captured, want 2", n)
	}
}
