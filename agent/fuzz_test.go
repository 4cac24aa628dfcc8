package agent

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseConfig: any bytes give a config or an invalid-config error that
// says what is wrong, never a panic, never a config with zero-valued VIPs or
// ports, and never an unbounded error message.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		"", "vips: []\n", "mode: firewalld\nvips: [{address: 192.0.2.10, ports: [{port: 80, to_port: 8080}]}]\n",
		"mode: arptables\ninterfaces: [eth0]\nvips: [{address: 192.0.2.10, real_ip: 198.51.100.2}]\n",
		"vips: [{address: '2001:db8::10'}]\nhealth: {listen: '192.0.2.21:8558', allowed_sources: [10.0.0.0/8], checks: [{name: web, tcp: '127.0.0.1:80'}], agent_check: {listen: '192.0.2.21:3333'}}\n",
		"vips: [{address: 192.0.2.10, ports: [{port: 1.5}]}]\n", "~", "---\n---\n", "vips: *a\n", "{vips: [&a {address: x}, *a]}",
		"vips: !!binary AAAA\n", "vips: [{address: 192.0.2.10, ports: [{port: 0x50}]}]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error does not wrap ErrInvalidConfig: %v", err)
			}
			if n := strings.Count(err.Error(), "\n"); n > maxErrorLines+1 {
				t.Fatalf("%d error lines", n)
			}
			return
		}
		for _, v := range cfg.VIPs {
			if !v.Address.IsValid() {
				t.Fatalf("accepted a VIP without an address: %q", data)
			}
			for _, p := range v.Ports {
				if p.Port == 0 || p.ToPort == 0 || (p.Protocol != "tcp" && p.Protocol != "udp") {
					t.Fatalf("accepted port %+v: %q", p, data)
				}
			}
		}
		switch cfg.Mode {
		case ModeLoopback, ModeARPTables, ModeFirewalld, ModeTunnel:
		default:
			t.Fatalf("accepted mode %q", cfg.Mode)
		}
	})
}

// FuzzParseState: any state file content is either accepted as
// well-formed (every entry usable) or reported as corrupt; never a panic.
func FuzzParseState(f *testing.F) {
	for _, seed := range []string{
		"{}", "null", "", `{"saved_sysctls": {"net/ipv4/conf/all/arp_ignore": "0"}, "addresses": [{"link": "lo", "prefix": "192.0.2.10/32"}]}`,
		`{"addresses": 5}`, `{"saved_sysctls": {"kernel/x": "1"}}`, `{} {}`, `[1]`, `{"lost_sysctls": ["a"]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Ownership{SavedSysctls: map[string]string{}}
		if err := parseState(data, s); err != nil {
			return
		}
		if s.SavedSysctls == nil {
			t.Fatal("accepted state without a sysctl map")
		}
		for _, a := range s.Addresses {
			s.addAddr(a.Link, a.Prefix) // must not panic
			if !s.owns(a.Link, a.Prefix) {
				t.Fatalf("owned address %v lost", a)
			}
		}
	})
}
