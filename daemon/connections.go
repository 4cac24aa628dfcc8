package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/dsr-agent/dsr-agent/agent"
	"github.com/dsr-agent/dsr-agent/listener"
)

// Connections counts the established TCP connections to the VIPs, exactly
// as the agent-check weight's connections signal does (weightTargets): by
// local address, or in firewalld mode by the redirects' target ports. It
// reads the calling process's network namespace.
type Connections struct {
	diag  *listener.Diag
	addrs []netip.Addr
	ports []uint16
}

// OpenConnections opens a sock_diag socket counting want's connections.
func OpenConnections(want *agent.Desired) (*Connections, error) {
	addrs, ports := weightTargets(want)
	return openConnections(addrs, ports)
}

func openConnections(addrs []netip.Addr, ports []uint16) (*Connections, error) {
	diag, err := listener.Open(-1)
	if err != nil {
		return nil, err
	}
	return &Connections{diag: diag, addrs: addrs, ports: ports}, nil
}

// Count is one kernel-filtered dump of the established TCP sockets.
func (c *Connections) Count() (int, error) {
	n, err := c.diag.CountEstablished(c.addrs, c.ports)
	if err != nil {
		return 0, fmt.Errorf("count established connections: %w", err)
	}
	return n, nil
}

// Close releases the socket.
func (c *Connections) Close() error { return c.diag.Close() }

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
