package health

import (
	"strings"
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
)

func listenerSnapshot(present bool) Snapshot {
	snap := okSnapshot()
	snap.InSync = present
	snap.Listeners = []agent.ListenerState{{Subject: "192.0.2.10:80/tcp", VIP: "192.0.2.10", Port: 80, Protocol: "tcp", Present: present}}
	return snap
}

// TestListenerGrace: a missing listener is no reason while the grace
// period after the start runs, becomes one ("no listener for …", agent-check
// down) when it ends without a new snapshot, and goes when the listener
// appears; the gauge follows every snapshot.
func TestListenerGrace(t *testing.T) {
	s := NewState()
	s.SetListenerGrace(300 * time.Millisecond)
	s.SetSnapshot(listenerSnapshot(false))
	if v := s.Verdict(); !v.Healthy {
		t.Fatalf("within the grace period: %q", v.Body)
	}
	metrics := func() string { return scrape(t, s.Metrics()) }
	if m := metrics(); !strings.Contains(m, `dsr_agent_listener_present{port="80",proto="tcp",vip="192.0.2.10"} 0`) {
		t.Fatalf("gauge for the missing listener:\n%s", m)
	}
	deadline := time.Now().Add(2 * time.Second)
	for s.Verdict().Healthy && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	v := s.Verdict()
	if v.Healthy || string(v.Body) != "no listener for 192.0.2.10:80/tcp\n" || string(v.Agent) != "down ready\n" {
		t.Fatalf("after the grace period: healthy %v %q agent %q", v.Healthy, v.Body, v.Agent)
	}
	s.SetSnapshot(listenerSnapshot(true))
	if v := s.Verdict(); !v.Healthy {
		t.Fatalf("listener back: %q", v.Body)
	}
	if m := metrics(); !strings.Contains(m, `dsr_agent_listener_present{port="80",proto="tcp",vip="192.0.2.10"} 1`) {
		t.Fatalf("gauge for the present listener:\n%s", m)
	}
	// A config without ports drops the series.
	s.SetSnapshot(okSnapshot())
	if m := metrics(); strings.Contains(m, "dsr_agent_listener_present{") {
		t.Fatalf("stale listener gauge:\n%s", m)
	}
	// Grace 0: at once.
	s = NewState()
	s.SetListenerGrace(0)
	s.SetSnapshot(listenerSnapshot(false))
	if v := s.Verdict(); v.Healthy {
		t.Fatal("listener_grace 0: a missing listener is not a reason at once")
	}
}
