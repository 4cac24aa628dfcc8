package agent

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
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

// TestTunnelPrefixKernel (issue 21; runs in make test-tunnel's VM): tunnel
// mode with only a prefix. A client that encapsulates like a director (an
// IPIP device, the prefix routed into it) reaches a wildcard listener at
// addresses of the prefix; the reply leaves straight from that address.
// Strict rp_filter on `all`: the decapsulated packet passes only because
// tunl0 holds an IPv4 address (the prefix's first, put there by the agent)
// and its own rp_filter 2. The control: with that address deleted by hand,
// the same connection fails (fib_validate_source's no-address path drops
// it). The drift is named, repaired, and remove leaves nothing.
func TestTunnelPrefixKernel(t *testing.T) {
	requireTunnelModules(t)
	srv, cli := netnstest.New(t), netnstest.New(t)
	netnstest.Connect(t, srv, "eth0.100", []string{"10.78.0.2/24"}, cli, "eth0", []string{"10.78.0.1/24"})
	srv.Exec(t, "ip", "route", "add", "default", "via", "10.78.0.1")
	srv.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
	cli.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	cli.Exec(t, "ip", "link", "add", "t0", "type", "ipip", "local", "10.78.0.1", "remote", "10.78.0.2")
	cli.Exec(t, "ip", "link", "set", "t0", "up")
	cli.Exec(t, "ip", "route", "add", "203.0.113.0/24", "dev", "t0", "src", "10.78.0.1")
	h, err := OpenHostAt(filepath.Join(t.TempDir(), "state"), srv.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	th := &testHost{t: t, ns: srv, host: h}
	th.listen("tcp", ":80")
	dial := func(addr string) error {
		var err error
		cli.Do(t, func() {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
				if got := c.RemoteAddr().String(); got != addr {
					err = fmt.Errorf("connected to %s", got)
				}
				c.Close()
			}
		})
		return err
	}
	const cfg = "mode: tunnel\ninterfaces: [eth0.100]\nvips: [{prefix: 203.0.113.0/24, ports: [{port: 80}]}]\n"
	th.apply(cfg)
	th.requireInSync(cfg)
	th.requireAddr("tunl0", "203.0.113.0/32")
	if got := srv.Exec(t, "ip", "route", "show", "table", "local", "203.0.113.0/24"); !strings.Contains(got, "local 203.0.113.0/24 dev lo proto 213") {
		t.Errorf("local route: %q", got)
	}
	if got := srv.Exec(t, "nft", "list", "set", "ip", "dsr-agent", "vip_prefixes"); !strings.Contains(got, "203.0.113.0/24") {
		t.Errorf("MSS clamp set: %s", got)
	}
	for _, a := range []string{"203.0.113.1:80", "203.0.113.77:80", "203.0.113.254:80"} {
		if err := dial(a); err != nil {
			t.Errorf("through the tunnel to %s: %v", a, err)
		}
	}
	// The control: no IPv4 address on tunl0, the same packets are dropped.
	srv.Exec(t, "ip", "addr", "del", "203.0.113.0/32", "dev", "tunl0")
	if err := dial("203.0.113.77:80"); err == nil {
		t.Error("control: reached 203.0.113.77 with no address on tunl0; the test proves nothing")
	}
	r := th.status(cfg)
	if !slices.ContainsFunc(r.Differences, func(d Difference) bool { return d.Kind == DriftVIPMissing && d.Subject == "203.0.113.0" }) {
		t.Errorf("the missing tunl0 address is not a difference: %+v", r.Differences)
	}
	th.apply(cfg)
	th.requireInSync(cfg)
	if err := dial("203.0.113.77:80"); err != nil {
		t.Errorf("after repair: %v", err)
	}
	if _, err := h.Remove(); err != nil {
		t.Fatal(err)
	}
	if got := srv.Exec(t, "ip", "route", "show", "table", "local", "proto", "213"); got != "" {
		t.Errorf("routes left after remove: %q", got)
	}
	if got := srv.Exec(t, "ip", "addr", "show", "dev", "tunl0"); strings.Contains(got, "203.0.113.") {
		t.Errorf("tunl0 address left after remove: %s", got)
	}
}
