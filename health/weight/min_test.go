package weight

import (
	"testing"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
)

// A sample carries the configured floor: /metrics exports it beside the
// weight, so "pinned at the minimum" is weight == floor.
func TestSampleCarriesMin(t *testing.T) {
	n := 0
	s := NewSampler(agent.WeightConfig{Connections: 10, Min: 7}, Sources{Connections: func() (int, error) { return n, nil }})
	n = 10
	st := s.Sample(time.Now())
	if st.Min != 7 || st.Percent != 7 {
		t.Fatalf("saturated sample: percent %d min %d, want 7 and 7", st.Percent, st.Min)
	}
}
