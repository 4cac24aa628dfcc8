package agent

import (
	"errors"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/dsr-agent/dsr-agent/tunnel"
)

// tunnelSurface is mode tunnel's decapsulation: tunl0 / ip6tnl0 up and the
// GUE receive port. What dsr-agent brought up or added is recorded in the
// state (Ownership.Tunnel) before the change, and only that is ever undone.
type tunnelSurface struct {
	k     tunnelKernel
	steps []tunnel.Step
	// stale are owned entries whose object is gone (a failed add recorded
	// ahead of the kernel, a device deleted): forgotten, so an object made
	// later by someone else under the same name is never taken for ours.
	stale tunnel.Owned
	// blocked: a foreign fou port or device is in the way, or a module
	// cannot be loaded. apply refuses the whole plan; the daemon's repair
	// pass still runs the other steps and surfaces.
	block error
}

func (s *tunnelSurface) observe(d *Desired, st *Ownership) error {
	s.steps, s.stale, s.block = nil, tunnel.Owned{}, nil
	if d.Tunnel == nil && st.Tunnel.Empty() {
		// Nothing wanted, nothing owned: nothing to plan, and the other
		// modes' passes do not pay for the device and fou lookups.
		return nil
	}
	obs, err := s.k.observe()
	if err != nil {
		return err
	}
	spec := tunnel.Spec{}
	if d.Tunnel != nil {
		spec = *d.Tunnel
	}
	s.stale = staleOwned(st.Tunnel, obs)
	steps, err := tunnel.Needed(spec, obs, st.Tunnel)
	var conflict *tunnel.ConflictError
	s.steps, s.block = steps, nil
	if errors.As(err, &conflict) {
		s.block = fmt.Errorf("%w: %w: tunnel: %w", ErrInvalidConfig, ErrHostMismatch, err)
	} else if err != nil {
		return err
	}
	// A module that cannot be had is known before the first change: a
	// switch to mode tunnel is refused while the VIPs are still served
	// where they are. Not a host mismatch: no wait makes a module appear,
	// so the daemon's start fails at once (exit 2, no restart loop).
	var missing []error
	for _, step := range steps {
		if step.Kind != tunnel.LoadModule {
			continue
		}
		if err := s.k.loadable(step.Module); err != nil {
			missing = append(missing, fmt.Errorf("%w: mode: %q: expected a kernel that can load %s (%s): %w",
				ErrInvalidConfig, ModeTunnel, step.Module, moduleUse[step.Module], err))
		}
	}
	s.block = errors.Join(append([]error{s.block}, missing...)...)
	return nil
}

// moduleUse says what mode tunnel needs each module for.
var moduleUse = map[string]string{
	tunnel.ModIPIP:   "tunl0, where IPIP and GUE packets for the IPv4 VIPs are unwrapped",
	tunnel.ModIP6Tnl: "ip6tnl0, where packets for the IPv6 VIPs are unwrapped",
	tunnel.ModFou:    "the GUE receive port of tunnel.encap gue",
}

// tunnelKernel is the tunnel surface's view of the kernel: its devices, fou
// ports and modules. It is a seam so the tests can run mode tunnel's plans
// against a kernel without ipip and fou (this one): addresses, sysctls and
// tables stay real.
type tunnelKernel interface {
	observe() (tunnel.Observed, error)
	apply(tunnel.Step) error
	// loadable is nil when the module can be had (tunnel.Loadable).
	loadable(module string) error
}

// kernelTunnel is the real kernel, through a handle bound to ns.
type kernelTunnel struct {
	nl *netlink.Handle
	ns netns.NsHandle
}

func (k kernelTunnel) observe() (tunnel.Observed, error) { return tunnel.Observe(k.nl) }
func (k kernelTunnel) apply(s tunnel.Step) error         { return s.ApplyIn(k.nl, k.ns) }
func (kernelTunnel) loadable(module string) error        { return tunnel.Loadable(module) }

// staleOwned is what st records as dsr-agent's but the kernel no longer has.
func staleOwned(own tunnel.Owned, obs tunnel.Observed) tunnel.Owned {
	var out tunnel.Owned
	for _, l := range own.LinksUp {
		if _, ok := obs.Links[l]; !ok {
			out.LinksUp = append(out.LinksUp, l)
		}
	}
	for _, l := range own.LinksCreated {
		if _, ok := obs.Links[l]; !ok {
			out.LinksCreated = append(out.LinksCreated, l)
		}
	}
	for _, k := range own.FouPorts {
		if !slices.ContainsFunc(obs.Fou, func(p tunnel.FouPort) bool { return p.FouKey == k }) {
			out.FouPorts = append(out.FouPorts, k)
		}
	}
	return out
}

var tunnelKinds = map[tunnel.Kind]ChangeKind{
	tunnel.LoadModule: ModuleLoad,
	tunnel.CreateLink: LinkAdd,
	tunnel.SetUp:      LinkUp,
	tunnel.AddFou:     FouAdd,
	tunnel.DelFou:     FouDel,
	tunnel.SetDown:    LinkDown,
	tunnel.DeleteLink: LinkDel,
}

func (s *tunnelSurface) diff(*Desired, *Ownership) []Change {
	var out []Change
	if !s.stale.Empty() {
		stale := s.stale
		// In own, ahead of the adds' own in this same plan: an entry
		// forgotten here and re-added below stays owned.
		out = append(out, Change{Kind: TunnelForget, Subject: "tunnel", phase: PhaseDevices, bookkeeping: true,
			own: func(st *Ownership) (bool, error) { st.Tunnel = forgetOwned(st.Tunnel, stale); return true, nil }})
	}
	for _, step := range s.steps {
		c := Change{Kind: tunnelKinds[step.Kind], Subject: step.String(), Command: step.Command(),
			apply: func() error { return s.k.apply(step) }}
		if step.Removal() {
			// After the VIPs that used it left and the tables went.
			c.phase, c.drift, c.Reason = PhaseRemoveDevices, DriftTunnelUnexpected, "not in the config"
			c.done = func(st *Ownership) bool { st.Tunnel.Record(step); return true }
		} else {
			// Before suppression: the decapsulation device's sysctls and
			// the VIPs on it need the device.
			c.phase, c.drift, c.Reason = PhaseDevices, DriftTunnelMissing, "missing"
			c.own = func(st *Ownership) (bool, error) { st.Tunnel.Record(step); return true, nil }
		}
		out = append(out, c)
	}
	return out
}

func forgetOwned(own, stale tunnel.Owned) tunnel.Owned {
	drop := func(list, gone []string) []string {
		return slices.DeleteFunc(slices.Clone(list), func(x string) bool { return slices.Contains(gone, x) })
	}
	own.LinksUp = drop(own.LinksUp, stale.LinksUp)
	own.LinksCreated = drop(own.LinksCreated, stale.LinksCreated)
	own.FouPorts = slices.DeleteFunc(slices.Clone(own.FouPorts), func(k tunnel.FouKey) bool { return slices.Contains(stale.FouPorts, k) })
	return own
}

func (s *tunnelSurface) blocked() error { return s.block }

// report: nothing beyond its changes.
func (s *tunnelSurface) report(*planned, *Report) {}
