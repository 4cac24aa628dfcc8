package agent

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/dsr-agent/dsr-agent/anyip"
)

// anyipSurface is the prefix VIPs' local routes (AnyIP, package anyip):
// table local, dev lo, marked route.Proto. Ownership is the mark, so it
// needs no state file.
type anyipSurface struct {
	k     anyipKernel
	obs   *anyip.Observed
	block error
}

// anyipKernel is the AnyIP routes (anyip.Manager).
type anyipKernel interface {
	Observe() (*anyip.Observed, error)
	Add(netip.Prefix) error
	Del(netip.Prefix) error
}

// The AnyIP changes and their drift (stable names, from package anyip).
const (
	PrefixAdd             ChangeKind = anyip.KindAdd
	PrefixDel             ChangeKind = anyip.KindDel
	DriftPrefixMissing    DriftKind  = anyip.DriftMissing
	DriftPrefixUnexpected DriftKind  = anyip.DriftUnexpected
)

func (s *anyipSurface) observe(d *Desired, _ *Ownership) error {
	obs, err := s.k.Observe()
	if err != nil {
		return err
	}
	s.obs, s.block = obs, nil
	if _, _, conflicts := anyip.Diff(d.LocalPrefixes, obs); len(conflicts) > 0 {
		// The kernel refuses a second route of the same key, and counting
		// the foreign one as ours would make remove unable to remove it.
		s.block = fmt.Errorf("%w: vips[].prefix: %s already local by a route dsr-agent did not make (%s): expected a prefix no foreign local route holds (delete that route, or leave the prefix out)",
			ErrInvalidConfig, prefixList(conflicts), anyip.Describe(conflicts))
	}
	return nil
}

func prefixList(ps []netip.Prefix) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		s += p.String()
	}
	return s
}

func (s *anyipSurface) diff(d *Desired, _ *Ownership) []Change {
	if s.block != nil {
		return nil
	}
	missing, unexpected, _ := anyip.Diff(d.LocalPrefixes, s.obs)
	m := &anyip.Manager{}
	var out []Change
	for _, st := range m.Steps(missing, unexpected) {
		c := Change{Kind: ChangeKind(st.Kind), Subject: st.Prefix.String(), Command: st.Command, drift: DriftKind(st.Drift)}
		p := st.Prefix
		if st.Add {
			// Like an address: once nothing can answer ARP for it.
			c.Reason, c.phase, c.apply = "missing", PhaseAddVIPs, func() error { return s.k.Add(p) }
		} else if slices.ContainsFunc(d.Prefixes, func(v PrefixVIP) bool { return v.Prefix == p }) && !d.HandsOff {
			// Kept, served by the redirect now (firewalld mode): the local
			// route goes once the redirect exists, as a VIP that moves.
			c.Reason, c.phase, c.apply = "no longer local (served by the redirect)", PhaseMoveVIPs, func() error { return s.k.Del(p) }
		} else {
			// Before the suppression that covered it changes.
			c.Reason, c.phase, c.apply = "not in the config", PhaseRemoveVIPs, func() error { return s.k.Del(p) }
		}
		out = append(out, c)
	}
	return out
}

func (s *anyipSurface) blocked() error { return s.block }

// report: each prefix is local, or not.
func (s *anyipSurface) report(p *planned, r *Report) {
	ours := map[netip.Prefix]bool{}
	if s.obs != nil {
		for _, o := range s.obs.Ours {
			ours[o] = true
		}
	}
	for _, pf := range p.want.LocalPrefixes {
		r.Prefixes = append(r.Prefixes, PrefixState{Prefix: pf.String(), Present: ours[pf]})
	}
}

// PrefixState is one prefix VIP's local route, present or not.
type PrefixState struct {
	Prefix  string `json:"prefix"`
	Present bool   `json:"present"`
}
