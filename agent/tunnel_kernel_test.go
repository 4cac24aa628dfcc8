package agent

import (
	"os"
	"strings"
	"testing"

	"github.com/dsr-agent/dsr-agent/tunnel"
)

// requireTunnelModules loads ipip, ip6_tunnel and fou or skips; with
// DSR_TUNNEL_REQUIRE=1 (the VM run) a skip is a failure. This host's kernel
// has none of them: these tests run for real in `make test-tunnel`.
func requireTunnelModules(t testing.TB) {
	t.Helper()
	for _, m := range []string{tunnel.ModIPIP, tunnel.ModIP6Tnl, tunnel.ModFou} {
		if tunnel.ModuleLoaded(m) {
			continue
		}
		if err := tunnel.LoadStep(m).Apply(nil); err != nil {
			if os.Getenv("DSR_TUNNEL_REQUIRE") == "1" {
				t.Fatalf("%v (DSR_TUNNEL_REQUIRE=1)", err)
			}
			t.Skipf("kernel without tunnel modules: %v", err)
		}
	}
}

const tunnelCfg = "mode: tunnel\ninterfaces: [eth0.100]\nvips: [{address: 192.0.2.10}, {address: '2001:db8::10'}]\n"
const tunnelGUECfg = tunnelCfg + "tunnel: {encap: gue, port: 6080, mss: 1400}\n"

// Mode tunnel on the real kernel: the decapsulation devices up, IPv4 VIPs
// on tunl0 and IPv6 ones on lo, rp_filter loose where the kernel would drop
// (strict `all` is kept: tunl0's own 2 makes the maximum loose), the MSS
// clamp, the GUE port; each drift found and repaired; remove restores the
// host, foreign fou ports and tables untouched.
func TestTunnelModeKernel(t *testing.T) {
	requireTunnelModules(t)
	th := newTestHost(t)
	th.ns.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
	th.ns.Exec(t, "ip", "fou", "add", "port", "7777", "gue")
	foreign := th.foreign()
	tunl0Before := th.sysctl("tunl0", "rp_filter")

	th.apply(tunnelCfg)
	th.requireInSync(tunnelCfg)
	if out := th.ns.Exec(t, "ip", "-o", "link", "show", "tunl0"); !strings.Contains(out, ",UP") {
		t.Errorf("tunl0 not up: %s", out)
	}
	if out := th.ns.Exec(t, "ip", "-o", "link", "show", "ip6tnl0"); !strings.Contains(out, ",UP") {
		t.Errorf("ip6tnl0 not up: %s", out)
	}
	th.requireAddr("tunl0", "192.0.2.10/32")
	th.requireAddr("lo", "2001:db8::10/128")
	if all, dev := th.sysctl("all", "rp_filter"), th.sysctl("tunl0", "rp_filter"); all != "1" || dev != "2" {
		t.Errorf("rp_filter all=%s tunl0=%s, want all kept at 1 and tunl0 2 (max = loose)", all, dev)
	}
	if got := th.ns.Exec(t, "nft", "list", "table", "ip", "dsr-agent"); !strings.Contains(got, "tcp option maxseg size set 1440") {
		t.Errorf("IPv4 MSS clamp (1500 - 20 IPIP - 40): %s", got)
	}
	if got := th.ns.Exec(t, "nft", "list", "table", "ip6", "dsr-agent"); !strings.Contains(got, "tcp option maxseg size set 1400") {
		t.Errorf("IPv6 MSS clamp (1500 - 40 - 60): %s", got)
	}

	th.apply(tunnelGUECfg)
	th.requireInSync(tunnelGUECfg)
	fou := th.ns.Exec(t, "ip", "fou", "show")
	if !strings.Contains(fou, "port 6080 gue") || !strings.Contains(th.ns.Exec(t, "ip", "-6", "fou", "show"), "port 6080 gue") {
		t.Errorf("GUE ports: %s", fou)
	}

	th.requireDrift(tunnelGUECfg, "tunnel-missing", "ip", "link", "set", "tunl0", "down")
	th.requireDrift(tunnelGUECfg, "tunnel-missing", "ip", "fou", "del", "port", "6080")
	th.requireDrift(tunnelGUECfg, "sysctl-wrong", "sysctl", "-qw", "net.ipv4.conf.tunl0.rp_filter=1")
	th.requireDrift(tunnelGUECfg, "vip-missing", "ip", "addr", "del", "192.0.2.10/32", "dev", "tunl0")
	th.requireDrift(tunnelGUECfg, "table-wrong", "nft", "flush", "chain", "ip", "dsr-agent", "output")

	if _, err := th.host.Remove(); err != nil {
		t.Fatal(err)
	}
	if out := th.ns.Exec(t, "ip", "-o", "link", "show", "tunl0"); strings.Contains(out, ",UP") {
		t.Errorf("tunl0 still up after remove: %s", out)
	}
	if got := th.ns.Exec(t, "ip", "fou", "show"); strings.Contains(got, "6080") || !strings.Contains(got, "port 7777 gue") {
		t.Errorf("fou after remove: %s (want 6080 gone, the foreign 7777 kept)", got)
	}
	if got := th.sysctl("tunl0", "rp_filter"); got != tunl0Before {
		t.Errorf("tunl0 rp_filter after remove = %s, want %s", got, tunl0Before)
	}
	th.requireNoVIPs()
	if got := th.foreign(); got != foreign {
		t.Errorf("foreign state changed:\n%s\nwant:\n%s", got, foreign)
	}
}
