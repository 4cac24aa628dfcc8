package firewalld

import (
	"context"
	"errors"
	"fmt"
	"syscall"
)

// Request is what Gather asks firewalld about.
type Request struct {
	// VIPsRedirected: the VIP traffic arrives through dsr-agent's own nat
	// redirects (firewalld mode). firewalld then lets it in or not as a
	// whole, by whether it accepts redirected traffic, which is asked; no
	// zone judges the VIP ports, so VIPPort wants are not checked.
	VIPsRedirected bool
	Wants          []Want
}

// Gather asks a running firewalld about each wanted port (and, when the VIPs
// are redirected, about redirects). An error is returned only when
// firewalld's presence cannot be told, or when it refuses to show its zones
// to this user (wrapping ErrNotAuthorized: one line for the caller to print,
// not one per port); other per-port failures are recorded in Checked.Err so
// one unreadable zone does not hide the others.
func Gather(ctx context.Context, c *Client, req Request) (Input, error) {
	var in Input
	running, err := c.Running(ctx)
	if err != nil {
		return in, err
	}
	in.Running = running
	if !running {
		return in, nil
	}
	zones := zoneReader{c: c, ofIface: map[string]zoneOfIface{}, read: map[string]zoneSettings{}}
	for _, w := range req.Wants {
		if req.VIPsRedirected && w.Kind == VIPPort {
			continue
		}
		ch, err := zones.check(ctx, w)
		if err != nil {
			return in, err
		}
		in.Checked = append(in.Checked, ch)
	}
	if err := gatherService(ctx, c, req.Wants, &in); err != nil {
		return in, err
	}
	if req.VIPsRedirected {
		r, err := c.AcceptsRedirects(ctx)
		if err != nil {
			in.RedirectsErr = err
		} else {
			in.Redirects = &r
		}
	}
	return in, nil
}

// zoneReader answers for each wanted port from its interface's zone, asking
// firewalld once per interface and once per zone (and its services) however
// many ports share them.
type zoneReader struct {
	c       *Client
	ofIface map[string]zoneOfIface
	read    map[string]zoneSettings
}

type zoneOfIface struct {
	zone      string
	isDefault bool
	err       error
}

type zoneSettings struct {
	z    Zone
	svcs map[string]Service
	err  error
}

// check is w with its zone's answer; the error is a refusal (ErrNotAuthorized),
// any other failure is the Checked's Err.
func (r zoneReader) check(ctx context.Context, w Want) (Checked, error) {
	iz, ok := r.ofIface[w.Iface]
	if !ok {
		iz.zone, iz.isDefault, iz.err = r.c.ZoneOfInterface(ctx, w.Iface)
		r.ofIface[w.Iface] = iz
	}
	ch := Checked{Want: w, Zone: iz.zone, DefaultZone: iz.isDefault, Err: iz.err}
	if iz.err != nil {
		return ch, nil
	}
	st := r.settings(ctx, iz.zone)
	switch {
	case st.err != nil && IsNotAuthorized(st.err):
		return ch, fmt.Errorf("%w: %w", ErrNotAuthorized, st.err)
	case st.err != nil:
		ch.Err = st.err
	default:
		ch.Admission = ZoneAllows(st.z, st.svcs, w.Port, protoOr(w.Proto))
	}
	return ch, nil
}

func (r zoneReader) settings(ctx context.Context, zone string) zoneSettings {
	if st, ok := r.read[zone]; ok {
		return st
	}
	var st zoneSettings
	st.z, st.err = r.c.Zone(ctx, zone)
	if st.err == nil {
		// A service firewalld cannot describe is left out of the map;
		// ZoneAllows then says "unknown" for a port only it might open. A
		// refusal is not that.
		var err error
		st.svcs, err = r.c.Services(ctx, st.z)
		if err != nil && IsNotAuthorized(err) {
			st.err = err
		}
	}
	r.read[zone] = st
	return st
}

// gatherService records how far firewalld knows dsr-agent.xml, once, when a
// health or agent-check port is wanted (it picks their fix).
func gatherService(ctx context.Context, c *Client, wants []Want, in *Input) error {
	for _, w := range wants {
		if w.Kind != Health && w.Kind != AgentCheck {
			continue
		}
		st, def, err := c.ServiceStateOf(ctx, ServiceName)
		if err != nil && IsNotAuthorized(err) {
			return fmt.Errorf("%w: %w", ErrNotAuthorized, err)
		}
		// Another error: leave it absent, so the fix is --add-port, which
		// works whatever firewalld knows.
		in.Service, in.ServiceDef = st, def
		return nil
	}
	return nil
}

// Check is the one call for validate and status: connect to the system bus,
// ask firewalld about req, and return the findings. A host without a system
// bus or without firewalld has nothing to report (nil, nil). An error is
// either ErrNotAuthorized (print it once: run as root) or a bus that exists
// but fails; callers report it as a warning, not as drift.
func Check(ctx context.Context, req Request) ([]Finding, error) {
	c, err := Connect(ctx)
	if err != nil {
		if noBus(err) {
			return nil, nil
		}
		return nil, err
	}
	defer c.Close()
	in, err := Gather(ctx, c, req)
	if err != nil {
		return nil, err
	}
	return Findings(in), nil
}

// noBus: no system bus socket, or nobody listening on it (a container or a
// minimal host): then there is no firewalld either.
func noBus(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}
