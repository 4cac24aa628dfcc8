package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// waitingDrain is a `dsr-agent drain --wait` running inside a namespace,
// its output read line by line as it comes.
type waitingDrain struct {
	t     *testing.T
	lines chan string
	out   strings.Builder
	done  chan int
}

func startDrainWait(t *testing.T, ns *netnstest.NS, d *runningDaemon, args ...string) *waitingDrain {
	t.Helper()
	argv := append([]string{"netns", "exec", ns.Name, dsrAgentBinary(t), "--config", d.cfgPath, "--state-dir", d.stateDir, "drain", "--wait"}, args...)
	cmd := exec.Command("ip", argv...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &waitingDrain{t: t, lines: make(chan string, 100), done: make(chan int, 1)}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		var ee *exec.ExitError
		code := 0
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			code = -1
		}
		w.done <- code
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	return w
}

// next returns the next output line.
func (w *waitingDrain) next() string {
	w.t.Helper()
	select {
	case l, ok := <-w.lines:
		if !ok {
			w.t.Fatalf("drain --wait ended; output so far:\n%s", w.out.String())
		}
		w.out.WriteString(l + "\n")
		return l
	case <-time.After(10 * time.Second):
		w.t.Fatalf("no output from drain --wait within 10s; so far:\n%s", w.out.String())
	}
	return ""
}

// expect reads lines until one contains want (the lines before it must not
// be counts: a count printed that the test did not expect is a failure).
func (w *waitingDrain) expect(want string) string {
	w.t.Helper()
	for {
		l := w.next()
		if strings.Contains(l, want) {
			return l
		}
		if strings.HasPrefix(l, "draining:") {
			w.t.Fatalf("got %q while waiting for %q; output so far:\n%s", l, want, w.out.String())
		}
	}
}

// exit waits for the command and returns its exit code and the rest of
// its output.
func (w *waitingDrain) exit() (int, string) {
	w.t.Helper()
	var rest strings.Builder
	for l := range w.lines {
		w.out.WriteString(l + "\n")
		rest.WriteString(l + "\n")
	}
	select {
	case code := <-w.done:
		return code, rest.String()
	case <-time.After(10 * time.Second):
		w.t.Fatalf("drain --wait did not exit; output:\n%s", w.out.String())
	}
	return 0, ""
}

