package daemon

import (
	"context"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
)

// OpenConnections opens a counter of want's established TCP connections,
// exactly as the agent-check weight's connections signal counts them
// (Desired.ConnectionTargets), in the calling process's network namespace.
func OpenConnections(want *agent.Desired) (*agent.ConnectionCounter, error) {
	return agent.OpenConnectionCounter(want.ConnectionTargets())
}

// DrainPoll is how often WaitConnections counts. The kernel announces no
// socket leaving ESTABLISHED (sock_diag's destroy events come only when a
// socket is freed, after FIN_WAIT/TIME_WAIT), so it polls; a dump filtered
// in the kernel to the VIPs' connections is cheap.
const DrainPoll = 250 * time.Millisecond

// WaitConnections counts every poll until count reports at most atMost, or ctx
// ends. report is called with the first count and then with every count
// that differs from the last one reported. It returns the last count, and
// ctx's error when it ended first.
func WaitConnections(ctx context.Context, count func() (int, error), atMost int, poll time.Duration, report func(int)) (int, error) {
	t := time.NewTicker(poll)
	defer t.Stop()
	last := -1
	for {
		n, err := count()
		if err != nil {
			return last, err
		}
		if n != last {
			report(n)
			last = n
		}
		if n <= atMost {
			return n, nil
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-t.C:
		}
	}
}
