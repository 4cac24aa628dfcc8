package health

import (
	"fmt"
	"strings"
)

// Verdict is the precomputed answer every endpoint serves.
type Verdict struct {
	Healthy bool
	// Reasons lists why the host is unhealthy, most important first.
	Reasons []string
	// Body is the /healthz body: "up" or the reasons joined by "; ".
	Body []byte
	// Agent is the HAProxy agent-check reply line, newline included.
	Agent []byte
}

func (s *State) recompute() {
	s.mu.Lock()
	s.recomputeLocked()
	s.mu.Unlock()
}

// recomputeLocked derives the verdict. Order of reasons: operator intent
// first, then the host's own setup, then services, so the first reason is the
// one to act on.
func (s *State) recomputeLocked() {
	var reasons []string
	switch s.drain {
	case Drained:
		reasons = append(reasons, "draining")
	case Maintenance:
		reasons = append(reasons, "maintenance")
	}
	setupBroken := false
	switch {
	case s.snap == nil:
		reasons = append(reasons, "starting: first apply not done")
		setupBroken = true
	case s.snap.Error != "" && len(s.snap.VIPs) == 0 && len(s.snap.Prefixes) == 0:
		// The host could not even be observed: nothing says the setup holds.
		reasons = append(reasons, "host check failed: "+firstLine(s.snap.Error))
		setupBroken = true
	default:
		if !s.snap.Suppression {
			reasons = append(reasons, "arp suppression missing")
			setupBroken = true
		}
		for _, v := range s.snap.VIPs {
			if v.Present {
				continue
			}
			setupBroken = true
			if v.Link != "" {
				reasons = append(reasons, fmt.Sprintf("vip %s missing from %s", v.Address, v.Link))
			} else {
				reasons = append(reasons, fmt.Sprintf("vip %s missing", v.Address))
			}
		}
		// A prefix (AnyIP) is every address of it: one missing route or
		// redirect takes them all.
		for _, pf := range s.snap.Prefixes {
			if !pf.Present {
				setupBroken = true
				reasons = append(reasons, fmt.Sprintf("prefix %s missing", pf.Prefix))
			}
		}
	}
	listenerDown := false
	if s.snap != nil && !s.inListenerGrace() {
		for _, l := range s.snap.Listeners {
			if !l.Present {
				reasons = append(reasons, "no listener for "+l.Subject)
				listenerDown = true
			}
		}
	}
	checkDown := false
	for _, name := range s.checkOrder {
		c := s.checks[name]
		switch {
		case c.Pending:
			reasons = append(reasons, fmt.Sprintf("check %s: pending", name))
			checkDown = true
		case !c.Up:
			msg := c.LastError
			if msg == "" {
				msg = "down"
			}
			reasons = append(reasons, fmt.Sprintf("check %s: %s", name, msg))
			checkDown = true
		}
	}
	v := &Verdict{Healthy: len(reasons) == 0, Reasons: reasons}
	if v.Healthy {
		v.Body = []byte("up\n")
	} else {
		v.Body = []byte(strings.Join(reasons, "; ") + "\n")
	}
	v.Agent = []byte(agentReply(s.drain, setupBroken || listenerDown || checkDown, s.weightWord()) + "\n")
	s.verdict.Store(v)
	s.metrics.setHealthy(v.Healthy)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		// Multi-line config errors: keep the line that names the field.
		rest := strings.TrimSpace(s[i+1:])
		if j := strings.IndexByte(rest, '\n'); j >= 0 {
			rest = rest[:j]
		}
		return strings.TrimSpace(s[:i]) + " " + rest
	}
	return s
}
