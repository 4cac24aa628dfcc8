package agent

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/dsr-agent/dsr-agent/listener"
)

// ConnectionTargets is what counts as a connection to what d serves, for the
// agent-check weight's connections signal and drain --wait: connections
// whose local address is in a served VIP or prefix; where they are never
// local (a redirect rewrites them to the host's own address) connections to
// the TCP ports their traffic is delivered to instead, each once.
func (d *Desired) ConnectionTargets() (prefixes []netip.Prefix, ports []uint16) {
	for _, v := range d.Served {
		if !d.Redirect {
			prefixes = append(prefixes, v.Prefix)
			continue
		}
		for _, p := range v.Ports {
			if p.Protocol == TCP || p.Protocol == "" {
				ports = append(ports, p.Deliver)
			}
		}
	}
	slices.Sort(ports)
	return prefixes, slices.Compact(ports)
}

// ConnectionCounter counts established TCP connections to given local
// addresses (prefixes) or ports with one kernel-filtered sock_diag dump, in the calling
// process's network namespace.
type ConnectionCounter struct {
	diag  *listener.Diag
	addrs []netip.Prefix
	ports []uint16
}

// OpenConnectionCounter opens the sock_diag socket.
func OpenConnectionCounter(addrs []netip.Prefix, ports []uint16) (*ConnectionCounter, error) {
	diag, err := listener.Open(-1)
	if err != nil {
		return nil, err
	}
	return &ConnectionCounter{diag: diag, addrs: addrs, ports: ports}, nil
}

// Count is one dump of the established TCP sockets.
func (c *ConnectionCounter) Count() (int, error) {
	n, err := c.diag.CountEstablished(c.addrs, c.ports)
	if err != nil {
		return 0, fmt.Errorf("count established connections: %w", err)
	}
	return n, nil
}

// Close releases the socket.
func (c *ConnectionCounter) Close() error { return c.diag.Close() }
