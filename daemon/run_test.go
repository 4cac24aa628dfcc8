package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// These tests run the real binary (`dsr-agent run`) inside a throwaway
// network namespace, with NOTIFY_SOCKET pointing at a socket the test reads,
// and break the host the way other tools do.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func dsrAgentBinary(t testing.TB) string {
	t.Helper()
	// A prebuilt binary (e.g. an older release, to benchmark before/after).
	if p := os.Getenv("DSR_AGENT_TEST_BINARY"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dsr-agent-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "dsr-agent")
		_, file, _, _ := runtime.Caller(0)
		out, err := exec.Command("go", "build", "-o", binPath, filepath.Join(filepath.Dir(file), "..", "cmd", "dsr-agent")).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h))
	}
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type runningDaemon struct {
	t        testing.TB
	ns       *netnstest.NS
	cmd      *exec.Cmd
	cfgPath  string
	stateDir string
	log      *syncBuf
	notes    chan string
	exited   chan error
}

// startDaemon runs `dsr-agent run` in ns with the given config.
func startDaemon(t testing.TB, ns *netnstest.NS, dir, config string, args ...string) *runningDaemon {
	t.Helper()
	return startDaemonWrapped(t, ns, dir, config, nil, nil, args...)
}

// startDaemonWrapped is startDaemon behind a wrapper command (prlimit) and
// with extra environment variables (they override the defaults).
func startDaemonWrapped(t testing.TB, ns *netnstest.NS, dir, config string, wrap, env []string, args ...string) *runningDaemon {
	t.Helper()
	bin := dsrAgentBinary(t)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "state")
	sockPath := filepath.Join(dir, fmt.Sprintf("notify-%d.sock", time.Now().UnixNano()))
	nconn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	d := &runningDaemon{t: t, ns: ns, cfgPath: cfgPath, stateDir: stateDir, log: &syncBuf{}, notes: make(chan string, 1024), exited: make(chan error, 1)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := nconn.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case d.notes <- string(buf[:n]):
			default:
			}
		}
	}()
	full := append([]string{"netns", "exec", ns.Name, bin, "--config", cfgPath, "--state-dir", stateDir, "--log-level", "debug", "run"}, args...)
	full = append([]string{"ip"}, full...)
	if len(wrap) > 0 {
		full = append(append([]string(nil), wrap...), full...)
	}
	d.cmd = exec.Command(full[0], full[1:]...)
	d.cmd.Env = append(append(os.Environ(), "NOTIFY_SOCKET="+sockPath, "WATCHDOG_USEC=300000"), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait(); nconn.Close() }()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log.String())
		}
	})
	return d
}

