package daemon

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestRunListenerGrace: a VIP port without a listener turns /healthz 503
// ("no listener for VIP:PORT/PROTO") only once health.listener_grace after
// the daemon's start has passed, back to 200 when a service starts
// listening on the VIP (noticed by the listener poll, not the hour-long
// resync), and 503 again when it stops; /status, /metrics and `status`
// show it; the daemon never "repairs" it.
func TestRunListenerGrace(t *testing.T) {
	ns := setupNS(t)
	dir := t.TempDir()
	const grace = 2 * time.Second
	dsrAgentBinary(t) // built before the clock starts
	start := time.Now()
	d := startDaemon(t, ns, dir, fmt.Sprintf(`mode: loopback
interfaces: [eth0]
vips:
  - {address: 10.77.100.1, ports: [{port: 80}]}
health:
  listen: 10.77.0.2:8558
  listener_grace: %s
`, grace), "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	hz := "10.77.0.2:8558"
	eventually(t, time.Second, "healthz up within the grace period", healthIs(t, ns, hz, 200, "up"))
	if c, body := nsGet(t, ns, "", hz, "/status"); c != 200 || !strings.Contains(body, `"kind": "listener-missing"`) ||
		!strings.Contains(body, `"subject": "10.77.100.1:80/tcp"`) || !strings.Contains(body, `"listener_grace_ends"`) {
		t.Fatalf("/status within the grace period: %d\n%s", c, body)
	}
	if time.Since(start) >= grace {
		t.Fatalf("the check within the grace period came too late (%v): slow machine?", time.Since(start))
	}
	eventually(t, grace+3*time.Second, "healthz 503 after the grace period", healthIs(t, ns, hz, 503, "no listener for 10.77.100.1:80/tcp"))
	if el := time.Since(start); el < grace {
		t.Fatalf("503 after %v, before the grace period (%v) ended", el, grace)
	}
	metric := func(v string) func() (bool, string) {
		return func() (bool, string) {
			c, m := nsGet(t, ns, "", hz, "/metrics")
			return c == 200 && strings.Contains(m, `dsr_agent_listener_present{port="80",proto="tcp",vip="10.77.100.1"} `+v), m
		}
	}
	eventually(t, time.Second, "listener gauge 0", metric("0"))
	out, err := exec.Command("ip", "netns", "exec", ns.Name, dsrAgentBinary(t), "--config", d.cfgPath, "--state-dir", d.stateDir, "status").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "listener-missing     10.77.100.1:80/tcp") {
		t.Fatalf("status with the listener missing: %v\n%s", err, out)
	}

	// The service starts, on the VIP.
	var ln net.Listener
	ns.Do(t, func() { ln, err = net.Listen("tcp4", "10.77.100.1:80") })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	eventually(t, 4*time.Second, "healthz up with the listener", healthIs(t, ns, hz, 200, "up"))
	eventually(t, time.Second, "listener gauge 1", metric("1"))
	// And stops.
	ln.Close()
	eventually(t, 4*time.Second, "healthz 503 without the listener", healthIs(t, ns, hz, 503, "no listener for 10.77.100.1:80/tcp"))
	if strings.Contains(d.log.String(), "drift repaired") {
		t.Fatalf("the daemon changed the host for a listener:\n%s", d.log.String())
	}
	d.stop()
}
