package probe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ErrAgentDown is the agent-check saying the real server must take no
// traffic (down, maint, stopped, fail).
var ErrAgentDown = errors.New("agent-check: down")

// AgentWeight asks a real server's HAProxy agent-check (dsr-agent's
// health.agent_check, health/agentcheck.go: one line such as "up ready 75%"
// then close) and returns the weight for keepalived's misc_dynamic: the
// percentage (capped at 253, misc_dynamic's largest), 0 when drained, 100
// when the agent gives no percentage. down, maint, stopped and fail return
// ErrAgentDown.
func AgentWeight(ctx context.Context, addr string) (int, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("--weight-from %s: %w", addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil && line == "" {
		return 0, fmt.Errorf("--weight-from %s: read the agent's line: %w", addr, err)
	}
	return ParseAgentLine(line)
}

// ParseAgentLine reads one agent-check reply (HAProxy's agent protocol:
// words separated by spaces or commas, in any order).
func ParseAgentLine(line string) (int, error) {
	weight, drained := 100, false
	for _, w := range strings.FieldsFunc(strings.ToLower(line), func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\r' || r == '\n' }) {
		switch {
		case w == "down" || w == "maint" || w == "stopped" || w == "fail" || strings.HasPrefix(w, "fail#"):
			return 0, fmt.Errorf("%w (%q)", ErrAgentDown, strings.TrimSpace(line))
		case w == "drain":
			drained = true
		case strings.HasSuffix(w, "%"):
			p, err := strconv.Atoi(strings.TrimSuffix(w, "%"))
			if err != nil || p < 0 {
				return 0, fmt.Errorf("agent-check: weight %q: expected N%%", w)
			}
			weight = min(p, 253)
		}
	}
	if drained {
		return 0, nil
	}
	return weight, nil
}
