package health

import (
	"strings"
	"testing"
	"time"

	dsragent "github.com/dsr-agent/dsr-agent"
	"github.com/dsr-agent/dsr-agent/health/weight"
)

// TestBuildInfoAndWeightMin: /metrics names the build (version and commit,
// the values --version prints) and, while the weight is on, the floor the
// weight is held to, so an alert can tell a weight pinned at its minimum.
func TestBuildInfoAndWeightMin(t *testing.T) {
	s := NewState()
	s.SetSnapshot(okSnapshot())
	h := NewServer(s, nil, quietLog()).Handler()
	metrics := func() string {
		t.Helper()
		_, m := get(t, h, "GET", "/metrics", "192.0.2.1:1")
		return m
	}
	build := `dsr_agent_build_info{commit="` + dsragent.Commit() + `",version="` + dsragent.Version() + `"} 1` + "\n"
	if m := metrics(); !strings.Contains(m, build) {
		t.Fatalf("/metrics lacks %s:\n%s", build, m)
	}
	if m := metrics(); strings.Contains(m, "dsr_agent_weight_min_percent") {
		t.Fatalf("weight floor exported while the weight is off:\n%s", m)
	}
	s.SetWeight(&weight.Status{Percent: 5, Min: 5, Time: time.Now(), Signals: map[string]float64{weight.SignalLoad: 0}})
	if m := metrics(); !strings.Contains(m, "dsr_agent_weight_min_percent 5\n") || !strings.Contains(m, "dsr_agent_weight_percent 5\n") {
		t.Fatalf("/metrics lacks the weight and its floor:\n%s", m)
	}
	s.SetWeight(nil)
	if m := metrics(); strings.Contains(m, "dsr_agent_weight_min_percent") {
		t.Fatalf("weight floor exported after the weight was turned off:\n%s", m)
	}
}
