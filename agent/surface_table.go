package agent

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"

	"github.com/dsr-agent/dsr-agent/firewall"
)

// tableSurface is dsr-agent's own nftables tables, replaced atomically.
type tableSurface struct {
	k tableKernel
	// present: which families have a dsr-agent table; why: for each desired
	// table, "" when in sync, else why not.
	present map[firewall.Family]bool
	why     map[firewall.Family]string
}

func (s *tableSurface) observe(d *Desired, _ *Ownership) error {
	present, err := s.k.Present()
	if errors.Is(err, firewall.ErrPermission) {
		return fmt.Errorf("%w: %w", ErrPrivileges, err)
	}
	if err != nil {
		return err
	}
	s.present, s.why = present, map[firewall.Family]string{}
	for fam, spec := range d.Tables {
		if !present[fam] {
			s.why[fam] = firewall.TableMissing
			continue
		}
		if s.why[fam], err = s.k.Diff(spec); err != nil {
			return err
		}
	}
	return nil
}

func (s *tableSurface) diff(d *Desired, _ *Ownership) []Change {
	var out, deletes []Change
	for _, fam := range firewall.Families {
		spec, ok := d.Tables[fam]
		if !ok {
			if s.present[fam] {
				del := Change{Kind: TableDelete, Subject: firewall.TableRef(fam), Reason: "not in the config",
					Command: firewall.RenderDelete(fam), phase: PhaseRemoveTables, drift: DriftTableUnexpected,
					apply: func() error { return s.k.Delete(fam) }}
				// The arp table (arptables mode's rules, firewalld mode's
				// guard) leaves last: while a redirect still serves a VIP,
				// proxy ARP must stay dropped.
				if fam == firewall.Family(nftables.TableFamilyARP) {
					deletes = append(deletes, del)
				} else {
					deletes = append([]Change{del}, deletes...)
				}
			}
			continue
		}
		why := s.why[fam]
		if why == "" {
			continue
		}
		// A table that suppresses ARP/NDP answers (arptables mode's, the
		// guards) is in force before any VIP is added; a nat table serves
		// VIPs: in place before the addresses of a mode switch leave; any
		// other (the MSS clamp) after the VIPs, since it may replace a nat
		// table still serving one.
		phase, suppression := PhaseAfterVIPs, false
		switch _, nat := spec.(*firewall.NATTable); {
		case firewall.Suppresses(spec):
			phase, suppression = PhaseSuppress, true
		case nat:
			phase = PhaseRedirect
		}
		cmd := firewall.RenderReplace(spec)
		out = append(out, Change{Kind: TableReplace, Subject: firewall.TableRef(fam), Reason: why, Command: cmd,
			phase: phase, drift: DriftTableWrong, fix: "dsr-agent apply", unsuppressed: suppression,
			render: func() string { return fmt.Sprintf("# %s: %s\n%s", firewall.TableRef(fam), why, cmd) },
			apply:  func() error { return s.k.Replace(spec) }})
	}
	return append(out, deletes...)
}

func (s *tableSurface) blocked() error { return nil }

// report: a VIP or prefix served by a redirect (never local) is present
// when its family's table is in place.
func (s *tableSurface) report(p *planned, r *Report) {
	if !p.want.Redirect {
		return
	}
	for _, v := range p.want.Served {
		present := s.why[tableFamily(v.Addr())] == ""
		if v.IsPrefix {
			r.Prefixes = append(r.Prefixes, PrefixState{Prefix: v.String(), Present: present})
		} else {
			r.VIPs = append(r.VIPs, VIPState{Address: v.String(), Present: present})
		}
	}
}

// inSync: dsr-agent's table of fam is in place as desired (the pass
// leaves it as it is).
func (s *tableSurface) inSync(fam firewall.Family) bool {
	return s.present[fam] && s.why[fam] == ""
}

// tables is the plan's table surface, for the status checks that judge by
// whether a table is in force.
func (p *planned) tables() *tableSurface {
	for _, s := range p.surfaces {
		if t, ok := s.(*tableSurface); ok {
			return t
		}
	}
	return &tableSurface{}
}

// tableFamily is the family of the nat table that serves addr.
func tableFamily(addr netip.Addr) firewall.Family {
	if addr.Is6() {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}