// TestDrainWait (issue 18 point 2): `drain --wait` drains, then prints the
// established connections to the VIPs as they fall, counted by the kernel,
// and exits 0 when none are left; at its --timeout it exits 1 naming the
// count left; --max-connections lowers the bar. With and without a daemon.
func TestDrainWait(t *testing.T) {
	ns := setupNS(t)
	dir := t.TempDir()
	d := startDaemon(t, ns, dir, `mode: loopback
interfaces: [eth0]
vips: [{address: 10.77.100.1}]
health:
  listen: 10.77.0.2:8558
`, "--resync", "1h")
	d.waitNote("READY=1", 10*time.Second)
	hz := "10.77.0.2:8558"

	// A service on the VIP and clients from the host's own address: only
	// the service's ends of the connections are connections to the VIP.
	var ln net.Listener
	var err error
	ns.Do(t, func() { ln, err = net.Listen("tcp4", "10.77.100.1:80") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	// An unrelated connection (to the host's own address) is never counted.
	var other net.Listener
	ns.Do(t, func() { other, err = net.Listen("tcp4", "10.77.0.2:81") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	dial := func(addr string) net.Conn {
		t.Helper()
		var c net.Conn
		ns.Do(t, func() {
			dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("10.77.0.2")}, Timeout: time.Second}
			c, err = dl.Dial("tcp4", addr)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial("10.77.0.2:81")
	clients := []net.Conn{dial("10.77.100.1:80"), dial("10.77.100.1:80"), dial("10.77.100.1:80")}

	// The count falls as the clients close, one line per change; exit 0 at 0.
	w := startDrainWait(t, ns, d, "--timeout", "30s")
	w.expect("drained: out of rotation")
	w.expect("health: 503 draining")
	for i, want := range []int{3, 2, 1} {
		if l := w.expect("draining:"); l != fmt.Sprintf("draining: %d established connection(s) to the VIPs", want) {
			t.Fatalf("count line %q, want %d", l, want)
		}
		clients[i].Close()
	}
	if l := w.expect("connections drained"); !strings.Contains(l, "drained: 0 established") {
		t.Fatalf("final line %q", l)
	}
	if code, rest := w.exit(); code != 0 {
		t.Fatalf("drain --wait: exit %d:\n%s", code, rest)
	}
	eventually(t, 3*time.Second, "drained", healthIs(t, ns, hz, 503, "draining"))

	// Connections that stay: exit 1 at the deadline, naming the count left.
	clients = []net.Conn{dial("10.77.100.1:80"), dial("10.77.100.1:80")}
	w = startDrainWait(t, ns, d, "--timeout", "1s", "--max-connections", "1")
	w.expect("draining: 2 established connection(s) to the VIPs")
	code, rest := w.exit()
	if code != 1 || !strings.Contains(rest, "timeout after 1s: 2 established connection(s) to the VIPs left (--max-connections 1)") {
		t.Fatalf("drain --wait at its deadline: exit %d, want 1 naming 2 connections left:\n%s", code, w.out.String())
	}
	// At most one left is good enough with --max-connections 1.
	clients[0].Close()
	w = startDrainWait(t, ns, d, "--timeout", "30s", "--max-connections", "1")
	if l := w.expect("connections drained"); !strings.Contains(l, "drained: 1 established") {
		t.Fatalf("final line %q", l)
	}
	if code, rest := w.exit(); code != 0 {
		t.Fatalf("drain --wait --max-connections 1 with 1 left: exit %d:\n%s", code, rest)
	}

	// Without a daemon the drain is recorded and the wait the same.
	d.stop()
	w = startDrainWait(t, ns, d, "--timeout", "30s")
	w.expect("the daemon is not running")
	w.expect("draining: 1 established connection(s) to the VIPs")
	clients[1].Close()
	w.expect("connections drained: 0")
	if code, rest := w.exit(); code != 0 {
		t.Fatalf("drain --wait without a daemon: exit %d:\n%s", code, rest)
	}
}

// TestDrainWaitUsage: the wait's flags need --wait and sane values, and an
// invalid config exits 2 before anything is recorded.
func TestDrainWaitUsage(t *testing.T) {
	dir := t.TempDir()
	d := &runningDaemon{t: t, cfgPath: dir + "/config.yaml", stateDir: dir + "/state"}
	if err := os.WriteFile(d.cfgPath, []byte("mode: loopback\nvips: [{address: not-an-ip}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"drain", "--timeout", "1s"}, {"drain", "--max-connections", "2"},
		{"drain", "--wait", "--max-connections", "-1"}, {"drain", "--wait", "--timeout", "0s"}, {"drain", "--wait"}} {
		r := d.ctl(args...)
		if r.code != 2 {
			t.Fatalf("%v: exit %d, want 2:\n%s", args, r.code, r.out)
		}
		if f := drainFile(t, d.stateDir); f != "(none)" {
			t.Fatalf("%v recorded %q", args, f)
		}
	}
	if r := d.ctl("drain", "--wait"); !strings.Contains(r.out, "not-an-ip") {
		t.Fatalf("invalid config not named:\n%s", r.out)
	}
}

// TestWaitConnections: the pure loop -- one report per change, done at the
// bar, the last count at the deadline.
func TestWaitConnections(t *testing.T) {
	counts := []int{4, 4, 3, 5, 5, 1, 0}
	i := 0
	count := func() (int, error) { n := counts[min(i, len(counts)-1)]; i++; return n, nil }
	var got []int
	n, err := WaitConnections(context.Background(), count, 1, time.Microsecond, func(n int) { got = append(got, n) })
	if err != nil || n != 1 || fmt.Sprint(got) != "[4 3 5 1]" {
		t.Fatalf("WaitConnections = %d, %v; reported %v, want 1, nil, [4 3 5 1]", n, err, got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err = WaitConnections(ctx, func() (int, error) { return 7, nil }, 0, time.Hour, func(int) {})
	if n != 7 || !errors.Is(err, context.Canceled) {
		t.Fatalf("at the deadline: %d, %v; want 7 and the context's error", n, err)
	}
	boom := errors.New("boom")
	if _, err := WaitConnections(context.Background(), func() (int, error) { return 0, boom }, 0, time.Hour, func(int) {}); !errors.Is(err, boom) {
		t.Fatalf("count error: %v", err)
	}
}
