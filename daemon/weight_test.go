package daemon

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
	"github.com/dsr-agent/dsr-agent/internal/testdaemon"
)

// TestRunWeightHAProxy: a real HAProxy (Debian's) in the namespace checks
// the daemon's agent-check, and the server's weight in its stats follows
// the load. The exec check's dynamic weight goes from 100 (exit 102) to 70
// (exit 72): HAProxy's weight steps down through values in between
// (smoothing: 2s) and lands on 70. Six established connections to the
// VIP against connections: 10 (headroom 40) take it to 40, counted by
// sock_diag; closing them brings it back to 70. A reload without the
// weight answers 100%, which gives HAProxy the configured weight back.
func TestRunWeightHAProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs haproxy against the daemon for about 30s")
	}
	testdaemon.NeedHAProxy(t)
	ns := setupNS(t)
	dir := t.TempDir()
	code := filepath.Join(dir, "code")
	setExit := func(n int) {
		t.Helper()
		if err := os.WriteFile(code, []byte(strconv.Itoa(n)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setExit(102) // up, weight 100
	script := filepath.Join(dir, "app.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexit $(cat "+code+")\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := `mode: loopback
interfaces: [eth0]
vips:
  - {address: 10.77.100.1, ports: [{port: 80}]}
health:
  listen: 10.77.0.2:8558
  checks:
    - {name: app, exec: [/bin/sh, ` + script + `], interval: 200ms, timeout: 200ms, rise: 1, fall: 1}
  agent_check:
    listen: 10.77.0.2:3333
`
	d := startDaemon(t, ns, dir, base+"    weight: {exec: app, connections: 10, smoothing: 2s}\n", "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	// The service on the VIP: connections to it wait in its accept queue,
	// established (the VIP is there now).
	var ln net.Listener
	var err error
	ns.Do(t, func() { ln, err = net.Listen("tcp4", "10.77.100.1:80") })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	// HAProxy checks the health port (so "check" has something to connect
	// to) and asks the agent on 10.77.0.2:3333.
	hap := testdaemon.StartHAProxy(t, testdaemon.AgentCheck{
		NS: ns.Name, Bind: "127.0.0.1:8081", Server: "10.77.0.2:8558", AgentPort: "3333",
		Inter: 200 * time.Millisecond, ServerOpts: "weight 100",
	})

	// follow polls HAProxy's weight until it is want and returns the
	// distinct weights seen on the way.
	follow := func(what string, want int) []int {
		t.Helper()
		var seen []int
		deadline := time.Now().Add(30 * time.Second)
		last := ""
		for time.Now().Before(deadline) {
			status := hap.Field("status")
			last = hap.Field("weight")
			if w, err := strconv.Atoi(last); err == nil && strings.HasPrefix(status, "UP") {
				if len(seen) == 0 || seen[len(seen)-1] != w {
					seen = append(seen, w)
				}
				if w == want {
					t.Logf("%s: haproxy weights %v", what, seen)
					return seen
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		_, st := nsGet(t, ns, "", "10.77.0.2:8558", "/status")
		t.Fatalf("%s: haproxy weight %q (status %q), want %d; seen %v\n/status: %s", what, last, hap.Field("status"), want, seen, st)
		return nil
	}
	// HAProxy starts at its configured 100 anyway: wait for the daemon's
	// first sample and for the exec check's weight to be part of it.
	eventually(t, 10*time.Second, "the first weight with the exec signal", func() (bool, string) {
		w := daemonWeight(t, ns)
		return w != nil && w.Percent == 100 && w.Signals["exec"] == 100, fmt.Sprintf("%+v", w)
	})
	follow("exec weight 100", 100)

	setExit(72) // weight 70
	seen := follow("exec weight 70", 70)
	between := slices.DeleteFunc(slices.Clone(seen), func(w int) bool { return w <= 71 || w >= 100 })
	if len(between) < 2 {
		t.Fatalf("haproxy's weight went %v from 100 to 70: want at least two steps in between (smoothing)", seen)
	}
	if !slices.IsSortedFunc(seen, func(a, b int) int { return b - a }) {
		t.Fatalf("haproxy's weight went %v from 100 to 70: not monotonic", seen)
	}

	// Six connections to the VIP against a capacity of ten: headroom 40.
	var conns []net.Conn
	for range 6 {
		var c net.Conn
		ns.Do(t, func() {
			dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("10.77.0.2")}}
			c, err = dl.Dial("tcp4", "10.77.100.1:80")
		})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	follow("6 of 10 connections", 40)
	w := daemonWeight(t, ns)
	if w == nil || w.Connections == nil || *w.Connections != 6 || w.Signals["connections"] != 40 || w.Signals["exec"] != 70 {
		t.Fatalf("/status weight %+v, want 6 connections (headroom 40) and exec 70", w)
	}
	if _, m := nsGet(t, ns, "", "10.77.0.2:8558", "/metrics"); !strings.Contains(m, "\ndsr_agent_weight_connections 6\n") ||
		!strings.Contains(m, "\ndsr_agent_weight_percent 40\n") {
		t.Fatalf("/metrics lacks the weight:\n%s", m)
	}
	for _, c := range conns {
		c.Close()
	}
	follow("connections closed", 70)

	// The weight turned off by a reload: 100% gives the configured weight
	// back (HAProxy keeps a weight nobody mentions).
	if err := os.WriteFile(d.cfgPath, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitNote("READY=1", 10*time.Second)
	follow("weight off", 100)
	if w := daemonWeight(t, ns); w != nil {
		t.Fatalf("/status weight %+v after the weight was turned off", w)
	}
	if _, m := nsGet(t, ns, "", "10.77.0.2:8558", "/metrics"); strings.Contains(m, "\ndsr_agent_weight_percent ") {
		t.Fatalf("/metrics still has the weight:\n%s", m)
	}
	d.stop()
}

type statusWeight struct {
	Percent     int                `json:"percent"`
	Connections *int               `json:"connections"`
	Signals     map[string]float64 `json:"signals"`
}

// daemonWeight reads the weight from the daemon's /status.
func daemonWeight(t *testing.T, ns *netnstest.NS) *statusWeight {
	t.Helper()
	c, body := nsGet(t, ns, "", "10.77.0.2:8558", "/status")
	var doc struct {
		Weight *statusWeight `json:"weight"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("/status: %d %v\n%s", c, err, body)
	}
	return doc.Weight
}
