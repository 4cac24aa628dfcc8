package health

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/health/weight"
	"github.com/dsr-agent/dsr-agent/internal/testdaemon"
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
	hap := startHAProxy(t, agentAddr, "weight 37")

	wantStatus := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		last := ""
		for time.Now().Before(deadline) {
			last = hap.Field("status")
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
	if out := hap.Command("set weight be/s1 20"); strings.TrimSpace(out) != "" {
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
	if w := hap.Field("weight"); w != "20" {
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
	hap := startHAProxy(t, agentAddr, "weight 200")
	want := func(field, value string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		last := ""
		for time.Now().Before(deadline) {
			// The status may carry a suffix: "DRAIN (agent)".
			if last = hap.Field(field); last == value || field == "status" && strings.HasPrefix(last, value+" ") {
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
// by the agent at agentAddr with serverOpts.
func startHAProxy(t *testing.T, agentAddr, serverOpts string) *testdaemon.HAProxy {
	t.Helper()
	if testing.Short() {
		t.Skip("runs haproxy")
	}
	_, port, _ := net.SplitHostPort(agentAddr)
	return testdaemon.StartHAProxy(t, testdaemon.AgentCheck{
		Bind: freeAddr(t), Server: agentAddr, AgentPort: port, Inter: 100 * time.Millisecond, ServerOpts: serverOpts,
	})
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
