package daemon

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// Real-kernel tests for issue 9: the daemon sees every drift that breaks ARP
// suppression, and survives the operator's accidents.

// repairLogged reports whether the daemon logged a repair of subject woken by
// trigger (and not by another one).
func repairLogged(log, subject, trigger string) bool {
	re := regexp.MustCompile(`msg="drift repaired".*subject=` + regexp.QuoteMeta(subject) + `.*trigger=` + regexp.QuoteMeta(trigger) + `(\s|$)`)
	return re.MatchString(log)
}

// TestRunSysctlResetSeen: a reset arp_ignore is seen by the sysctl poll, not
// by the periodic resync (an hour here), and repaired.
func TestRunSysctlResetSeen(t *testing.T) {
	ns := setupNS(t)
	d := startDaemon(t, ns, t.TempDir(), `mode: loopback
interfaces: [eth0]
vips: [{address: 10.77.100.1}]
health:
  listen: 10.77.0.2:8558
`, "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	for _, c := range []struct{ iface, key, reset, want string }{
		{"all", "arp_ignore", "0", "1"},
		{"all", "arp_announce", "0", "2"},
		{nic, "arp_ignore", "0", "1"},
	} {
		ns.Exec(t, "sysctl", "-qw", "net.ipv4.conf."+c.iface+"."+c.key+"="+c.reset)
		// Generous: the poll interval is 200 ms; the deadline is only there
		// to end the test, the benchmark measures the latency.
		eventually(t, 5*time.Second, c.iface+"."+c.key+" repaired", func() (bool, string) {
			v := ns.Sysctl(t, "net", "ipv4", "conf", c.iface, c.key)
			return v == c.want, c.key + "=" + v
		})
		subject := "net.ipv4.conf." + c.iface + "." + c.key
		eventually(t, 2*time.Second, "repair of "+subject+" logged with trigger sysctl", func() (bool, string) {
			return repairLogged(d.log.String(), subject, "sysctl"), d.log.String()
		})
	}
	c, metrics := nsGet(t, ns, "", "10.77.0.2:8558", "/metrics")
	if c != 200 || !strings.Contains(metrics, `dsr_agent_repairs_total{kind="sysctl-set"} 3`) ||
		!strings.Contains(metrics, `dsr_agent_reconciles_total{result="ok",trigger="sysctl"}`) {
		t.Fatalf("metrics %d:\n%s", c, grepLines(metrics, "dsr_agent_re"))
	}
	if strings.Contains(metrics, `trigger="resync"`) {
		t.Fatalf("a resync ran (the period is an hour):\n%s", grepLines(metrics, "dsr_agent_reconciles"))
	}
	d.stop()
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
