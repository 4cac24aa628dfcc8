package health

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/dsr-agent/dsr-agent/health/weight"
)

// StatusDoc is the /status JSON document.
type StatusDoc struct {
	Healthy bool     `json:"healthy"`
	Reasons []string `json:"reasons"`
	// Warnings say what needs attention while the host stays healthy
	// ("check site: certificate … expires in 5d").
	Warnings []string      `json:"warnings,omitempty"`
	Drain    string        `json:"drain"`
	Started  time.Time     `json:"started"`
	Host     *Snapshot     `json:"host"`
	Checks   []CheckStatus `json:"checks"`
	Stopping bool          `json:"stopping,omitempty"`
	// ListenerGraceEnds is when a missing listener starts to count
	// against /healthz (absent with health.listener_grace 0).
	ListenerGraceEnds time.Time `json:"listener_grace_ends,omitzero"`
	// Weight is the agent-check weight and what it was computed from
	// (absent without health.agent_check.weight).
	Weight *weight.Status `json:"weight,omitempty"`
}

// StatusJSON renders /status from cached state.
func (s *State) StatusJSON() ([]byte, error) {
	v := s.Verdict()
	s.mu.RLock()
	doc := StatusDoc{
		Healthy: v.Healthy, Reasons: v.Reasons, Drain: s.drain.String(), Started: s.started,
		Host: s.snap, Checks: make([]CheckStatus, 0, len(s.checkOrder)), Stopping: s.stopping,
		Weight: s.weight,
	}
	if s.listenerGrace > 0 {
		doc.ListenerGraceEnds = s.started.Add(s.listenerGrace)
	}
	for _, n := range s.checkOrder {
		c := *s.checks[n]
		doc.Checks = append(doc.Checks, c)
		if c.Warning != "" {
			doc.Warnings = append(doc.Warnings, fmt.Sprintf("check %s: %s", c.Name, c.Warning))
		}
	}
	s.mu.RUnlock()
	if doc.Reasons == nil {
		doc.Reasons = []string{}
	}
	sort.SliceStable(doc.Checks, func(i, j int) bool { return doc.Checks[i].Name < doc.Checks[j].Name })
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode status: %w", err)
	}
	return append(b, '\n'), nil
}
