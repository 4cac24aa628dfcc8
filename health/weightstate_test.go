package health

import (
	"strings"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/health/weight"
)

// TestAgentWeight: the agent answer carries the weight once there is one
// (also while down or drained, never with maint), recomputes only when the
// answered percentage changes, and says 100% after the weight is turned
// off so HAProxy gives the server its configured weight back; /status and
// /metrics show it, and nothing of it while it is off.
func TestAgentWeight(t *testing.T) {
	s := NewState()
	s.SetSnapshot(okSnapshot())
	h := NewServer(s, nil, quietLog()).Handler()
	agentIs := func(want string) {
		t.Helper()
		if got := string(s.Verdict().Agent); got != want+"\n" {
			t.Fatalf("agent reply %q, want %q", got, want)
		}
	}
	metrics := func() string {
		t.Helper()
		_, m := get(t, h, "GET", "/metrics", "192.0.2.1:1")
		return m
	}
	// No weight configured: the answer is the one without weights.
	agentIs("up ready")
	if _, body := get(t, h, "GET", "/status", "192.0.2.1:1"); strings.Contains(body, `"weight"`) {
		t.Fatalf("/status without a weight shows one:\n%s", body)
	}
	if m := metrics(); hasWeightSeries(m) {
		t.Fatalf("weight gauges exported while off:\n%s", m)
	}

	conns := 150
	w := &weight.Status{Percent: 75, Raw: 70, Smoothed: 74.6, Time: time.Now(), Connections: &conns,
		Signals: map[string]float64{weight.SignalConnections: 70, weight.SignalLoad: 90}}
	s.SetWeight(w)
	agentIs("up ready 75%")
	before := s.Verdict()
	same := *w
	same.Smoothed = 75.2
	s.SetWeight(&same)
	if s.Verdict() != before {
		t.Fatal("an unchanged percentage recomputed the verdict")
	}
	s.SetDrain(Drained)
	agentIs("up drain 75%")
	s.SetDrain(Maintenance)
	agentIs("maint")
	s.SetDrain(InRotation)
	broken := okSnapshot()
	broken.VIPs[0].Present = false
	s.SetSnapshot(broken)
	agentIs("down ready 75%")
	s.SetSnapshot(okSnapshot())

	_, body := get(t, h, "GET", "/status", "192.0.2.1:1")
	for _, want := range []string{`"weight": {`, `"percent": 75`, `"smoothed": 75.2`, `"connections": 150`, `"load": 90`} {
		if !strings.Contains(body, want) {
			t.Fatalf("/status lacks %s:\n%s", want, body)
		}
	}
	m := metrics()
	for _, want := range []string{"dsr_agent_weight_percent 75", `dsr_agent_weight_signal_percent{signal="connections"} 70`,
		`dsr_agent_weight_signal_percent{signal="load"} 90`, "dsr_agent_weight_connections 150"} {
		if !strings.Contains(m, want+"\n") {
			t.Fatalf("/metrics lacks %s:\n%s", want, m)
		}
	}
	// The load signal has no value in the next sample: its series goes.
	next := same
	next.Percent, next.Signals = 60, map[string]float64{weight.SignalConnections: 60}
	s.SetWeight(&next)
	agentIs("up ready 60%")
	if m := metrics(); strings.Contains(m, `signal="load"`) || !strings.Contains(m, "dsr_agent_weight_percent 60\n") {
		t.Fatalf("after the load signal vanished:\n%s", m)
	}

	s.SetWeight(nil)
	agentIs("up ready 100%")
	if m := metrics(); hasWeightSeries(m) {
		t.Fatalf("weight gauges exported after the weight was turned off:\n%s", m)
	}
}

// TestCheckWeight: an exec check's weight counts only while the check is up
// and its last probe gave one.
func TestCheckWeight(t *testing.T) {
	s := NewState()
	s.resetChecks([]CheckStatus{{Name: "app", Kind: "exec"}})
	if _, ok := s.CheckWeight("app"); ok {
		t.Fatal("a pending check has a weight")
	}
	spec := agent.CheckConfig{Name: "app", Kind: agent.CheckExec, Rise: 1, Fall: 2, Timeout: time.Second}
	w := 42
	s.updateCheck("app", func(st *CheckStatus) { record(st, spec, Result{Weight: &w}, nil, 0, time.Now()) })
	if got, ok := s.CheckWeight("app"); !ok || got != 42 {
		t.Fatalf("weight %d %v, want 42", got, ok)
	}
	// A failed probe (still up: fall 2) has no weight.
	s.updateCheck("app", func(st *CheckStatus) { record(st, spec, Result{}, errString("exit 1"), 0, time.Now()) })
	if _, ok := s.CheckWeight("app"); ok {
		t.Fatal("a failed probe kept its weight")
	}
	// Exit 0: up, no weight.
	s.updateCheck("app", func(st *CheckStatus) { record(st, spec, Result{}, nil, 0, time.Now()) })
	if _, ok := s.CheckWeight("app"); ok {
		t.Fatal("exit 0 has a weight")
	}
	if _, ok := s.CheckWeight("other"); ok {
		t.Fatal("an unknown check has a weight")
	}
}

// hasWeightSeries reports a sample line of a weight gauge (HELP and TYPE
// lines do not count).
func hasWeightSeries(metrics string) bool {
	for l := range strings.SplitSeq(metrics, "\n") {
		if strings.HasPrefix(l, "dsr_agent_weight_") {
			return true
		}
	}
	return false
}

type errString string

func (e errString) Error() string { return string(e) }