func (d *runningDaemon) waitNote(prefix string, within time.Duration) string {
	d.t.Helper()
	timeout := time.After(within)
	for {
		select {
		case s := <-d.notes:
			if strings.HasPrefix(s, prefix) {
				return s
			}
		case err := <-d.exited:
			d.exited <- err
			d.t.Fatalf("daemon exited (%v) before %q", err, prefix)
		case <-timeout:
			d.t.Fatalf("no %q notification within %v", prefix, within)
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (d *runningDaemon) stop() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	d.waitNote("STOPPING=1", 5*time.Second)
	select {
	case err := <-d.exited:
		if err != nil {
			d.t.Fatalf("daemon exit after SIGTERM: %v", err)
		}
	case <-time.After(5 * time.Second):
		d.t.Fatal("daemon did not exit after SIGTERM")
	}
}

// eventually polls cond every 5 ms until it holds or within passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	last := ""
	for time.Now().Before(deadline) {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v; last: %s", what, within, last)
}

func hasAddr(ns *netnstest.NS, dev, cidr string) (bool, string) {
	out, _ := ns.ExecErr("ip", "-o", "addr", "show", "dev", dev)
	return strings.Contains(out, " "+cidr+" "), out
}

// nsGet does one HTTP GET from inside the namespace (the socket is created on
// a thread in it), from src (empty: any) to addr.
func nsGet(t testing.TB, ns *netnstest.NS, src, addr, path string) (int, string) {
	t.Helper()
	var conn net.Conn
	var err error
	ns.Do(t, func() {
		d := net.Dialer{Timeout: time.Second}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		conn, err = d.Dial("tcp", addr)
	})
	if err != nil {
		return 0, err.Error()
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func healthIs(t testing.TB, ns *netnstest.NS, addr string, code int, body string) func() (bool, string) {
	return healthFrom(t, ns, "", addr, code, body)
}

func healthFrom(t testing.TB, ns *netnstest.NS, src, addr string, code int, body string) func() (bool, string) {
	return func() (bool, string) {
		c, b := nsGet(t, ns, src, addr, "/healthz")
		return c == code && strings.Contains(b, body), fmt.Sprintf("%d %q", c, b)
	}
}

const nic = "eth0"

func setupNS(t *testing.T) *netnstest.NS {
	ns := netnstest.New(t)
	ns.AddDummy(t, nic, "10.77.0.2/24")
	ns.Exec(t, "ip", "route", "add", "default", "via", "10.77.0.1", "dev", nic)
	return ns
}

// TestRunRepairsDrift: every kind of drift the notifications report is
// repaired by the event path (the resync is an hour, so it cannot be what
// repairs it), and stopping leaves the host configured.
func TestRunRepairsDrift(t *testing.T) {
	ns := setupNS(t)
	dir := t.TempDir()
	d := startDaemon(t, ns, dir, `mode: loopback
interfaces: [eth0]
vips:
  - address: 10.77.100.1
  - address: 10.77.100.2
  - address: fd00:77::100
health:
  listen: 10.77.0.2:8558
`, "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	d.waitNote("WATCHDOG=1", 2*time.Second)
	if ok, out := hasAddr(ns, "lo", "10.77.100.1/32"); !ok {
		t.Fatalf("VIP not on lo after READY:\n%s", out)
	}
	eventually(t, 3*time.Second, "healthz up", healthIs(t, ns, "10.77.0.2:8558", 200, "up"))

	// A VIP deleted by hand.
	ns.Exec(t, "ip", "addr", "del", "10.77.100.1/32", "dev", "lo")
	eventually(t, 2*time.Second, "deleted VIP returns", func() (bool, string) { return hasAddr(ns, "lo", "10.77.100.1/32") })
	// All of lo flushed (a network manager): every VIP returns.
	ns.Exec(t, "ip", "addr", "flush", "dev", "lo")
	for _, c := range []string{"10.77.100.1/32", "10.77.100.2/32", "fd00:77::100/128"} {
		eventually(t, 2*time.Second, c+" returns after flush", func() (bool, string) { return hasAddr(ns, "lo", c) })
	}
	// The NIC re-created: its per-interface ARP sysctls come back at defaults.
	ns.Exec(t, "ip", "link", "del", nic)
	ns.AddDummy(t, nic, "10.77.0.2/24")
	eventually(t, 2*time.Second, "arp_ignore on re-created NIC", func() (bool, string) {
		v := ns.Sysctl(t, "net", "ipv4", "conf", nic, "arp_ignore")
		return v == "1", "arp_ignore=" + v
	})
	eventually(t, 2*time.Second, "arp_announce on re-created NIC", func() (bool, string) {
		v := ns.Sysctl(t, "net", "ipv4", "conf", nic, "arp_announce")
		return v == "2", "arp_announce=" + v
	})
	// The snapshot is published after the repair pass observes the host, a
	// moment after the sysctls above are back.
	eventually(t, 2*time.Second, "metrics show the repairs", func() (bool, string) {
		c, metrics := nsGet(t, ns, "", "10.77.0.2:8558", "/metrics")
		ok := c == 200 && strings.Contains(metrics, `dsr_agent_repairs_total{kind="addr-add"}`) && strings.Contains(metrics, `dsr_agent_vip_present{vip="10.77.100.1"} 1`)
		return ok, fmt.Sprintf("%d:\n%s", c, metrics)
	})

	// SIGTERM: STOPPING=1, clean exit, kernel state left in place.
	d.stop()
	for _, c := range []string{"10.77.100.1/32", "10.77.100.2/32", "fd00:77::100/128"} {
		if ok, out := hasAddr(ns, "lo", c); !ok {
			t.Fatalf("%s removed on stop:\n%s", c, out)
		}
	}
	if v := ns.Sysctl(t, "net", "ipv4", "conf", "all", "arp_ignore"); v != "1" {
		t.Fatalf("arp_ignore reset on stop: %s", v)
	}
}

// TestRunResyncAndTables: sysctl resets (no notification) are caught by the
// periodic resync; a flushed or deleted dsr-agent nft table (arptables mode)
// by the nftables monitor; a VIP whose NIC is gone makes health say so.
func TestRunResyncAndTables(t *testing.T) {
	ns := setupNS(t)
	dir := t.TempDir()
	d := startDaemon(t, ns, dir, `mode: arptables
interfaces: [eth0]
vips:
  - address: 10.77.100.1
health:
  listen: 10.77.0.2:8558
`, "--resync", "300ms")
	d.waitNote("READY=1", 10*time.Second)
	eventually(t, 3*time.Second, "healthz up", healthIs(t, ns, "10.77.0.2:8558", 200, "up"))
	table := func() (bool, string) {
		out, _ := ns.ExecErr("nft", "list", "table", "arp", "dsr-agent")
		return strings.Contains(out, "drop"), out
	}
	if ok, out := table(); !ok {
		t.Fatalf("arp table not in place:\n%s", out)
	}
	ns.Exec(t, "nft", "flush", "table", "arp", "dsr-agent")
	eventually(t, 2*time.Second, "flushed table repaired", table)
	ns.Exec(t, "nft", "delete", "table", "arp", "dsr-agent")
	eventually(t, 2*time.Second, "deleted table repaired", table)

	// The NIC disappears: its VIP cannot be repaired; health must say so.
	ns.Exec(t, "ip", "link", "del", nic)
	ns.AddDummy(t, "eth9", "10.77.0.2/24") // keep the health address reachable
	// The core refuses to plan for a config naming a missing interface; health
	// must turn 503 and say why.
	eventually(t, 3*time.Second, "health reports the missing NIC", healthIs(t, ns, "10.77.0.2:8558", 503, "eth0"))
	ns.Exec(t, "ip", "link", "del", "eth9")
	ns.AddDummy(t, nic, "10.77.0.2/24")
	eventually(t, 3*time.Second, "VIP back on re-created NIC", func() (bool, string) { return hasAddr(ns, nic, "10.77.100.1/32") })
	eventually(t, 3*time.Second, "healthz up again", healthIs(t, ns, "10.77.0.2:8558", 200, "up"))
	d.stop()
}

// TestRunSysctlResync: a sysctl reset by hand is repaired with a short
// resync as well (by the resync or the sysctl poll, whichever comes first;
// TestRunSysctlResetSeen shows the poll alone does it).
func TestRunSysctlResync(t *testing.T) {
	ns := setupNS(t)
	d := startDaemon(t, ns, t.TempDir(), `mode: loopback
interfaces: [eth0]
vips: [{address: 10.77.100.1}]
`, "--resync", "200ms")
	d.waitNote("READY=1", 10*time.Second)
	ns.Exec(t, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=0", "net.ipv4.conf.all.arp_announce=0")
	eventually(t, 2*time.Second, "sysctl reset repaired by resync", func() (bool, string) {
		a, b := ns.Sysctl(t, "net", "ipv4", "conf", "all", "arp_ignore"), ns.Sysctl(t, "net", "ipv4", "conf", "all", "arp_announce")
		return a == "1" && b == "2", "arp_ignore=" + a + " arp_announce=" + b
	})
	d.stop()
}

// TestRunHealthDrainReload: a failing check, drain persisted across a
// restart, reload with a good and a bad config, allowed_sources.
func TestRunHealthDrainReload(t *testing.T) {
	ns := setupNS(t)
	ns.Exec(t, "ip", "addr", "add", "10.77.0.3/24", "dev", nic) // a second, allowed source
	dir := t.TempDir()
	// The checked service: a listener inside the namespace.
	var svc net.Listener
	listen := func() {
		var err error
		ns.Do(t, func() { svc, err = net.Listen("tcp", "127.0.0.1:9090") })
		if err != nil {
			t.Fatal(err)
		}
		go func(l net.Listener) {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}(svc)
	}
	listen()
	defer func() { svc.Close() }()
	base := `mode: loopback
interfaces: [eth0]
vips: [{address: 10.77.100.1}%s]
health:
  listen: 10.77.0.2:8558
  allowed_sources: [10.77.0.3/32, 127.0.0.0/8]
  checks:
    - {name: web, tcp: "127.0.0.1:9090", interval: 100ms, timeout: 100ms, rise: 1, fall: 1}
    - {name: weighted, exec: [/bin/sh, -c, "exit 7"], interval: 100ms, timeout: 100ms, rise: 1, fall: 1}
`
	d := startDaemon(t, ns, dir, fmt.Sprintf(base, ""), "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	hz := "10.77.0.2:8558"
	eventually(t, 3*time.Second, "healthz up", healthFrom(t, ns, "10.77.0.3", hz, 200, "up"))
	// An exec check run by the daemon: MISC_CHECK exit 7 is up with weight 5.
	if c, body := nsGet(t, ns, "10.77.0.3", hz, "/status"); c != 200 || !strings.Contains(body, `"kind": "exec"`) || !strings.Contains(body, `"weight": 5`) {
		t.Fatalf("/status %d lacks the exec check's weight 5:\n%s", c, body)
	}
	if c, _ := nsGet(t, ns, "10.77.0.3", hz, "/healthz"); c != 200 {
		t.Fatalf("allowed source got %d", c)
	}
	// Outside allowed_sources: reset at accept, no HTTP answer at all. The
	// client reports the RST as a reset, or as EOF when it lands before the
	// request is written.
	if c, body := nsGet(t, ns, "10.77.0.2", hz, "/healthz"); c != 0 || !(strings.Contains(body, "reset") || strings.Contains(body, "EOF")) {
		t.Fatalf("source outside allowed_sources got %d %q, want a reset", c, body)
	}

	svc.Close()
	eventually(t, 3*time.Second, "failing check reported", healthFrom(t, ns, "10.77.0.3", hz, 503, "check web: connection refused"))
	listen()
	eventually(t, 3*time.Second, "check recovers", healthFrom(t, ns, "10.77.0.3", hz, 200, "up"))

	// drain reaches the running daemon, survives a restart, keeps the VIPs.
	bin := dsrAgentBinary(t)
	if out, err := exec.Command(bin, "--state-dir", d.stateDir, "drain").CombinedOutput(); err != nil {
		t.Fatalf("drain: %v\n%s", err, out)
	}
	eventually(t, time.Second, "drained", healthFrom(t, ns, "10.77.0.3", hz, 503, "draining"))
	d.stop()
	d = startDaemon(t, ns, dir, fmt.Sprintf(base, ""), "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	eventually(t, 3*time.Second, "still drained after restart", healthFrom(t, ns, "10.77.0.3", hz, 503, "draining"))
	if ok, out := hasAddr(ns, "lo", "10.77.100.1/32"); !ok {
		t.Fatalf("drain removed the VIP:\n%s", out)
	}
	if out, err := exec.Command(bin, "--state-dir", d.stateDir, "undrain").CombinedOutput(); err != nil {
		t.Fatalf("undrain: %v\n%s", err, out)
	}
	eventually(t, 3*time.Second, "undrained", healthFrom(t, ns, "10.77.0.3", hz, 200, "up"))

	// Reload with a good config: the new VIP appears.
	if err := os.WriteFile(d.cfgPath, []byte(fmt.Sprintf(base, ", {address: 10.77.100.2}")), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitNote("RELOADING=1", 3*time.Second)
	if s := d.waitNote("READY=1", 5*time.Second); !strings.Contains(s, "reloaded") {
		t.Fatalf("good reload: %q", s)
	}
	if ok, out := hasAddr(ns, "lo", "10.77.100.2/32"); !ok {
		t.Fatalf("reload did not add the new VIP:\n%s", out)
	}
	// Reload with a bad config: refused, running state kept.
	if err := os.WriteFile(d.cfgPath, []byte("mode: loopback\nvips: [{address: not-an-ip}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	if s := d.waitNote("READY=1", 5*time.Second); !strings.Contains(s, "refused") {
		t.Fatalf("bad reload: %q", s)
	}
	// The log arrives through the stderr pipe, which may trail the notify
	// datagram by a moment.
	eventually(t, 2*time.Second, "log line for the refused reload", func() (bool, string) {
		return strings.Contains(d.log.String(), "reload refused"), d.log.String()
	})
	for _, c := range []string{"10.77.100.1/32", "10.77.100.2/32"} {
		if ok, out := hasAddr(ns, "lo", c); !ok {
			t.Fatalf("bad reload removed %s:\n%s", c, out)
		}
	}
	eventually(t, 2*time.Second, "health after bad reload", healthFrom(t, ns, "10.77.0.3", hz, 200, "up"))
	d.stop()
	if os.Getenv("DSR_AGENT_TEST_VERBOSE") != "" {
		t.Log(d.log.String())
	}
}

// TestRunWaitsForLateNIC: at boot the unit starts before the network is
// configured; a NIC that appears later is waited for (no exit 2, no READY
// until the first apply), then the host converges.
func TestRunWaitsForLateNIC(t *testing.T) {
	ns := netnstest.New(t)
	d := startDaemon(t, ns, t.TempDir(), "mode: loopback\ninterfaces: [late0]\nvips: [{address: 10.77.100.1}]\n")
	status := d.waitNote("STATUS=waiting for the host", 5*time.Second)
	if !strings.Contains(status, `"late0"`) {
		t.Fatalf("waiting status does not name the interface: %q", status)
	}
	if ok, _ := hasAddr(ns, "lo", "10.77.100.1/32"); ok {
		t.Fatal("VIP added before the NIC (and its sysctls) existed")
	}
	ns.AddDummy(t, "late0", "10.77.0.2/24")
	d.waitNote("READY=1", 10*time.Second)
	if v := ns.Sysctl(t, "net", "ipv4", "conf", "late0", "arp_ignore"); v != "1" {
		t.Fatalf("late0 arp_ignore = %s", v)
	}
	if ok, out := hasAddr(ns, "lo", "10.77.100.1/32"); !ok {
		t.Fatalf("VIP missing after READY:\n%s", out)
	}
	d.stop()
}

// TestRunKeepsVIPsWhileOwnAddressIsGone: a network manager that reconfigures
// the NIC deletes its own address along with the VIP. arptables mode's real
// IP cannot be resolved without it, so the daemon keeps converging to the
// last resolution: the VIP (and the ARP table that hides it) come back at
// once, not when the manager re-adds the NIC's address.
func TestRunKeepsVIPsWhileOwnAddressIsGone(t *testing.T) {
	ns := setupNS(t)
	d := startDaemon(t, ns, t.TempDir(), `mode: arptables
interfaces: [eth0]
vips:
  - address: 10.77.100.1
`, "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	// What `nmcli connection up` does to the link: every address goes.
	ns.Exec(t, "ip", "addr", "flush", "dev", nic)
	eventually(t, 5*time.Second, "VIP back on the NIC while its own address is still gone", func() (bool, string) {
		return hasAddr(ns, nic, "10.77.100.1/32")
	})
	if ok, out := hasAddr(ns, nic, "10.77.0.2/24"); ok {
		t.Fatalf("the NIC's own address is back: the test proves nothing\n%s", out)
	}
	// The pass logs its note after the change it made (the VIP above).
	eventually(t, 5*time.Second, "word of the kept resolution", func() (bool, string) {
		out := d.log.String()
		return strings.Contains(out, "kept the last resolution"), out
	})
	if out := ns.Exec(t, "nft", "list", "table", "arp", "dsr-agent"); !strings.Contains(out, "10.77.100.1 : 10.77.0.2") {
		t.Fatalf("ARP table lost the VIP or its real IP:\n%s", out)
	}
	// The address comes back: nothing more to do, and a fresh resolution.
	ns.Exec(t, "ip", "addr", "add", "10.77.0.2/24", "dev", nic)
	eventually(t, 5*time.Second, "in sync again", func() (bool, string) {
		out, err := ns.ExecErr(dsrAgentBinary(t), "--config", d.cfgPath, "--state-dir", d.stateDir, "status")
		return err == nil, out
	})
}

// TestRunPrefixHealth: the daemon's /status, /healthz and metrics carry a
// prefix VIP (AnyIP) as they carry a VIP: its route present, its listener
// judged, its series in dsr_agent_vip_present and dsr_agent_listener_present.
func TestRunPrefixHealth(t *testing.T) {
	ns := setupNS(t)
	d := startDaemon(t, ns, t.TempDir(), `mode: loopback
interfaces: [eth0]
vips:
  - prefix: 10.77.128.0/24
    ports: [{port: 8559}]
health:
  listen: 10.77.0.2:8558
`, "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	eventually(t, 3*time.Second, "metrics show the prefix", func() (bool, string) {
		c, m := nsGet(t, ns, "", "10.77.0.2:8558", "/metrics")
		ok := c == 200 && strings.Contains(m, `dsr_agent_vip_present{vip="10.77.128.0/24"} 1`) &&
			strings.Contains(m, `dsr_agent_listener_present{port="8559",proto="tcp",vip="10.77.128.0/24"} 0`)
		return ok, fmt.Sprintf("%d:\n%s", c, m)
	})
	c, body := nsGet(t, ns, "", "10.77.0.2:8558", "/status")
	if c != 200 || !strings.Contains(body, `"prefix": "10.77.128.0/24"`) {
		t.Fatalf("/status: %d %s", c, body)
	}
}
