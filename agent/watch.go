package agent

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/anyip"
	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/internal/resubscribe"
	"github.com/dsr-agent/dsr-agent/listener"
	"github.com/dsr-agent/dsr-agent/loopback"
	"github.com/dsr-agent/dsr-agent/route"
	"github.com/dsr-agent/dsr-agent/sysctl"
	"github.com/dsr-agent/dsr-agent/tunnel"
)

// Watchers are the surfaces' change notifications, for the daemon: one per
// surface kind (surfaceKinds), plus the served ports' sockets that status
// reports, each waking the reconcile loop with what changed. They watch the
// network namespace of the calling process (the daemon's own).
type Watchers struct {
	list []watcher
}

// DefaultListenerPoll is how often the daemon reads the sockets of the
// served ports.
const DefaultListenerPoll = listener.DefaultPoll

// NewWatchers returns the watchers; Run starts them.
func NewWatchers() *Watchers {
	w := &Watchers{}
	for _, sk := range surfaceKinds {
		if sk.watch != nil {
			w.list = append(w.list, sk.watch())
		}
	}
	w.list = append(w.list, &listenerWatcher{w: &listener.Watcher{}})
	return w
}

// Run runs every watcher until ctx ends.
func (w *Watchers) Run(ctx context.Context, wake resubscribe.Wake, log *slog.Logger, o WatchOptions) {
	if o.SysctlPoll <= 0 {
		o.SysctlPoll = DefaultSysctlPoll
	}
	if o.ListenerPoll <= 0 {
		o.ListenerPoll = DefaultListenerPoll
	}
	var wg sync.WaitGroup
	for _, x := range w.list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x.run(ctx, wake, log, o)
		}()
	}
	wg.Wait()
}

// Changed tells the watchers that the daemon itself just changed the host:
// values they read before are stale, so the next poll verifies.
func (w *Watchers) Changed() {
	for _, x := range w.list {
		x.changed()
	}
}

// Follow points the watchers at what d wants. Call it before the pass that
// applies d: a change after this read is seen by the next poll, one before
// it by that pass itself.
func (w *Watchers) Follow(d *Desired) {
	for _, x := range w.list {
		x.follow(d)
	}
}

// funcWatcher is a watcher of kernel notifications with nothing to follow.
type funcWatcher func(ctx context.Context, wake resubscribe.Wake, log *slog.Logger)

func (f funcWatcher) run(ctx context.Context, wake resubscribe.Wake, log *slog.Logger, _ WatchOptions) {
	f(ctx, wake, log)
}
func (funcWatcher) follow(*Desired) {}
func (funcWatcher) changed()        {}

// newAddrWatcher: VIPs deleted; NICs re-created, renamed, up/down (and
// tunl0/ip6tnl0 going down or away).
func newAddrWatcher() watcher {
	return funcWatcher(func(ctx context.Context, wake resubscribe.Wake, log *slog.Logger) {
		go loopback.WatchLinks(ctx, wake, log)
		loopback.WatchAddrs(ctx, wake, log)
	})
}

// newAnyIPWatcher: the prefix VIPs' local routes deleted or changed.
func newAnyIPWatcher() watcher { return funcWatcher(anyip.Watch) }

// newTableWatcher: dsr-agent's tables edited, flushed, dormant.
func newTableWatcher() watcher { return funcWatcher(firewall.Watch) }

// newRouteWatcher: return_via's rules and routes deleted or changed.
func newRouteWatcher() watcher { return funcWatcher(route.Watch) }

// sysctlWatcher polls exactly the sysctls the policy sets (the kernel does
// not announce their change; a change to any other would only wake a no-op
// pass).
type sysctlWatcher struct{ w *sysctl.Watcher }

func newSysctlWatcher() watcher { return sysctlWatcher{w: sysctl.NewWatcher()} }

func (s sysctlWatcher) run(ctx context.Context, wake resubscribe.Wake, _ *slog.Logger, o WatchOptions) {
	s.w.Run(ctx, wake, o.SysctlPoll)
}
func (s sysctlWatcher) changed() { s.w.Invalidate() }
func (s sysctlWatcher) follow(d *Desired) {
	var paths []sysctl.Path
	for _, x := range d.Sysctls {
		paths = append(paths, x.Path)
	}
	s.w.Set(paths)
}

// tunnelWatcher polls the GUE port mode tunnel keeps, whose deletion raises
// no event.
type tunnelWatcher struct{ fouOn *atomic.Bool }

func newTunnelWatcher() watcher { return tunnelWatcher{fouOn: &atomic.Bool{}} }

func (t tunnelWatcher) run(ctx context.Context, wake resubscribe.Wake, log *slog.Logger, _ WatchOptions) {
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE, unix.NETLINK_GENERIC)
	if err != nil {
		log.Error("tunnel watcher: netlink handle", "err", err)
		return
	}
	defer nl.Close()
	tunnel.Watcher{NL: nl, FouOn: t.fouOn}.PollFou(ctx, wake, log)
}
func (tunnelWatcher) changed() {}
func (t tunnelWatcher) follow(d *Desired) {
	t.fouOn.Store(!d.HandsOff && d.Tunnel != nil && d.Tunnel.GUEPort != 0)
}

// listenerWatcher: services started or stopped on the served ports (status
// reports them; apply never changes services).
type listenerWatcher struct{ w *listener.Watcher }

func (l *listenerWatcher) run(ctx context.Context, wake resubscribe.Wake, log *slog.Logger, o WatchOptions) {
	l.w.Run(ctx, wake, log, o.ListenerPoll)
}
func (*listenerWatcher) changed()            {}
func (l *listenerWatcher) follow(d *Desired) { l.w.Set(listenerPorts(d)) }

// listenerPorts are the ports whose sockets status checks: the ports the
// VIPs' traffic is delivered to (`vips: []`: none).
func listenerPorts(d *Desired) []listener.Port {
	if d.HandsOff {
		return nil
	}
	var out []listener.Port
	for _, v := range d.Served {
		for _, p := range v.Ports {
			out = append(out, listener.Port{Proto: p.Protocol, Port: p.Deliver})
		}
	}
	return out
}
