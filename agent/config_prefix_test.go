package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/firewall"
)

// Issue 21.1: `vips: - prefix:` entries. Every refusal names the field, the
// value and what was expected; a valid one parses to Config.Prefixes with
// its ports.
func TestPrefixConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte("vips:\n  - prefix: 198.51.100.0/24\n    ports: [{port: 80}, {port: 53, protocol: udp}]\n  - prefix: '2001:db8:100::/64'\n  - address: 192.0.2.10\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Prefixes) != 2 || cfg.Prefixes[0].Prefix != netip.MustParsePrefix("198.51.100.0/24") || len(cfg.Prefixes[0].Ports) != 2 ||
		cfg.Prefixes[1].Prefix != netip.MustParsePrefix("2001:db8:100::/64") || len(cfg.VIPs) != 1 {
		t.Fatalf("parsed %+v", cfg)
	}
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"host prefix v4", "vips: [{prefix: 198.51.100.7/32}]\n", []string{"vips[0].prefix", `"198.51.100.7/32"`, "address: 198.51.100.7"}},
		{"host prefix v6", "vips: [{prefix: '2001:db8::7/128'}]\n", []string{"vips[0].prefix", `"2001:db8::7/128"`, "address: 2001:db8::7"}},
		{"host bits", "vips: [{prefix: 198.51.100.7/24}]\n", []string{"vips[0].prefix", "198.51.100.0/24"}},
		{"not a prefix", "vips: [{prefix: 198.51.100.7}]\n", []string{"vips[0].prefix", `"198.51.100.7"`, "network prefix"}},
		{"reserved", "vips: [{prefix: 127.0.0.0/16}]\n", []string{"vips[0].prefix", "loopback"}},
		{"multicast", "vips: [{prefix: 224.0.0.0/4}]\n", []string{"vips[0].prefix", "multicast"}},
		{"link-local v6", "vips: [{prefix: 'fe80::/64'}]\n", []string{"vips[0].prefix", "link-local"}},
		{"everything", "vips: [{prefix: 0.0.0.0/0}]\n", []string{"vips[0].prefix", "not every address"}},
		{"both keys", "vips: [{prefix: 198.51.100.0/24, address: 192.0.2.10}]\n", []string{"vips[0].address", `"192.0.2.10"`, "either address or prefix"}},
		{"real_ip", "vips: [{prefix: 198.51.100.0/24, real_ip: 192.0.2.21}]\n", []string{"vips[0].real_ip", "only with address"}},
		{"overlapping prefixes", "vips: [{prefix: 198.51.100.0/24}, {prefix: 198.51.100.128/25}]\n", []string{"vips[1].prefix", `"198.51.100.128/25"`, "vips[0].prefix 198.51.100.0/24"}},
		{"VIP inside", "vips: [{address: 198.51.100.9}, {prefix: 198.51.100.0/24}]\n", []string{"vips[1].prefix", `"198.51.100.0/24"`, "vips[0].address 198.51.100.9"}},
		{"bad port", "vips: [{prefix: 198.51.100.0/24, ports: [{port: 0}]}]\n", []string{"vips[0].ports[0].port", "1-65535"}},
		{"firewalld without ports", "mode: firewalld\nvips: [{prefix: 198.51.100.0/24}]\n", []string{"vips[0].ports", "at least one port"}},
		{"return_via gateway inside", "vips: [{prefix: 198.51.100.0/24}]\nreturn_via: {gateway: 198.51.100.1}\n", []string{"return_via.gateway", `"198.51.100.1"`, "not an address of prefix VIP 198.51.100.0/24"}},
		{"health inside", "vips: [{prefix: 198.51.100.0/24}]\nhealth: {listen: '198.51.100.21:8558'}\n", []string{"health.listen", "198.51.100.0/24"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(c.yaml))
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("ParseConfig = %v, want an invalid config", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// The host's checks: a prefix overlapping a connected subnet (the NIC's
// 198.51.100.21/24) or holding a gateway is refused by Resolve, before
// anything changes, naming the entry.
func TestPrefixHostChecks(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"connected subnet", "vips: [{address: 192.0.2.10}, {prefix: 198.51.100.128/25}]\n", []string{"vips[1].prefix", `"198.51.100.128/25"`, "connected subnets", "198.51.100.0/24 on eth0.100"}},
		{"wider than the subnet", "vips: [{prefix: 198.51.0.0/16}]\n", []string{"vips[0].prefix", "connected subnets"}},
		{"gateway", "vips: [{prefix: 203.0.113.0/24}]\n", []string{"vips[0].prefix", "gateway", "203.0.113.1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newSimHost()
			h.facts.Gateways[netip.MustParseAddr("203.0.113.1")] = true
			cfg := mustConfig(t, "mode: loopback\ninterfaces: [eth0.100]\n"+c.yaml)
			before := h.snapshot()
			_, err := Resolve(cfg, h.facts)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Resolve = %v, want an invalid config", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if h.snapshot() != before {
				t.Error("the host changed")
			}
		})
	}
}

// The daemon's listener watcher follows the prefixes' ports too (their
// redirect targets in firewalld mode).
func TestListenerPortsIncludePrefixes(t *testing.T) {
	for _, c := range []struct {
		yaml string
		want string
	}{
		{"mode: loopback\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/24, ports: [{port: 443}, {port: 53, protocol: udp}]}]\n", "[{tcp 443} {udp 53}]"},
		{"mode: firewalld\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10, ports: [{port: 80}]}, {prefix: 203.0.113.0/24, ports: [{port: 443, to_port: 8443}]}]\n", "[{tcp 80} {tcp 8443}]"},
	} {
		_, d := newSimHost().plan(t, mustConfig(t, c.yaml))
		if got := fmt.Sprint(listenerPorts(d)); got != c.want {
			t.Errorf("%s: listener ports %s, want %s", c.yaml, got, c.want)
		}
	}
}

