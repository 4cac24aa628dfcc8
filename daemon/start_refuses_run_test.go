package daemon

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// TestRunStartRefusesWhatApplyRefuses (docs/daemon.md): a config apply
// would refuse makes `dsr-agent run` exit 2 at start, before READY and
// before any change to the host: an invalid config, and one the host
// refuses (a foreign route in return_via's table).
func TestRunStartRefusesWhatApplyRefuses(t *testing.T) {
	for _, c := range []struct {
		name, config string
		prepare      func(ns *netnstest.NS)
		want         string
	}{
		{name: "invalid", config: "mode: loopback\ninterfaces: [eth0]\nvips: [{address: 10.77.100.999}]\n",
			want: "vips[0].address"},
		{name: "foreign-route", config: "mode: loopback\ninterfaces: [eth0]\nvips: [{address: 10.77.100.1}]\n" +
			"return_via: {gateway: 10.77.0.1, ports: [{port: 443}]}\n",
			prepare: func(ns *netnstest.NS) {
				ns.Exec(t, "ip", "route", "add", "default", "via", "10.77.0.1", "dev", nic, "table", "8558")
			},
			want: "return_via.table"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := setupNS(t)
			if c.prepare != nil {
				c.prepare(ns)
			}
			before := hostView(t, ns)
			d := startDaemon(t, ns, t.TempDir(), c.config, "--resync", "1h")
			var err error
			select {
			case err = <-d.exited:
			case <-time.After(20 * time.Second):
				t.Fatalf("the daemon is still running with a config apply refuses:\n%s", d.log.String())
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("exit %v, want 2:\n%s", err, d.log.String())
			}
			if !strings.Contains(d.log.String(), c.want) {
				t.Errorf("the refusal does not name %s:\n%s", c.want, d.log.String())
			}
			for len(d.notes) > 0 {
				if n := <-d.notes; strings.HasPrefix(n, "READY=1") {
					t.Errorf("READY=1 sent for a refused config")
				}
			}
			if after := hostView(t, ns); after != before {
				t.Errorf("a refused start changed the host:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// TestRunStartAcceptsWithoutForeignRoute is the control of the refusal
// above: the same return_via config on a host without the foreign route
// starts, reaches READY and installs return_via's table.
func TestRunStartAcceptsWithoutForeignRoute(t *testing.T) {
	ns := setupNS(t)
	d := startDaemon(t, ns, t.TempDir(), "mode: loopback\ninterfaces: [eth0]\nvips: [{address: 10.77.100.1}]\n"+
		"return_via: {gateway: 10.77.0.1, ports: [{port: 443}]}\n", "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	if out := ns.Exec(t, "ip", "route", "show", "table", "8558"); !strings.Contains(out, "default via 10.77.0.1") {
		t.Errorf("return_via's table after start: %q", out)
	}
	d.stop()
}

// hostView is what a start could change: addresses, rules, routes, tables,
// and the ARP sysctls.
func hostView(t *testing.T, ns *netnstest.NS) string {
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-o", "addr", "show"}, {"ip", "rule", "show"}, {"ip", "-6", "rule", "show"},
		{"ip", "route", "show", "table", "all"}, {"nft", "list", "ruleset"},
	} {
		b.WriteString(ns.Exec(t, args[0], args[1:]...))
	}
	for _, dev := range []string{"all", nic} {
		for _, k := range []string{"arp_ignore", "arp_announce"} {
			b.WriteString(dev + "." + k + "=" + ns.Sysctl(t, "net", "ipv4", "conf", dev, k) + "\n")
		}
	}
	return b.String()
}
