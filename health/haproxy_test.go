package health

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHAProxyAgentCheck runs a real HAProxy (Debian package) as the checker
// and watches its stats socket: the server must go DRAIN, MAINT, DOWN and UP
// as dsr-agent's state changes.
func TestHAProxyAgentCheck(t *testing.T) {
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
	s := NewState()
	s.SetSnapshot(okSnapshot())
	agentAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = NewAgentServer(s, nil, quietLog()).Run(ctx, agentAddr) }()

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
	server s1 %s check inter 100ms rise 1 fall 1 agent-check agent-port %s agent-inter 100ms
`, sock, strings.Split(freeAddr(t), ":")[1], agentAddr, port)
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
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	}()

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
			if h == "status" && i < len(f) {
				return f[i]
			}
		}
	}
	return "server not found"
}
