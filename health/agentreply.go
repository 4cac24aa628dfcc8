package health

import "strconv"

// agentReply follows HAProxy's agent-check protocol: one operational word
// (up/down) and one administrative word (ready/drain/maint). "ready" is sent
// whenever the operator has not drained, so a DRAIN or MAINT set earlier by
// this agent is lifted when the operator undrains. The weight ("75%",
// relative to the server's configured weight) follows when there is one,
// also while down or drained: HAProxy records it either way, so the server
// comes back at the weight its load deserves. "maint" stays alone: the
// server takes nothing and its checks stop.
func agentReply(d DrainMode, down bool, weight string) string {
	op := "up"
	if down {
		op = "down"
	}
	var reply string
	switch d {
	case Drained:
		reply = op + " drain"
	case Maintenance:
		return "maint"
	default:
		reply = op + " ready"
	}
	if weight != "" {
		reply += " " + weight
	}
	return reply
}

// weightWord is the weight part of the agent answer ("75%"), empty when
// the weight never was on.
func (s *State) weightWord() string {
	switch {
	case s.weight != nil:
		return strconv.Itoa(s.weight.Percent) + "%"
	case s.weightWasOn:
		return "100%"
	}
	return ""
}