// TestConnectionTargets: the weight's connections signal and drain --wait
// count connections to every served VIP and prefix where they are local,
// and behind a redirect (never local) to the TCP ports their traffic is
// delivered to, each once.
func TestConnectionTargets(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"mode: loopback\nvips: [{address: 192.0.2.10, ports: [{port: 80}]}, {address: 2001:db8::10, ports: [{port: 443}]}, {prefix: 203.0.113.0/24, ports: [{port: 443}]}, {prefix: 2001:db8:100::/64}]\n",
			"[192.0.2.10/32 2001:db8::10/128 203.0.113.0/24 2001:db8:100::/64] []"},
		{"mode: arptables\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/24, ports: [{port: 443}]}]\n", "[203.0.113.0/24] []"},
		{"mode: firewalld\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10, ports: [{port: 80}]}, {address: 2001:db8::10, ports: [{port: 443, to_port: 8443}, {port: 80}]}, {prefix: 203.0.113.0/24, ports: [{port: 443, to_port: 8443}, {port: 53, protocol: udp}]}]\n",
			"[] [80 8443]"},
	} {
		_, d := newSimHost().plan(t, mustConfig(t, c.yaml))
		if prefixes, ports := d.ConnectionTargets(); fmt.Sprint(prefixes, ports) != c.want {
			t.Errorf("%s: connection targets %v %v, want %s", c.yaml, prefixes, ports, c.want)
		}
	}
}

// TestTunnelPrefixResolve: tunnel mode with prefixes (issue 21). Each
// prefix is a local route; the MSS clamp of its family covers it; tunl0
// gets the first IPv4 prefix's first address when no IPv4 single VIP gives
// it one (loose rp_filter drops decapsulated packets on a device without an
// IPv4 address), and nothing more when one does; both tunnel devices come
// up for their family; the dry run says all of it.
func TestTunnelPrefixResolve(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		addrs      string
		clamp4     string
		clamp6     string
		dry        []string
	}{
		{"prefixes only", "mode: tunnel\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/24}, {prefix: 198.18.0.0/15}, {prefix: '2001:db8:100::/64'}]\n",
			"[tunl0 203.0.113.0/32]", "[] [203.0.113.0/24 198.18.0.0/15]", "[] [2001:db8:100::/64]",
			[]string{"ip route add local 203.0.113.0/24 dev lo table local proto 213", "ip -6 route add local 2001:db8:100::/64 dev lo table local proto 213",
				"ip addr add 203.0.113.0/32 dev tunl0", "ip saddr @vip_prefixes", "ip6 saddr @vip_prefixes"}},
		{"with an IPv4 VIP", "mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {prefix: 203.0.113.0/24}]\n",
			"[tunl0 192.0.2.10/32]", "[192.0.2.10] [203.0.113.0/24]", "",
			[]string{"ip route add local 203.0.113.0/24 dev lo table local proto 213", "ip addr add 192.0.2.10/32 dev tunl0"}},
		{"IPv6 prefix only", "mode: tunnel\ninterfaces: [eth0.100]\nvips: [{prefix: '2001:db8:100::/64'}]\n",
			"[]", "", "[] [2001:db8:100::/64]",
			[]string{"ip -6 route add local 2001:db8:100::/64 dev lo table local proto 213", "ip6tnl0"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newSimHost()
			p, d := h.plan(t, mustConfig(t, c.yaml))
			var addrs []string
			for _, a := range d.Addrs {
				addrs = append(addrs, a.Link+" "+a.Prefix.String())
			}
			if got := "[" + strings.Join(addrs, " ") + "]"; got != c.addrs {
				t.Errorf("addresses %s, want %s", got, c.addrs)
			}
			if fmt.Sprint(d.LocalPrefixes) != fmt.Sprint(prefixesOf(d)) || len(d.LocalPrefixes) == 0 {
				t.Errorf("local prefixes %v, want every prefix", d.LocalPrefixes)
			}
			for fam, want := range map[bool]string{false: c.clamp4, true: c.clamp6} {
				spec, ok := d.Tables[tableFamily(netip.MustParseAddr(map[bool]string{false: "192.0.2.1", true: "2001:db8::1"}[fam]))]
				got := ""
				if ok {
					m := spec.(*firewall.MSSTable)
					got = fmt.Sprint(m.VIPs, m.Prefixes)
				}
				if got != want {
					t.Errorf("ipv6=%v clamp %q, want %q", fam, got, want)
				}
			}
			if d.Tunnel == nil || d.Tunnel.IPv4 != (c.clamp4 != "") || d.Tunnel.IPv6 != (c.clamp6 != "") {
				t.Errorf("tunnel spec %+v", d.Tunnel)
			}
			if got := strings.Contains(fmt.Sprint(d.Sysctls), "tunl0"); got != (c.clamp4 != "") {
				t.Errorf("tunl0's rp_filter in the sysctls: %v, want %v: %v", got, c.clamp4 != "", d.Sysctls)
			}
			for _, w := range c.dry {
				if !strings.Contains(p.String(), w) {
					t.Errorf("dry run lacks %q:\n%s", w, p)
				}
			}
		})
	}
}

func prefixesOf(d *Desired) (out []netip.Prefix) {
	for _, s := range d.Served {
		if s.IsPrefix {
			out = append(out, s.Prefix)
		}
	}
	return out
}
