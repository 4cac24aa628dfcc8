package daemon

import (
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/health"
	"github.com/dsr-agent/dsr-agent/internal/netnstest"
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
	// Reset again right after the repair, before the next poll: the value
	// read last (the 0 that triggered the repair) equals the new one, yet it
	// must be seen. Done from a thread in the namespace to be quick.
	const allIgnore = "/proc/sys/net/ipv4/conf/all/arp_ignore"
	for range 3 {
		ns.Do(t, func() {
			if err := os.WriteFile(allIgnore, []byte("0"), 0); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
				if b, _ := os.ReadFile(allIgnore); strings.TrimSpace(string(b)) == "1" {
					break
				}
			}
			if err := os.WriteFile(allIgnore, []byte("0"), 0); err != nil {
				t.Fatal(err)
			}
		})
		eventually(t, 5*time.Second, "second reset right after a repair repaired", func() (bool, string) {
			v := ns.Sysctl(t, "net", "ipv4", "conf", "all", "arp_ignore")
			return v == "1", "arp_ignore=" + v
		})
	}
	// The NIC re-created (the link watcher repairs its fresh defaults): the
	// poll must follow the new interface's sysctls, not the deleted ones.
	ns.Exec(t, "ip", "link", "del", nic)
	ns.AddDummy(t, nic, "10.77.0.2/24")
	eventually(t, 5*time.Second, "re-created NIC configured", func() (bool, string) {
		v := ns.Sysctl(t, "net", "ipv4", "conf", nic, "arp_ignore")
		return v == "1", "arp_ignore=" + v
	})
	// Only a repair woken by the poll proves it follows the new file; a
	// pass still queued from the re-creation (trigger link, address) may
	// take a reset first. So reset, await the repair, and again until one
	// is logged with trigger sysctl: each round awaits an event, none sleeps.
	eventually(t, 10*time.Second, "repair on the re-created NIC logged with trigger sysctl", func() (bool, string) {
		ns.Exec(t, "sysctl", "-qw", "net.ipv4.conf."+nic+".arp_announce=1")
		eventually(t, 5*time.Second, "re-created NIC's arp_announce repaired", func() (bool, string) {
			v := ns.Sysctl(t, "net", "ipv4", "conf", nic, "arp_announce")
			return v == "2", "arp_announce=" + v
		})
		// A log line that follows its write late is found by the next round.
		return repairLogged(d.log.String(), "net.ipv4.conf."+nic+".arp_announce", "sysctl"), d.log.String()
	})
	c, metrics := nsGet(t, ns, "", "10.77.0.2:8558", "/metrics")
	if c != 200 || !strings.Contains(metrics, `dsr_agent_repairs_total{kind="sysctl-set"}`) ||
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

// reconciles returns the value of dsr_agent_reconciles_total for trigger
// (summed over results), read from /metrics.
func reconciles(t *testing.T, ns *netnstest.NS, addr, trigger string) int {
	t.Helper()
	c, m := nsGet(t, ns, "", addr, "/metrics")
	if c != 200 {
		t.Fatalf("metrics: %d %s", c, m)
	}
	n := 0
	re := regexp.MustCompile(`(?m)^dsr_agent_reconciles_total\{result="[a-z]+",trigger="` + regexp.QuoteMeta(trigger) + `"\} (\d+)$`)
	for _, sm := range re.FindAllStringSubmatch(m, -1) {
		v, _ := strconv.Atoi(sm[1])
		n += v
	}
	return n
}

