package health

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/health/weight"
)

// TestHAProxyAgentCheck runs a real HAProxy (Debian package) as the checker
// and watches its stats socket: the server must go DRAIN, MAINT, DOWN and UP
// as dsr-agent's state changes.
func TestHAProxyAgentCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("runs haproxy")
	}
	s := NewState()
	s.SetSnapshot(okSnapshot())
	agentAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = NewAgentServer(s, nil, quietLog()).Run(ctx, agentAddr) }()
	// weight 37: without a weight in the answers it must stay 37.
	sock := startHAProxy(t, agentAddr, "weight 37")

	wantStatus := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		last := ""
		for time.Now().Before(deadline) {
			last = serverStatus(sock, "be", "s1")
			if strings.HasPrefix(last, want) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("haproxy server status %q, want %s (agent says %q)", last, want, s.Verdict().Agent)
	}
	wantStatus("UP")
	// An operator's weight: answers without a weight must not touch it
	// (a "100%" would set it back to the configured 37).
	if out := statsCommand(sock, "set weight be/s1 20"); strings.TrimSpace(out) != "" {
		t.Fatalf("set weight: %q", out)
	}
	s.SetDrain(Drained)
	wantStatus("DRAIN")
	s.SetDrain(Maintenance)
	wantStatus("MAINT")
	s.SetDrain(InRotation)
	wantStatus("UP")
	broken := okSnapshot()
	broken.VIPs[0].Present = false
	s.SetSnapshot(broken)
	wantStatus("DOWN")
	s.SetSnapshot(okSnapshot())
	wantStatus("UP")
	// Negative control for the weight: answers without one leave the
	// weight alone.
	if w := serverField(sock, "be", "s1", "weight"); w != "20" {
		t.Fatalf("haproxy weight %q after answers without a weight, want the operator's 20", w)
	}
}

// TestHAProxyAgentWeight: HAProxy parses the weight as dsr-agent words it
// ("up ready 40%", "up drain 40%", "down ready 40%"): a percentage of the
// configured weight, kept while drained, and 100% after the weight is
// turned off gives the configured weight back.
func TestHAProxyAgentWeight(t *testing.T) {
	s := NewState()
	s.SetSnapshot(okSnapshot())
	agentAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = NewAgentServer(s, nil, quietLog()).Run(ctx, agentAddr) }()
	sock := startHAProxy(t, agentAddr, "weight 200")
	want := func(field, value string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		last := ""
		for time.Now().Before(deadline) {
			// The status may carry a suffix: "DRAIN (agent)".
			if last = serverField(sock, "be", "s1", field); last == value || field == "status" && strings.HasPrefix(last, value+" ") {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("haproxy %s %q, want %s (agent says %q)", field, last, value, s.Verdict().Agent)
	}
	want("status", "UP")
	want("weight", "200")
	s.SetWeight(&weight.Status{Percent: 40})
	want("weight", "80") // 40% of 200
	s.SetDrain(Drained)
	want("status", "DRAIN")
	want("uweight", "80") // the weight is kept for the return
	s.SetDrain(InRotation)
	want("status", "UP")
	want("weight", "80")
	s.SetWeight(&weight.Status{Percent: 75})
	want("weight", "150")
	s.SetWeight(nil)
	want("weight", "200")
}

// startHAProxy runs HAProxy (Debian's) with backend be, server s1 checked
// by the agent at agentAddr with serverOpts, and returns its stats socket.
func startHAProxy(t *testing.T, agentAddr, serverOpts string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs haproxy")
	}
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("DSR_AGENT_REQUIRE_ROOT") == "1" {
			t.Fatal("haproxy not installed (mk/daemon.packages lists it)")
		}
		t.Skip("haproxy not installed")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "stats.sock")
	_, port, _ := net.SplitHostPort(agentAddr)
	cfg := fmt.Sprintf(`global
	stats socket %s mode 600 level admin
defaults
	mode tcp
	timeout connect 1s
	timeout client 5s
	timeout server 5s
frontend fe
	bind 127.0.0.1:%s
	default_backend be
backend be
	server s1 %s check inter 100ms rise 1 fall 1 agent-check agent-port %s agent-inter 100ms %s
`, sock, strings.Split(freeAddr(t), ":")[1], agentAddr, port, serverOpts)
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", cfgPath)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	})
	return sock
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serverStatus reads the status column of `show stat` for backend/server.
func serverStatus(sock, backend, server string) string {
	return serverField(sock, backend, server, "status")
}

// statsCommand sends one command to the stats socket and returns the answer.
func statsCommand(sock, command string) string {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return "no stats socket: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprint(c, command+"\n")
	b, _ := io.ReadAll(c)
	return string(b)
}

// serverField reads one column of `show stat` for backend/server.
func serverField(sock, backend, server, field string) string {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return "no stats socket: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprint(c, "show stat\n")
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var header []string
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "# ") {
			header = strings.Split(strings.TrimPrefix(line, "# "), ",")
			continue
		}
		f := strings.Split(line, ",")
		if len(f) < 2 || f[0] != backend || f[1] != server {
			continue
		}
		for i, h := range header {
			if h == field && i < len(f) {
				return f[i]
			}
		}
	}
	return "server not found"
}
