package agent

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/internal/resubscribe"
	"github.com/dsr-agent/dsr-agent/listener"
	"github.com/dsr-agent/dsr-agent/loopback"
	"github.com/dsr-agent/dsr-agent/route"
	"github.com/dsr-agent/dsr-agent/sysctl"
	"github.com/dsr-agent/dsr-agent/tunnel"
)

// Watchers are the surfaces' change notifications, for the daemon: one per
// surface, each waking the reconcile loop with what changed. They watch the
// network namespace of the calling process (the daemon's own).
type Watchers struct {
	sysctls   *sysctl.Watcher
	listeners *listener.Watcher
	// ListenerPoll is how often the sockets of the served ports are read
	// (default listener.DefaultPoll); set it before Run.
	ListenerPoll time.Duration
	// fouOn: mode tunnel keeps a GUE port, whose deletion only a poll sees.
	fouOn atomic.Bool
}

// NewWatchers returns the watchers; Run starts them.
func NewWatchers() *Watchers {
	return &Watchers{sysctls: sysctl.NewWatcher(), listeners: &listener.Watcher{}, ListenerPoll: listener.DefaultPoll}
}

// Run runs every watcher until ctx ends; sysctlPoll is how often the ARP
// sysctls are read (the kernel does not announce their change).
func (w *Watchers) Run(ctx context.Context, wake resubscribe.Wake, log *slog.Logger, sysctlPoll time.Duration) {
	go loopback.WatchAddrs(ctx, wake, log) // VIPs deleted
	go loopback.WatchLinks(ctx, wake, log) // NICs re-created, renamed, up/down
	go firewall.Watch(ctx, wake, log)      // dsr-agent's tables edited, flushed, dormant
	go route.Watch(ctx, wake, log)         // return_via's rules and routes deleted or changed
	if nl, err := netlink.NewHandle(unix.NETLINK_ROUTE, unix.NETLINK_GENERIC); err != nil {
		log.Error("tunnel watcher: netlink handle", "err", err)
	} else {
		go func() { // the GUE port deleted (tunl0/ip6tnl0: WatchLinks)
			defer nl.Close()
			tunnel.Watcher{NL: nl, FouOn: &w.fouOn}.PollFou(ctx, wake, log)
		}()
	}
	go w.listeners.Run(ctx, wake, log, w.ListenerPoll) // services started or stopped on the VIP ports
	w.sysctls.Run(ctx, wake, sysctlPoll)
}

// Changed tells the watchers that the daemon itself just changed the host:
// values they read before are stale, so the next poll verifies.
func (w *Watchers) Changed() { w.sysctls.Invalidate() }

// Follow points the watchers at what d wants: exactly the sysctls the
// policy sets (a change to any other would only wake a no-op pass). Call it
// before the pass that applies d: a change after this read is seen by the
// next poll, one before it by that pass itself.
func (w *Watchers) Follow(d *Desired) {
	var paths []sysctl.Path
	for _, s := range d.Sysctls {
		paths = append(paths, s.Path)
	}
	w.sysctls.Set(paths)
	w.listeners.Set(listenerPorts(d))
	w.fouOn.Store(!d.HandsOff && d.Tunnel != nil && d.Tunnel.GUEPort != 0)
}

// listenerPorts are the ports whose sockets status checks: each VIP port,
// or in firewalld mode the redirect's to_port (`vips: []`: none).
func listenerPorts(d *Desired) []listener.Port {
	if d.HandsOff {
		return nil
	}
	var out []listener.Port
	for _, v := range d.VIPs {
		for _, p := range v.Ports {
			port := p.Port
			if d.Mode == ModeFirewalld {
				port = p.ToPort
			}
			out = append(out, listener.Port{Proto: p.Protocol, Port: port})
		}
	}
	return out
}
