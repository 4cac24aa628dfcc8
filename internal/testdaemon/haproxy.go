// Package testdaemon starts the real daemons from Debian that tests hold
// dsr-agent against (HAProxy as the agent-check client), so each test
// states only what differs: the addresses, the timing, the server's options.
package testdaemon

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/internal/netnstest"
)

// AgentCheck is an HAProxy with frontend fe on Bind and backend be with one
// server s1 at Server, health-checked there and asking dsr-agent's
// agent-check on AgentPort, both every Inter.
type AgentCheck struct {
	// NS is the network namespace haproxy runs in (ip netns exec); empty:
	// the test's own.
	NS         string
	Bind       string // ip:port of the frontend (a free one: nothing connects to it)
	Server     string // ip:port of s1, its "check" target
	AgentPort  string
	Inter      time.Duration
	ServerOpts string // more server options, e.g. "weight 100"
}

// HAProxy is a running haproxy; its stats socket answers Field and Command.
type HAProxy struct {
	Sock string
}

// StartHAProxy runs Debian's haproxy in the foreground (-db) with a as its
// config and kills it when the test ends (logging its output if the test
// failed). Without haproxy: NeedHAProxy.
func StartHAProxy(t testing.TB, a AgentCheck) *HAProxy {
	t.Helper()
	bin := NeedHAProxy(t)
	dir := t.TempDir()
	h := &HAProxy{Sock: filepath.Join(dir, "stats.sock")}
	inter := fmt.Sprintf("%dms", a.Inter.Milliseconds())
	cfg := fmt.Sprintf(`global
	stats socket %s mode 600 level admin
defaults
	mode tcp
	timeout connect 1s
	timeout client 5s
	timeout server 5s
frontend fe
	bind %s
	default_backend be
backend be
	server s1 %s check inter %s rise 1 fall 1 agent-check agent-port %s agent-inter %s %s
`, h.Sock, a.Bind, a.Server, inter, a.AgentPort, inter, a.ServerOpts)
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{bin, "-db", "-f", cfgPath}
	if a.NS != "" {
		args = append([]string{"ip", "netns", "exec", a.NS}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
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
	return h
}

// NeedHAProxy returns haproxy's path, or skips the test without it (fails
// it when DSR_AGENT_REQUIRE_ROOT=1: the package lists install it). A test
// that sets up more before it starts HAProxy calls it first.
func NeedHAProxy(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv(netnstest.RequireRootEnv) == "1" {
			t.Fatal("haproxy not installed (mk/daemon.packages lists it)")
		}
		t.Skip("haproxy not installed")
	}
	return bin
}

// Command sends one command to the stats socket and returns the answer.
func (h *HAProxy) Command(command string) string {
	c, err := net.DialTimeout("unix", h.Sock, time.Second)
	if err != nil {
		return "no stats socket: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprint(c, command+"\n")
	b, _ := io.ReadAll(c)
	return string(b)
}

// Field reads one column of `show stat` (status, weight, uweight, ...) for
// be/s1.
func (h *HAProxy) Field(field string) string {
	sc := bufio.NewScanner(strings.NewReader(h.Command("show stat")))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var header []string
	for sc.Scan() {
		line := sc.Text()
		if hd, ok := strings.CutPrefix(line, "# "); ok {
			header = strings.Split(hd, ",")
			continue
		}
		if strings.HasPrefix(line, "no stats socket: ") {
			return line
		}
		f := strings.Split(line, ",")
		if len(f) < 2 || f[0] != "be" || f[1] != "s1" {
			continue
		}
		if i := slices.Index(header, field); i >= 0 && i < len(f) {
			return f[i]
		}
	}
	return "server not found"
}

// syncBuffer collects haproxy's output from the goroutines exec copies it
// with.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
