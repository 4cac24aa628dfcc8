package probe

import (
	"errors"
	"strings"
	"testing"
)

func TestExitCodesDistinct(t *testing.T) {
	seen := map[int]Verdict{}
	for _, v := range []Verdict{Up, Refused, Unreachable, Timeout, WrongSource, MSSTooLarge, ARPFlux, VerdictError} {
		c := v.ExitCode()
		if o, dup := seen[c]; dup {
			t.Errorf("%s and %s share exit code %d", v, o, c)
		}
		seen[c] = v
		if v != Up && (c == 0 || c == 1) {
			t.Errorf("%s exits %d: 0 is up, 1 is MISC_CHECK's down", v, c)
		}
	}
}

func TestMiscExitCode(t *testing.T) {
	for _, c := range []struct {
		v      Verdict
		weight int
		want   int
	}{
		{Up, -1, 0}, {Up, 0, 2}, {Up, 75, 77}, {Up, 1000, 255},
		{Refused, 75, 1}, {Timeout, -1, 1}, {ARPFlux, 10, 1}, {VerdictError, -1, 1},
	} {
		if got := MiscExitCode(c.v, c.weight); got != c.want {
			t.Errorf("MiscExitCode(%s, %d) = %d, want %d", c.v, c.weight, got, c.want)
		}
	}
}

func TestParseAgentLine(t *testing.T) {
	for _, c := range []struct {
		line string
		want int
		down bool
	}{
		{"up ready\n", 100, false},
		{"up ready 75%\n", 75, false},
		{"75%,up\n", 75, false},
		{"up drain 40%\n", 0, false},
		{"down ready 50%\n", 0, true},
		{"maint\n", 0, true},
		{"up ready 400%\n", 253, false},
	} {
		got, err := ParseAgentLine(c.line)
		if c.down != errors.Is(err, ErrAgentDown) || (!c.down && (err != nil || got != c.want)) {
			t.Errorf("ParseAgentLine(%q) = %d, %v; want %d, down %v", c.line, got, err, c.want, c.down)
		}
	}
	if _, err := ParseAgentLine("up x%\n"); err == nil || errors.Is(err, ErrAgentDown) {
		t.Errorf("bad weight: %v", err)
	}
}

func TestParseEncap(t *testing.T) {
	for in, want := range map[string]string{"": "l2", "l2": "l2", "ipip": "ipip", "gue:6080": "gue:6080"} {
		e, err := ParseEncap(in)
		if err != nil || e.String() != want {
			t.Errorf("ParseEncap(%q) = %s, %v; want %s", in, e, err, want)
		}
	}
	for _, in := range []string{"gre", "gue", "gue:0", "gue:70000", "gue:60x"} {
		if _, err := ParseEncap(in); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "--encap") {
			t.Errorf("ParseEncap(%q): %v, want a usage error naming --encap", in, err)
		}
	}
}

const ipvsadmLn = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.77.0.100:80 rr
  -> 10.77.0.21:80                Route   1      0          0
  -> 10.77.0.22:80                Route   1      0          0
TCP  192.0.2.10:443 wlc
  -> 203.0.113.21:443             Tunnel  1      0          0
  -> 10.0.0.5:8443                Masq    1      0          0
UDP  [fd00:77::100]:53 rr
  -> [fd00:77::21]:53             Route   1      0          0
FWM  7 rr
  -> 10.77.0.23:0                 Route   1      0          0
`

func TestParseList(t *testing.T) {
	base := Config{Encap: Encap{Kind: L2}, Proto: TCP}
	got, err := ParseList(strings.NewReader(ipvsadmLn), base)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, c := range got {
		s = append(s, c.Target.String()+" "+c.Real.String()+" "+c.Encap.String()+" "+string(c.Proto))
	}
	want := "10.77.0.100:80 10.77.0.21 l2 tcp|10.77.0.100:80 10.77.0.22 l2 tcp|192.0.2.10:443 203.0.113.21 ipip tcp|[fd00:77::100]:53 fd00:77::21 l2 udp"
	if strings.Join(s, "|") != want {
		t.Errorf("ipvsadm -Ln parsed to\n%s\nwant\n%s", strings.Join(s, "|"), want)
	}
	// Tunnel takes the base's GUE port: ipvsadm -Ln does not print it.
	got, err = ParseList(strings.NewReader(ipvsadmLn), Config{Encap: Encap{Kind: GUE, Port: 6080}, Proto: TCP})
	if err != nil || got[2].Encap.String() != "gue:6080" || got[0].Encap.String() != "l2" {
		t.Errorf("with --encap gue:6080: %+v %v", got, err)
	}

	got, err = ParseList(strings.NewReader("# VIP:PORT REAL [ENCAP] [PROTO]\n10.77.0.100:80 10.77.0.21\n[fd00:77::100]:53 fd00:77::22 l2 udp\n192.0.2.10:80 203.0.113.21 gue:6080\n"), base)
	if err != nil || len(got) != 3 || got[1].Proto != UDP || got[2].Encap.Port != 6080 {
		t.Errorf("list: %+v %v", got, err)
	}
	for _, bad := range []string{"10.77.0.100 10.77.0.21\n", "10.77.0.100:80\n", "10.77.0.100:80 nothost\n", "10.77.0.100:80 10.77.0.21 gre\n", "", "10.77.0.100:80 fd00::1 l2\n"} {
		if _, err := ParseList(strings.NewReader(bad), base); !errors.Is(err, ErrUsage) {
			t.Errorf("ParseList(%q): %v, want a usage error", bad, err)
		}
	}
}
