package agent

import (
	"errors"
	"fmt"
	"os"
	"reflect"
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

// Every check kind, as DESIGN.md's contract spells it.
func TestParseConfigCheckKinds(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
vips: []
health:
  checks:
    - {name: web, tcp: 127.0.0.1:8080}
    - {name: api, http: "http://127.0.0.1:8080/healthz", expect_status: 204}
    - {name: site, tls: 127.0.0.1:443, server_name: www.example.com}
    - {name: site2, tls: "[::1]:443", verify: true, cert_expiry_warning: 30d}
    - {name: dns, dns: 127.0.0.1:53, query: example.com, type: A}
    - {name: dns6, dns: 127.0.0.1:53, query: example.com, type: aaaa, expect: "2001:DB8::1"}
    - {name: redis, exec: [/usr/bin/redis-cli, -p, 6379, ping], timeout: 2s}
    - {name: syslog, udp: 127.0.0.1:514, payload: "ping", expect_reply: false}
    - {name: echo, udp: 127.0.0.1:7}
`))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Health.Checks
	want := []CheckConfig{
		{Name: "web", Kind: CheckTCP, Target: "127.0.0.1:8080"},
		{Name: "api", Kind: CheckHTTP, Target: "http://127.0.0.1:8080/healthz", ExpectStatus: 204},
		{Name: "site", Kind: CheckTLS, Target: "127.0.0.1:443", ServerName: "www.example.com", CertExpiryWarning: 14 * 24 * time.Hour},
		{Name: "site2", Kind: CheckTLS, Target: "[::1]:443", ServerName: "::1", Verify: true, CertExpiryWarning: 30 * 24 * time.Hour},
		{Name: "dns", Kind: CheckDNS, Target: "127.0.0.1:53", Query: "example.com", Type: "A"},
		{Name: "dns6", Kind: CheckDNS, Target: "127.0.0.1:53", Query: "example.com", Type: "AAAA", Expect: "2001:db8::1"},
		{Name: "redis", Kind: CheckExec, Target: "/usr/bin/redis-cli -p 6379 ping", Command: []string{"/usr/bin/redis-cli", "-p", "6379", "ping"}},
		{Name: "syslog", Kind: CheckUDP, Target: "127.0.0.1:514", Payload: "ping", ExpectReply: false},
		{Name: "echo", Kind: CheckUDP, Target: "127.0.0.1:7", ExpectReply: true},
	}
	if len(c) != len(want) {
		t.Fatalf("%d checks, want %d", len(c), len(want))
	}
	for i, w := range want {
		w.Interval, w.Timeout, w.Rise, w.Fall = 2*time.Second, time.Second, 2, 3
		if w.Name == "redis" {
			w.Timeout = 2 * time.Second
		}
		if !reflect.DeepEqual(c[i], w) {
			t.Errorf("check %d:\n got %+v\nwant %+v", i, c[i], w)
		}
	}
}

// The shipped example for the seed's stack (nginx TLS, Varnish, Apache,
// Redis, MariaDB, DNS) must stay a valid config.
func TestSeedStackExample(t *testing.T) {
	cfg, err := LoadConfig("../packaging/examples/seed-stack.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[CheckKind]int{}
	for _, c := range cfg.Health.Checks {
		kinds[c.Kind]++
	}
	for _, k := range []CheckKind{CheckTLS, CheckTCP, CheckHTTP, CheckExec, CheckDNS} {
		if kinds[k] == 0 {
			t.Errorf("example has no %s check", k)
		}
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
		{"unknown vip key", "vips:\n  - adress: 192.0.2.10\n", []string{`unknown key "adress"`, "address, prefix, real_ip, ports"}},
		{"bad mode", "mode: ipvs\n", []string{"mode", `"ipvs"`, "loopback, arptables, firewalld or tunnel"}},
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
		{"check without target", "health: {checks: [{name: web}]}\n", []string{"health.checks[0]", "exactly one of tcp, http, tls, dns, exec or udp"}},
		{"check with two kinds", "vips: []\nhealth: {checks: [{name: web, tcp: '127.0.0.1:80', tls: '127.0.0.1:443'}]}\n", []string{"health.checks[0]", "not 2 (tcp, tls)"}},
		{"tls bad target", "vips: []\nhealth: {checks: [{name: site, tls: '127.0.0.1'}]}\n", []string{"health.checks[0].tls", `"127.0.0.1"`, "host:port"}},
		{"tls bad server_name", "vips: []\nhealth: {checks: [{name: site, tls: '127.0.0.1:443', server_name: 'a b'}]}\n", []string{"health.checks[0].server_name", `"a b"`, "a DNS name"}},
		{"tls bad verify", "vips: []\nhealth: {checks: [{name: site, tls: '127.0.0.1:443', verify: maybe}]}\n", []string{"health.checks[0].verify", `"maybe"`, "true or false"}},
		{"tls bad expiry", "vips: []\nhealth: {checks: [{name: site, tls: '127.0.0.1:443', cert_expiry_warning: 2w}]}\n", []string{"health.checks[0].cert_expiry_warning", `"2w"`, "14d"}},
		{"server_name on tcp", "vips: []\nhealth: {checks: [{name: web, tcp: '127.0.0.1:80', server_name: www.example.com}]}\n", []string{"health.checks[0].server_name", "only with tls checks (this is a tcp check)"}},
		{"dns without query", "vips: []\nhealth: {checks: [{name: dns, dns: '127.0.0.1:53'}]}\n", []string{"health.checks[0].query", "the name to ask"}},
		{"dns bad type", "vips: []\nhealth: {checks: [{name: dns, dns: '127.0.0.1:53', query: example.com, type: AXFR}]}\n", []string{"health.checks[0].type", `"AXFR"`, "a record type"}},
		{"dns expect not v4", "vips: []\nhealth: {checks: [{name: dns, dns: '127.0.0.1:53', query: example.com, type: A, expect: '2001:db8::1'}]}\n", []string{"health.checks[0].expect", `"2001:db8::1"`, "IPv4"}},
		{"dns expect on SOA", "vips: []\nhealth: {checks: [{name: dns, dns: '127.0.0.1:53', query: example.com, type: SOA, expect: x}]}\n", []string{"health.checks[0].expect", "expect only with type"}},
		{"query on udp", "vips: []\nhealth: {checks: [{name: u, udp: '127.0.0.1:514', query: x}]}\n", []string{"health.checks[0].query", "only with dns checks"}},
		{"exec as a string", "vips: []\nhealth: {checks: [{name: redis, exec: 'redis-cli ping'}]}\n", []string{"health.checks[0].exec", `"redis-cli ping"`, "a list", "without a shell"}},
		{"exec empty", "vips: []\nhealth: {checks: [{name: redis, exec: []}]}\n", []string{"health.checks[0].exec", "a command"}},
		{"exec relative", "vips: []\nhealth: {checks: [{name: redis, exec: [redis-cli, ping]}]}\n", []string{"health.checks[0].exec[0]", `"redis-cli"`, "absolute path"}},
		{"udp bad expect_reply", "vips: []\nhealth: {checks: [{name: u, udp: '127.0.0.1:514', expect_reply: 1}]}\n", []string{"health.checks[0].expect_reply", `"1"`, "true or false"}},
		{"payload on tcp", "vips: []\nhealth: {checks: [{name: u, tcp: '127.0.0.1:514', payload: x}]}\n", []string{"health.checks[0].payload", "only with udp checks"}},
		{"expect_status on tls", "vips: []\nhealth: {checks: [{name: u, tls: '127.0.0.1:443', expect_status: 200}]}\n", []string{"health.checks[0].expect_status", "only with http checks"}},
		{"unknown check key", "vips: []\nhealth: {checks: [{name: u, tls: '127.0.0.1:443', sni: x}]}\n", []string{`unknown key "sni"`, "server_name"}},
		{"duplicate check name", "vips: []\nhealth: {checks: [{name: u, tcp: '127.0.0.1:1'}, {name: u, tcp: '127.0.0.1:2'}]}\n", []string{"health.checks[1].name", "unique"}},
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
		{"weight without a signal", "vips: []\nhealth: {listen: '192.0.2.21:8558', agent_check: {listen: '192.0.2.21:3333', weight: {min: 5}}}\n", []string{"health.agent_check.weight", "at least one of"}},
		{"weight from a missing exec check", "vips: []\nhealth: {listen: '192.0.2.21:8558', checks: [{name: web, tcp: '127.0.0.1:80'}], agent_check: {listen: '192.0.2.21:3333', weight: {exec: web}}}\n", []string{"health.agent_check.weight.exec", `"web"`, "exec check"}},
		{"weight floor above 100", "vips: []\nhealth: {listen: '192.0.2.21:8558', agent_check: {listen: '192.0.2.21:3333', weight: {cpu: true, min: 101}}}\n", []string{"health.agent_check.weight.min", "101", "0..100"}},
		{"weight smoothing negative", "vips: []\nhealth: {listen: '192.0.2.21:8558', agent_check: {listen: '192.0.2.21:3333', weight: {load: true, smoothing: -1s}}}\n", []string{"health.agent_check.weight.smoothing", "-1s"}},
		{"weight cpu not a bool", "vips: []\nhealth: {listen: '192.0.2.21:8558', agent_check: {listen: '192.0.2.21:3333', weight: {cpu: yes please}}}\n", []string{"health.agent_check.weight.cpu", "true or false"}},
		{"weight unknown key", "vips: []\nhealth: {listen: '192.0.2.21:8558', agent_check: {listen: '192.0.2.21:3333', weight: {memory: true}}}\n", []string{"memory", "cpu, load, connections"}},
		{"return_via without a gateway", "vips: [{address: 192.0.2.10}]\nreturn_via: {ports: [{port: 443}]}\n", []string{"return_via", "gateway (IPv4) and/or gateway6"}},
		{"return_via v6 gateway in gateway", "vips: [{address: 192.0.2.10}]\nreturn_via: {gateway: '2001:db8::1'}\n", []string{"return_via.gateway", `"2001:db8::1"`, "an IPv4 address"}},
		{"return_via gateway is a VIP", "vips: [{address: 192.0.2.10}]\nreturn_via: {gateway: 192.0.2.10}\n", []string{"return_via.gateway", "not a VIP"}},
		{"return_via main table", "vips: [{address: 192.0.2.10}]\nreturn_via: {gateway: 192.0.2.1, table: 254}\n", []string{"return_via.table", "254", "other than compat, default, main and local"}},
		{"return_via port zero", "vips: [{address: 192.0.2.10}]\nreturn_via: {gateway: 192.0.2.1, ports: [{port: 0}]}\n", []string{"return_via.ports[0].port", "1-65535"}},
		{"return_via port missing", "vips: [{address: 192.0.2.10}]\nreturn_via: {gateway: 192.0.2.1, ports: [{protocol: tcp}]}\n", []string{"return_via.ports[0].port"}},
		{"return_via bad protocol", "vips: [{address: 192.0.2.10}]\nreturn_via: {gateway: 192.0.2.1, ports: [{port: 80, protocol: sctp}]}\n", []string{"return_via.ports[0].protocol", "sctp", "tcp or udp"}},
		{"return_via duplicate port", "vips: [{address: 192.0.2.10}]\nreturn_via: {gateway: 192.0.2.1, ports: [{port: 80}, {port: 80, protocol: tcp}]}\n", []string{"return_via.ports[1]", "80/tcp", "once"}},
		{"return_via with no VIPs", "vips: []\nreturn_via: {gateway: 192.0.2.1}\n", []string{"return_via", "vips: []"}},
		{"return_via unknown key", "vips: [{address: 192.0.2.10}]\nreturn_via: {gw: 192.0.2.1}\n", []string{"gw", "gateway, gateway6, ports, table"}},
		{"tunnel section in loopback mode", "vips: [{address: 192.0.2.10}]\ntunnel: {encap: ipip}\n", []string{"tunnel", "only with mode: tunnel", "loopback"}},
		{"tunnel bad encap", "mode: tunnel\nvips: [{address: 192.0.2.10}]\ntunnel: {encap: gre}\n", []string{"tunnel.encap", `"gre"`, "ipip or gue"}},
		{"tunnel port out of range with ipip", "mode: tunnel\nvips: [{address: 192.0.2.10}]\ntunnel: {encap: ipip, port: 70000}\n", []string{"tunnel.port", "70000", "1-65535"}},
		{"tunnel gue port zero", "mode: tunnel\nvips: [{address: 192.0.2.10}]\ntunnel: {encap: gue, port: 0}\n", []string{"tunnel.port", "1-65535"}},
		{"tunnel mss too small", "mode: tunnel\nvips: [{address: 192.0.2.10}]\ntunnel: {mss: 100}\n", []string{"tunnel.mss", "100", "536-8960"}},
		{"tunnel unknown key", "mode: tunnel\nvips: [{address: 192.0.2.10}]\ntunnel: {type: gue}\n", []string{"type", "encap, port, mss"}},
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
	_, err := LoadConfig(path, "")
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

func TestParseAgentCheckWeight(t *testing.T) {
	y := "vips: []\nhealth:\n  listen: 192.0.2.21:8558\n  checks: [{name: redis, exec: [/usr/bin/redis-cli, ping]}]\n" +
		"  agent_check: {listen: 192.0.2.21:3333, weight: {cpu: true, connections: 500, exec: redis}}\n"
	cfg, err := ParseConfig([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.Health.AgentCheck.Weight
	want := WeightConfig{CPU: true, Connections: 500, Exec: "redis", Smoothing: DefaultWeightSmoothing, Min: DefaultWeightMin}
	if w == nil || *w != want {
		t.Fatalf("weight = %+v, want %+v", w, want)
	}
	cfg, err = ParseConfig([]byte("vips: []\nhealth: {listen: '192.0.2.21:8558', agent_check: {listen: '192.0.2.21:3333'}}\n"))
	if err != nil || cfg.Health.AgentCheck.Weight != nil {
		t.Fatalf("no weight key: weight %+v, err %v", cfg.Health.AgentCheck.Weight, err)
	}
}

func TestParseTunnel(t *testing.T) {
	for y, want := range map[string]TunnelConfig{
		"mode: tunnel\nvips: [{address: 192.0.2.10}]\n":                                               {Encap: "ipip"},
		"mode: tunnel\nvips: [{address: 192.0.2.10}]\ntunnel: {encap: gue}\n":                         {Encap: "gue", Port: DefaultGUEPort},
		"mode: tunnel\nvips: [{address: 192.0.2.10}]\ntunnel: {encap: gue, port: 5555, mss: 1400}\n":  {Encap: "gue", Port: 5555, MSS: 1400},
		"mode: tunnel\nvips: [{address: 192.0.2.10}]\ntunnel: {encap: ipip, port: 6080, mss: 1400}\n": {Encap: "ipip", MSS: 1400},
	} {
		cfg, err := ParseConfig([]byte(y))
		if err != nil {
			t.Fatalf("%s: %v", y, err)
		}
		if cfg.Tunnel == nil || *cfg.Tunnel != want {
			t.Errorf("%s: tunnel = %+v, want %+v", y, cfg.Tunnel, want)
		}
	}
}

func TestKernelModules(t *testing.T) {
	for y, want := range map[string]string{
		"vips: [{address: 192.0.2.10}]\n":                                                                "",
		"mode: tunnel\nvips: [{address: 192.0.2.10}]\n":                                                  "ipip",
		"mode: tunnel\nvips: [{address: '2001:db8::10'}]\n":                                              "ip6_tunnel",
		"mode: tunnel\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}]\ntunnel: {encap: gue}\n": "ipip ip6_tunnel fou",
		"mode: tunnel\nvips: []\ntunnel: {encap: gue}\n":                                                 "",
	} {
		cfg, err := ParseConfig([]byte(y))
		if err != nil {
			t.Fatalf("%s: %v", y, err)
		}
		if got := strings.Join(cfg.KernelModules(), " "); got != want {
			t.Errorf("%s: modules %q, want %q", y, got, want)
		}
	}
}

// TestSplitHostPort: the standard library's host:port rules (brackets,
// zones), a host and a port 1-65535 required.
func TestSplitHostPort(t *testing.T) {
	for s, want := range map[string]string{
		"127.0.0.1:53": "127.0.0.1 53", "[::1]:53": "::1 53", "[fe80::1%eth0]:853": "fe80::1%eth0 853",
		"dns.example:53": "dns.example 53", "::1:53": "error", ":53": "error", "127.0.0.1": "error",
		"127.0.0.1:0": "error", "127.0.0.1:65536": "error", "[::1]53": "error", "127.0.0.1:http": "error",
	} {
		host, port, err := splitHostPort(s)
		got := fmt.Sprint(host, " ", port)
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("splitHostPort(%q) = %s, want %s", s, got, want)
		}
	}
}

// TestDecodeRawMessages: decoding errors come from the node walk, each with
// its line, the key or value, and what the struct expects there.
func TestDecodeRawMessages(t *testing.T) {
	for y, want := range map[string]string{
		"vips: []\nfoo: 1\nbar: 2\n": `invalid config: line 2: unknown key "foo" (expected one of: mode, interfaces, vips, health, return_via, tunnel)` +
			"\n  " + `line 3: unknown key "bar" (expected one of: mode, interfaces, vips, health, return_via, tunnel)`,
		"vips: {address: 192.0.2.10}\n":                      `invalid config: line 1: "a mapping": expected a list of VIPs`,
		"vips: []\nhealth: [1]\n":                            `invalid config: line 2: "a list": expected a mapping of keys`,
		"vips: []\ninterfaces: eth0\n":                       `invalid config: line 2: "eth0": expected a list of strings`,
		"mode: loopback\nmode: tunnel\nvips: []\n":           `invalid config: line 2: key "mode" already defined at line 1`,
		"vips: []\nreturn_via: {ports: [{port: 1, x: 2}]}\n": `invalid config: line 2: unknown key "x" (expected one of: port, protocol)`,
	} {
		if _, err := ParseConfig([]byte(y)); err == nil || err.Error() != want {
			t.Errorf("%q:\n got %v\nwant %s", y, err, want)
		}
	}
	// A YAML merge key and an alias decode like the mapping they name.
	cfg, err := ParseConfig([]byte("vips: [{<<: {address: 192.0.2.10}, ports: [{port: 80}]}]\nhealth: {checks: [&c {name: a, tcp: '127.0.0.1:80'}]}\n"))
	if err != nil || len(cfg.VIPs) != 1 || cfg.VIPs[0].Address.String() != "192.0.2.10" || len(cfg.VIPs[0].Ports) != 1 {
		t.Errorf("merge key: %+v %v", cfg, err)
	}
}
