package agent

import (
	"errors"
	"fmt"

	"github.com/dsr-agent/dsr-agent/firewall"
)

// tableSurface is dsr-agent's own nftables tables, replaced atomically.
type tableSurface struct {
	mgr *firewall.Manager
	// present: which families have a dsr-agent table; why: for each desired
	// table, "" when in sync, else why not.
	present map[firewall.Family]bool
	why     map[firewall.Family]string
}

func (s *tableSurface) observe(d *Desired, _ *State) error {
	present, err := s.mgr.Present()
	if errors.Is(err, firewall.ErrPermission) {
		return fmt.Errorf("%w: %w", ErrPrivileges, err)
	}
	if err != nil {
		return err
	}
	s.present, s.why = present, map[firewall.Family]string{}
	for fam, spec := range d.Tables {
		if !present[fam] {
			s.why[fam] = "table missing"
			continue
		}
		if s.why[fam], err = s.mgr.Diff(spec); err != nil {
			return err
		}
	}
	return nil
}

func (s *tableSurface) diff(d *Desired, _ *State) []Change {
	var out []Change
	for _, fam := range firewall.Families {
		spec, ok := d.Tables[fam]
		if !ok {
			if s.present[fam] {
				out = append(out, Change{Kind: TableDelete, Subject: firewall.TableRef(fam), Reason: "not in the config",
					Command: firewall.RenderDelete(fam), phase: PhaseRemoveTables, drift: "table-unexpected",
					apply: func() error { return s.mgr.Delete(fam) }})
			}
			continue
		}
		why := s.why[fam]
		if why == "" {
			continue
		}
		// The ARP table is suppression: in force before any VIP is added.
		phase, suppression := PhaseRedirect, false
		if firewall.Suppresses(spec) {
			phase, suppression = PhaseSuppress, true
		}
		cmd := firewall.RenderReplace(spec)
		out = append(out, Change{Kind: TableReplace, Subject: firewall.TableRef(fam), Reason: why, Command: cmd,
			phase: phase, drift: "table-wrong", fix: "dsr-agent apply", unsuppressed: suppression,
			render: func() string { return fmt.Sprintf("# %s: %s\n%s", firewall.TableRef(fam), why, cmd) },
			apply:  func() error { return s.mgr.Replace(spec) }})
	}
	return out
}

// tableInSync reports whether the desired table of fam needs no change.
func (s *tableSurface) tableInSync(fam firewall.Family) bool { return s.why[fam] == "" }