// TestRunDormantTable: `nft add table ... { flags dormant; }` switches the
// ARP filter off while its rules still list. The nftables monitor must wake
// the loop for that table update, and the pass must switch it back on.
func TestRunDormantTable(t *testing.T) {
	ns := setupNS(t)
	d := startDaemon(t, ns, t.TempDir(), `mode: arptables
interfaces: [eth0]
vips: [{address: 10.77.100.1}]
health:
  listen: 10.77.0.2:8558
`, "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	hz := "10.77.0.2:8558"
	eventually(t, 3*time.Second, "healthz up", healthIs(t, ns, hz, 200, "up"))
	before := reconciles(t, ns, hz, "nftables")
	ns.Exec(t, "nft", "add", "table", "arp", "dsr-agent", "{ flags dormant; }")
	eventually(t, 5*time.Second, "nftables monitor woke the loop for the table update", func() (bool, string) {
		n := reconciles(t, ns, hz, "nftables")
		return n > before, fmt.Sprintf("reconciles{trigger=nftables} %d -> %d", before, n)
	})
	eventually(t, 5*time.Second, "dormant table switched back on", func() (bool, string) {
		out, _ := ns.ExecErr("nft", "list", "table", "arp", "dsr-agent")
		return !strings.Contains(out, "dormant") && strings.Contains(out, "drop"), out
	})
	d.stop()
}

// TestRunEmptyConfigReloadRefused: a config truncated to nothing (or to
// comments only) and a SIGHUP must not tear the VIPs down: the reload is
// refused with the reason logged, VIPs and health stay.
func TestRunEmptyConfigReloadRefused(t *testing.T) {
	ns := setupNS(t)
	d := startDaemon(t, ns, t.TempDir(), `mode: loopback
interfaces: [eth0]
vips: [{address: 10.77.100.1}, {address: 10.77.100.2}, {address: fd00:77::100}]
health:
  listen: 10.77.0.2:8558
`, "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	hz := "10.77.0.2:8558"
	eventually(t, 3*time.Second, "healthz up", healthIs(t, ns, hz, 200, "up"))
	for i, body := range []string{"", "# emptied by configuration management\n\n# nothing else\n"} {
		if err := os.WriteFile(d.cfgPath, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = d.cmd.Process.Signal(syscall.SIGHUP)
		if s := d.waitNote("READY=1", 5*time.Second); !strings.Contains(s, "refused") {
			t.Fatalf("reload of %q answered %q, want refused", body, s)
		}
		eventually(t, 2*time.Second, "refused reload logged with its reason", func() (bool, string) {
			return strings.Count(d.log.String(), `level=ERROR msg="reload refused`) == i+1 && strings.Contains(d.log.String(), "empty"), d.log.String()
		})
		for _, c := range []string{"10.77.100.1/32", "10.77.100.2/32", "fd00:77::100/128"} {
			if ok, out := hasAddr(ns, "lo", c); !ok {
				t.Fatalf("reload of %q removed %s:\n%s", body, c, out)
			}
		}
		if v := ns.Sysctl(t, "net", "ipv4", "conf", "all", "arp_ignore"); v != "1" {
			t.Fatalf("reload of %q reset arp_ignore to %s", body, v)
		}
		eventually(t, 2*time.Second, "health still served", healthIs(t, ns, hz, 200, "up"))
	}
	// The running config is still enforced after the refusal.
	ns.Exec(t, "ip", "addr", "del", "10.77.100.2/32", "dev", "lo")
	eventually(t, 3*time.Second, "VIP of the running config repaired", func() (bool, string) { return hasAddr(ns, "lo", "10.77.100.2/32") })
	d.stop()
}

// unitNOFILE is LimitNOFILE from the packaged unit: the flood test runs the
// daemon under the limit it gets in production.
func unitNOFILE(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("../packaging/dsr-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^LimitNOFILE=(\d+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("packaging/dsr-agent.service sets no LimitNOFILE=N")
	}
	return string(m[1])
}

func openFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// startFlood runs the flood helper inside ns: conns connections from src to
// target, each reconnecting after pause once the server closes it. A process
// gets at most 10,000 of them (the hard descriptor limit here is 20,000 and
// cannot be raised), so a larger flood is several processes.
func startFlood(t testing.TB, ns *netnstest.NS, src, target string, conns int, pause time.Duration) []<-chan string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var out []<-chan string
	for left := conns; left > 0; left -= 10000 {
		_, lines := startHelper(t, []string{"ip", "netns", "exec", ns.Name, self}, "flood", nil,
			"DSR_AGENT_FLOOD_TARGET="+target, "DSR_AGENT_FLOOD_SRC="+src,
			fmt.Sprintf("DSR_AGENT_FLOOD_CONNS=%d", min(left, 10000)), "DSR_AGENT_FLOOD_PAUSE="+pause.String())
		out = append(out, lines)
	}
	return out
}

// TestRunConnectionFlood: thousands of connections from outside
// allowed_sources, to the health and the agent-check port, each one retried
// as soon as it closes. The daemon, under the unit's LimitNOFILE, stays up
// with its descriptors under the connection caps, answers an allowed source,
// and still repairs a sysctl reset.
func TestRunConnectionFlood(t *testing.T) {
	ns := setupNS(t)
	ns.Exec(t, "ip", "addr", "add", "10.77.0.3/24", "dev", nic) // allowed
	ns.Exec(t, "ip", "addr", "add", "10.77.0.9/24", "dev", nic) // attacker
	hz, agentAddr := "10.77.0.2:8558", "10.77.0.2:3333"
	d := startDaemonWrapped(t, ns, t.TempDir(), `mode: loopback
interfaces: [eth0]
vips: [{address: 10.77.100.1}]
health:
  listen: 10.77.0.2:8558
  allowed_sources: [10.77.0.3/32]
  agent_check: {listen: "10.77.0.2:3333"}
`, []string{"prlimit", "--nofile=" + unitNOFILE(t) + ":" + unitNOFILE(t)}, nil, "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	eventually(t, 3*time.Second, "healthz up", healthFrom(t, ns, "10.77.0.3", hz, 200, "up"))
	pid := d.cmd.Process.Pid
	base := openFDs(pid)

	httpFlood := startFlood(t, ns, "10.77.0.9", hz, 3000, 20*time.Millisecond)
	agentFlood := startFlood(t, ns, "10.77.0.9", agentAddr, 1000, 20*time.Millisecond)
	// The caps, plus what the daemon had before, plus slack for the
	// connections being accepted and reset at this instant.
	limit := base + health.MaxHTTPConns + health.MaxAgentConns + 16
	maxFDs := 0
	sample := func() {
		maxFDs = max(maxFDs, openFDs(pid))
		if maxFDs > limit {
			t.Fatalf("daemon holds %d descriptors, above %d (%d before the flood + the connection caps)", maxFDs, limit, base)
		}
	}
	// Deadlines below are generous: the attacker shares the CPU with the
	// daemon here; BenchmarkFlood measures the latencies.
	for range 20 { // 2 s of flood before anything is asked
		sample()
		time.Sleep(100 * time.Millisecond)
	}
	eventually(t, 15*time.Second, "allowed /healthz answers during the flood", func() (bool, string) {
		sample()
		return healthFrom(t, ns, "10.77.0.3", hz, 200, "up")()
	})
	eventually(t, 15*time.Second, "allowed agent-check answers during the flood", func() (bool, string) {
		sample()
		return agentFrom(t, ns, "10.77.0.3", agentAddr)
	})
	ns.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=0")
	eventually(t, 15*time.Second, "sysctl reset repaired during the flood", func() (bool, string) {
		sample()
		v := ns.Sysctl(t, "net", "ipv4", "conf", "all", "arp_ignore")
		return v == "1", "arp_ignore=" + v
	})
	select {
	case err := <-d.exited:
		t.Fatalf("daemon exited during the flood: %v", err)
	default:
	}
	t.Logf("daemon descriptors: %d before, at most %d during the flood (limit %s); flood: http %s, agent %s",
		base, maxFDs, unitNOFILE(t), lastLine(httpFlood), lastLine(agentFlood))
	_, metrics := nsGet(t, ns, "10.77.0.3", hz, "/metrics")
	if !strings.Contains(metrics, `dsr_agent_connections_rejected_total{listener="http",reason="source"}`) ||
		!strings.Contains(metrics, `dsr_agent_connections_rejected_total{listener="agent",reason="source"}`) {
		t.Fatalf("rejections not counted:\n%s", grepLines(metrics, "rejected"))
	}
	d.stop()
}

// agentFrom reads one agent-check answer from src.
func agentFrom(t testing.TB, ns *netnstest.NS, src, addr string) (bool, string) {
	var conn net.Conn
	var err error
	ns.Do(t, func() {
		d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		conn, err = d.Dial("tcp", addr)
	})
	if err != nil {
		return false, err.Error()
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(conn)
	return err == nil && string(b) == "up ready\n", fmt.Sprintf("%q %v", b, err)
}

// lastLine drains each helper's lines and returns the last one of each.
func lastLine(helpers []<-chan string) string {
	var out []string
	for _, lines := range helpers {
		last := ""
	drain:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break drain
				}
				last = l
			default:
				break drain
			}
		}
		out = append(out, last)
	}
	return strings.Join(out, "; ")
}
