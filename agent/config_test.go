package agent

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
vips:
  - address: 192.0.2.10
    ports: [{port: 80}]
  - address: 2001:db8::10
health:
  checks:
    - {name: web, tcp: "127.0.0.1:8080"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mode != ModeLoopback {
		t.Errorf("mode = %q, want loopback", cfg.Mode)
	}
	p := cfg.VIPs[0].Ports[0]
	if p.Protocol != "tcp" || p.ToPort != 80 {
		t.Errorf("port defaults = %+v, want tcp, to_port 80", p)
	}
	c := cfg.Health.Checks[0]
	if c.Interval.String() != "2s" || c.Timeout.String() != "1s" || c.Rise != 2 || c.Fall != 3 {
		t.Errorf("check defaults = %+v", c)
	}
}

func TestParseConfigEmptyIsValid(t *testing.T) {
	// The packaged example config has no VIPs: installing must change nothing.
	cfg, err := ParseConfig([]byte("# nothing configured yet\nvips: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.VIPs) != 0 {
		t.Fatalf("VIPs = %v", cfg.VIPs)
	}
}

// Each bad config must be rejected with a message naming the field, the
// value and what is expected.
func TestParseConfigErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"malformed yaml", "vips: [\n", []string{"line"}},
		{"unknown top key", "mode: loopback\nvipz: []\n", []string{`unknown key "vipz"`, "mode, interfaces, vips, health"}},
		{"unknown vip key", "vips:\n  - adress: 192.0.2.10\n", []string{`unknown key "adress"`, "address, real_ip, ports"}},
		{"bad mode", "mode: ipvs\n", []string{"mode", `"ipvs"`, "loopback, arptables or firewalld"}},
		{"not an address", "vips: [{address: web01}]\n", []string{"vips[0].address", `"web01"`, "host address"}},
		{"network not host", "vips: [{address: 192.0.2.0/24}]\n", []string{"vips[0].address", `"192.0.2.0/24"`, "not a network"}},
		{"loopback vip", "vips: [{address: 127.0.0.5}]\n", []string{"vips[0].address", "loopback"}},
		{"multicast vip", "vips: [{address: 'ff02::1'}]\n", []string{"vips[0].address", "multicast"}},
		{"duplicate vip", "vips: [{address: 192.0.2.10}, {address: 192.0.2.10/32}]\n", []string{"vips[1].address", "each VIP listed once", "vips[0]"}},
		{"port out of range", "vips: [{address: 192.0.2.10, ports: [{port: 70000}]}]\n", []string{"vips[0].ports[0].port", `"70000"`, "1-65535"}},
		{"port zero", "vips: [{address: 192.0.2.10, ports: [{port: 0}]}]\n", []string{"vips[0].ports[0].port", `"0"`}},
		{"to_port out of range", "vips: [{address: 192.0.2.10, ports: [{port: 80, to_port: -1}]}]\n", []string{"vips[0].ports[0].to_port", `"-1"`}},
		{"unknown protocol", "vips: [{address: 192.0.2.10, ports: [{port: 80, protocol: icmp}]}]\n", []string{"vips[0].ports[0].protocol", `"icmp"`, "tcp or udp"}},
		{"firewalld without ports", "mode: firewalld\nvips: [{address: 192.0.2.10}]\n", []string{"vips[0].ports", "firewalld"}},
		{"duplicate port", "vips: [{address: 192.0.2.10, ports: [{port: 80}, {port: 80, protocol: tcp}]}]\n", []string{"vips[0].ports[1]", "tcp/80"}},
		{"lo as interface", "interfaces: [lo]\n", []string{"interfaces[0]", `"lo"`, "not lo"}},
		{"bad interface name", "interfaces: ['a/b']\n", []string{"interfaces[0]", `"a/b"`}},
		{"real_ip outside arptables", "vips: [{address: 192.0.2.10, real_ip: 198.51.100.2}]\n", []string{"vips[0].real_ip", "arptables"}},
		{"bad listen", "health: {listen: nowhere}\n", []string{"health.listen", `"nowhere"`, "ip:port"}},
		{"bad source", "health: {allowed_sources: [10.0.0.0/33]}\n", []string{"health.allowed_sources[0]", `"10.0.0.0/33"`}},
		{"check without target", "health: {checks: [{name: web}]}\n", []string{"health.checks[0]", "exactly one of tcp or http"}},
		{"check bad interval", "health: {checks: [{name: web, tcp: '127.0.0.1:80', interval: soon}]}\n", []string{"health.checks[0].interval", `"soon"`}},
		{"check timeout > interval", "health: {checks: [{name: web, tcp: '127.0.0.1:80', interval: 1s, timeout: 5s}]}\n", []string{"health.checks[0].timeout", "no longer than the interval"}},
		{"wrong type", "vips: [{address: 192.0.2.10, ports: [{port: http}]}]\n", []string{"vips[0].ports[0].port", `"http"`, "a port number"}},
		{"fractional port", "vips: [{address: 192.0.2.10, ports: [{port: 1.5}]}]\n", []string{"vips[0].ports[0].port", `"1.5"`, "a port number"}},
		{"fractional to_port", "mode: firewalld\nvips: [{address: 192.0.2.10, ports: [{port: 80, to_port: 80.9}]}]\n", []string{"vips[0].ports[0].to_port", `"80.9"`}},
		{"fractional rise", "vips: []\nhealth: {checks: [{name: web, tcp: '127.0.0.1:80', rise: 2.5}]}\n", []string{"health.checks[0].rise", `"2.5"`}},
		{"empty file", "", []string{"empty", "vips: []", "remove"}},
		{"comment-only file", "# vips:\n#  - address: 192.0.2.10\n", []string{"empty", "vips: []"}},
		{"null document", "~\n", []string{"empty"}},
		{"empty mapping", "{}\n", []string{"empty"}},
		{"vips key missing", "mode: loopback\n", []string{"vips", "vips: []"}},
		{"vips null", "vips:\n", []string{"vips", "vips: []"}},
		{"health on the wildcard", "vips: []\nhealth: {listen: '0.0.0.0:8558'}\n", []string{"health.listen", `"0.0.0.0:8558"`, "not the wildcard"}},
		{"health on the v6 wildcard", "vips: []\nhealth: {listen: '[::]:8558'}\n", []string{"health.listen", "not the wildcard"}},
		{"health on a VIP", "vips: [{address: 192.0.2.10}]\nhealth: {listen: '192.0.2.10:8558'}\n", []string{"health.listen", `"192.0.2.10:8558"`, "not a VIP"}},
		{"health port zero", "vips: []\nhealth: {listen: '192.0.2.21:0'}\n", []string{"health.listen", "port 1-65535"}},
		{"agent check on health's address", "vips: []\nhealth: {listen: '192.0.2.21:8558', agent_check: {listen: '192.0.2.21:8558'}}\n", []string{"health.agent_check.listen", "other than health.listen"}},
		{"agent check on a VIP", "vips: [{address: 192.0.2.10}]\nhealth: {listen: '192.0.2.21:8558', agent_check: {listen: '192.0.2.10:3333'}}\n", []string{"health.agent_check.listen", "not a VIP"}},
		{"map for list", "vips: {address: 192.0.2.10}\n", []string{"line 1", "expected a list of VIPs"}},
		{"second document", "vips: []\n---\nmode: bogus\n", []string{"more than one YAML document"}},
		{"this-network vip", "vips: [{address: 0.0.0.1}]\n", []string{"vips[0].address", "0.0.0.0/8"}},
		{"reserved vip", "vips: [{address: 240.0.0.1}]\n", []string{"vips[0].address", "240.0.0.0/4"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(c.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", c.yaml)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error does not wrap ErrInvalidConfig: %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// A huge invalid config prints a bounded number of lines and says how many
// more there were.
func TestParseConfigCapsErrorLines(t *testing.T) {
	var b strings.Builder
	b.WriteString("vips:\n")
	for i := 0; i < 5000; i++ {
		b.WriteString("  - address: nope\n")
	}
	_, err := ParseConfig([]byte(b.String()))
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	if n := strings.Count(msg, "\n"); n > maxErrorLines+1 {
		t.Errorf("%d lines printed, want at most %d", n, maxErrorLines+1)
	}
	if !strings.Contains(msg, "… and 4,980 more") {
		t.Errorf("no count of the lines left out: …%s", msg[max(0, len(msg)-200):])
	}
}

func TestLoadConfigRefusesHugeFile(t *testing.T) {
	path := t.TempDir() + "/config.yaml"
	big := strings.Repeat("# padding padding padding padding\n", (MaxConfigSize/34)+10)
	if err := os.WriteFile(path, []byte("vips: []\n"+big), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "larger than 1024 KiB") {
		t.Fatalf("err = %v, want invalid config: too large", err)
	}
}

func TestParseConfigReportsAllErrors(t *testing.T) {
	_, err := ParseConfig([]byte("mode: nope\nvips: [{address: x}, {address: 192.0.2.1, ports: [{port: 0}]}]\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{"mode", "vips[0].address", "vips[1].ports[0].port"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %s: %v", w, err)
		}
	}
}

// TestParseListenerGrace: health.listener_grace defaults to 30s, 0 means at
// once, anything but a non-negative duration names the field.
func TestParseListenerGrace(t *testing.T) {
	for in, want := range map[string]time.Duration{"": DefaultListenerGrace, "0": 0, "2m": 2 * time.Minute, "500ms": 500 * time.Millisecond} {
		y := "vips: []\nhealth:\n  listen: 192.0.2.21:8558\n"
		if in != "" {
			y += "  listener_grace: " + in + "\n"
		}
		cfg, err := ParseConfig([]byte(y))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if cfg.Health.ListenerGrace != want {
			t.Errorf("listener_grace %q = %v, want %v", in, cfg.Health.ListenerGrace, want)
		}
	}
	for _, in := range []string{"-1s", "soon", "30"} {
		_, err := ParseConfig([]byte("vips: []\nhealth:\n  listen: 192.0.2.21:8558\n  listener_grace: " + in + "\n"))
		if err == nil || !strings.Contains(err.Error(), "health.listener_grace") || !strings.Contains(err.Error(), in) {
			t.Errorf("listener_grace %q: %v", in, err)
		}
	}
}
