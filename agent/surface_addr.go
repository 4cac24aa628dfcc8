package agent

import (
	"log/slog"
	"net/netip"

	"github.com/dsr-agent/dsr-agent/loopback"
)

// addrSurface is the VIP addresses: on lo, or on the NIC in arptables mode.
type addrSurface struct {
	k addrKernel
	// addrs is every address on the host (the facts' one dump).
	addrs []loopback.Addr
}

func (s *addrSurface) observe(*Desired, *Ownership) error { return nil }

func (s *addrSurface) diff(d *Desired, st *Ownership) []Change {
	var out []Change
	present := make(map[string]loopback.Addr, len(s.addrs))
	// The first IPv4 of each interface in the kernel's order: the host's
	// own address, unless dsr-agent's label says otherwise.
	primary := map[string]netip.Prefix{}
	for _, a := range s.addrs {
		present[loopback.Key(a.Link, a.Prefix)] = a
		if _, seen := primary[a.Link]; !seen && a.Prefix.Addr().Is4() && !a.Secondary {
			primary[a.Link] = a.Prefix
		}
	}
	want := make(map[string]bool, len(d.Addrs))
	// newPlace: where the config keeps each VIP ("" for a redirect).
	newPlace := make(map[netip.Addr]string, len(d.VIPs))
	for _, v := range d.VIPs {
		newPlace[v.Address] = ""
	}
	for _, a := range d.Addrs {
		want[loopback.Key(a.Link, a.Prefix)] = true
		newPlace[a.Prefix.Addr()] = a.Link
	}
	// Owned addresses no longer wanted (VIP removed, mode or NIC changed).
	for _, oa := range st.Addresses {
		p, err := netip.ParsePrefix(oa.Prefix)
		if err != nil {
			continue
		}
		key := loopback.Key(oa.Link, p)
		pa, ok := present[key]
		if !ok || want[key] {
			continue
		}
		a := loopback.Addr{Link: oa.Link, Prefix: p}
		forget := func(st *Ownership) bool { return st.dropAddr(a.Link, a.Prefix.String()) }
		if why := notProvablyOwn(pa, primary[pa.Link]); why != "" {
			// Defence in depth behind the state dir check: a state file
			// must never make dsr-agent delete the host's own address.
			slog.Warn("owned address left in place", "address", a.String(), "why", why)
			out = append(out, Change{Kind: AddrDel, Subject: p.Addr().String(), Reason: "not deleted: " + why,
				phase: PhaseRemoveVIPs, bookkeeping: true, done: forget})
			continue
		}
		reason, phase := "no longer configured on "+oa.Link, PhaseRemoveVIPs
		if link, kept := newPlace[p.Addr()]; kept && !d.HandsOff {
			// A move: the old place goes once the new one exists.
			reason, phase = reason+" (moved to "+link+")", PhaseMoveVIPs
			if link == "" {
				reason = "no longer configured on " + oa.Link + " (served by the redirect)"
			}
		}
		out = append(out, Change{Kind: AddrDel, Subject: p.Addr().String(), Reason: reason,
			Command: a.Command("del"), phase: phase, drift: DriftVIPUnexpected,
			apply: func() error { return s.k.Del(a) }, done: forget})
	}
	labels := loopback.NewLabeler(s.addrs)
	for _, a := range d.Addrs {
		if _, ok := present[loopback.Key(a.Link, a.Prefix)]; ok {
			continue
		}
		if a.Prefix.Addr().Is4() {
			a.Label = labels.Next(a.Link)
		}
		out = append(out, Change{Kind: AddrAdd, Subject: a.Prefix.Addr().String(), Command: a.Command("add"),
			phase: PhaseAddVIPs, drift: DriftVIPMissing, missing: &a,
			own:   func(st *Ownership) (bool, error) { return st.addAddr(a.Link, a.Prefix.String()), nil },
			apply: func() error { return s.k.Add(a) }})
	}
	return out
}

// notProvablyOwn says why an address recorded as owned cannot be proven to
// be dsr-agent's ("" when it can): dsr-agent only adds host prefixes, IPv6
// ones only on lo, and labels its IPv4 ones (when the name fits IFNAMSIZ).
func notProvablyOwn(a loopback.Addr, primary netip.Prefix) string {
	switch {
	case loopback.HasOwnLabel(a):
		return ""
	case !a.Prefix.IsSingleIP():
		return "a network prefix, and dsr-agent only adds host addresses"
	case a.Prefix.Addr().Is6() && a.Link != "lo":
		return "an IPv6 address on " + a.Link + ", and dsr-agent puts IPv6 VIPs only on lo"
	case a.Prefix == primary && a.Link != "lo":
		return "the primary address of " + a.Link + " without dsr-agent's label"
	}
	return ""
}

func (s *addrSurface) blocked() error { return nil }

// report: each VIP address is present where the mode wants it, or not.
func (s *addrSurface) report(p *planned, r *Report) {
	present := make(map[string]bool, len(s.addrs))
	for _, a := range s.addrs {
		present[loopback.Key(a.Link, a.Prefix)] = true
	}
	for _, a := range p.want.Addrs {
		r.VIPs = append(r.VIPs, VIPState{Address: a.Prefix.Addr().String(), Link: a.Link, Present: present[loopback.Key(a.Link, a.Prefix)]})
	}
}
