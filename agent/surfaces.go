package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/dsr-agent/dsr-agent/firewall"
	"github.com/dsr-agent/dsr-agent/internal/resubscribe"
	"github.com/dsr-agent/dsr-agent/loopback"
	"github.com/dsr-agent/dsr-agent/route"
	"github.com/dsr-agent/dsr-agent/sysctl"
)

// surface is one kernel surface dsr-agent manages. It carries everything the
// rest of the code asks of it; surfaceKinds is the one list of them.
type surface interface {
	// observe reads the kernel (through the surface's seam) for what the
	// surface manages.
	observe(d *Desired, st *Ownership) error
	// diff is then a pure function of desired, observed and owned state.
	diff(d *Desired, st *Ownership) []Change
	// blocked says why the surface could plan nothing (nil: it could): a
	// foreign route in return_via's table, a foreign GUE port, a module that
	// cannot be loaded. apply refuses it before its first change (exit 2,
	// nothing changed); in the daemon's repair pass the other surfaces'
	// changes run, and the pass fails with it.
	blocked() error
	// report adds the surface's part of the status report beyond its
	// pending changes (those are differences already).
	report(p *planned, r *Report)
}

// watcher is a surface's change notifications, for the daemon: it wakes the
// reconcile loop with what changed, in the daemon's own network namespace.
type watcher interface {
	run(ctx context.Context, wake resubscribe.Wake, log *slog.Logger, o WatchOptions)
	// follow points the watcher at what d wants (before the pass that
	// applies d).
	follow(d *Desired)
	// changed: the daemon itself just changed the host.
	changed()
}

// kernel is the seams through which the surfaces read and change the host:
// the real kernel (Host.kernel) or the simulated one of the transition
// tests. Each is as narrow as its surface needs.
type kernel struct {
	sysctls sysctlKernel
	addrs   addrKernel
	tables  tableKernel
	routes  routeKernel
	tunnel  tunnelKernel
	anyip   anyipKernel
}

// sysctlKernel is /proc/sys by path (sysctl.Proc).
type sysctlKernel interface {
	Read(sysctl.Path) (string, error)
	Write(sysctl.Path, string) error
}

// addrKernel adds and deletes addresses (loopback.Manager); they are read
// once per pass with the host facts.
type addrKernel interface {
	Add(loopback.Addr) error
	Del(loopback.Addr) error
}

// tableKernel is dsr-agent's own nftables tables (firewall.Manager).
type tableKernel interface {
	Present() (map[firewall.Family]bool, error)
	Diff(firewall.Spec) (string, error)
	Replace(firewall.Spec) error
	Delete(firewall.Family) error
}

// routeKernel is return_via's rules and routes (route.Manager).
type routeKernel interface {
	Observe(tables []int) (*route.Observed, error)
	Shadows(want []route.Rule) ([]route.Shadow, error)
	AddRule(route.Rule) error
	DelRule(route.Rule) error
	ReplaceRoute(route.Route) error
	DelRoute(route.Route) error
}

// surfaceKind is one kind of surface: how to build it on a kernel, and its
// watcher (nil: none).
type surfaceKind struct {
	build func(k kernel, f *Facts) surface
	watch func() watcher
}

// surfaceKinds is the one list of surfaces, in the order their changes run
// within a phase. Host, the daemon's watchers and the tests all build from
// it: a new surface is one entry here, its file, its part of Resolve, and
// its seam's field in kernel (Host.kernel, and the simulated host's).
var surfaceKinds = []surfaceKind{
	{func(k kernel, _ *Facts) surface { return &tunnelSurface{k: k.tunnel} }, newTunnelWatcher},
	{func(k kernel, f *Facts) surface { return &addrSurface{k: k.addrs, addrs: f.Addrs} }, newAddrWatcher},
	{func(k kernel, _ *Facts) surface { return &sysctlSurface{k: k.sysctls} }, newSysctlWatcher},
	{func(k kernel, _ *Facts) surface { return &tableSurface{k: k.tables} }, newTableWatcher},
	{func(k kernel, _ *Facts) surface { return &routeSurface{k: k.routes} }, newRouteWatcher},
	{func(k kernel, _ *Facts) surface { return &anyipSurface{k: k.anyip} }, newAnyIPWatcher},
}

// newSurfaces builds every surface on k.
func newSurfaces(k kernel, f *Facts) []surface {
	out := make([]surface, len(surfaceKinds))
	for i, sk := range surfaceKinds {
		out[i] = sk.build(k, f)
	}
	return out
}

// WatchOptions are the polls of what the kernel does not announce.
type WatchOptions struct {
	// SysctlPoll is how often the ARP sysctls are read (DefaultSysctlPoll).
	SysctlPoll time.Duration
	// ListenerPoll is how often the sockets of the served ports are read
	// (DefaultListenerPoll).
	ListenerPoll time.Duration
}

// TriggerAddressAdded is the daemon's trigger for an address added anywhere:
// not drift, it matters only to a pass that failed (a VIP whose device
// lacked an address).
const TriggerAddressAdded = loopback.AddressAdded

// DefaultSysctlPoll is how often the daemon reads the ARP sysctls.
const DefaultSysctlPoll = sysctl.DefaultPoll
