package agent

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/dsr-agent/dsr-agent/tunnel"
)

// tunnelSurface is mode tunnel's decapsulation: tunl0 / ip6tnl0 up and the
// GUE receive port. What dsr-agent brought up or added is recorded in the
// state (State.Tunnel) before the change, and only that is ever undone.
type tunnelSurface struct {
	nl    *netlink.Handle
	ns    netns.NsHandle
	steps []tunnel.Step
}

func (s *tunnelSurface) observe(d *Desired, st *State) error {
	obs, err := tunnel.Observe(s.nl)
	if err != nil {
		return err
	}
	spec := tunnel.Spec{}
	if d.Tunnel != nil {
		spec = *d.Tunnel
	}
	steps, err := tunnel.Needed(spec, obs, st.Tunnel)
	var conflict *tunnel.ConflictError
	if errors.As(err, &conflict) {
		return fmt.Errorf("%w: %w: tunnel: %w", ErrInvalidConfig, ErrHostMismatch, err)
	}
	if err != nil {
		return err
	}
	s.steps = steps
	return nil
}

var tunnelKinds = map[tunnel.Kind]ChangeKind{
	tunnel.LoadModule: "module-load",
	tunnel.CreateLink: "link-add",
	tunnel.SetUp:      "link-up",
	tunnel.AddFou:     "fou-add",
	tunnel.DelFou:     "fou-del",
	tunnel.SetDown:    "link-down",
	tunnel.DeleteLink: "link-del",
}

func (s *tunnelSurface) diff(*Desired, *State) []Change {
	var out []Change
	for _, step := range s.steps {
		c := Change{Kind: tunnelKinds[step.Kind], Subject: step.String(), Command: step.Command(),
			apply: func() error { return step.ApplyIn(s.nl, s.ns) }}
		if step.Removal() {
			// After the VIPs that used it left and the tables went.
			c.phase, c.drift, c.Reason = PhaseRemoveDevices, "tunnel-unexpected", "not in the config"
			c.done = func(st *State) bool { st.Tunnel.Record(step); return true }
		} else {
			// Before suppression: the decapsulation device's sysctls and
			// the VIPs on it need the device.
			c.phase, c.drift, c.Reason = PhaseDevices, "tunnel-missing", "missing"
			c.own = func(st *State) (bool, error) { st.Tunnel.Record(step); return true, nil }
		}
		out = append(out, c)
	}
	return out
}
