package agent

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dsr-agent/dsr-agent/route"
)

// routeSurface is return_via's policy routing: dsr-agent's rules and the
// default route of its table, all marked with route.Proto.
type routeSurface struct {
	mgr *route.Manager
	obs *route.Observed
	// blocked says why the surface plans nothing (a foreign route in its
	// table): apply refuses; the daemon's repair pass runs the others.
	blocked error
}

func (s *routeSurface) observe(d *Desired, _ *State) error {
	// The tables to read: the configured one, the default (a config that
	// changed the number leaves its routes there) and any an owned rule
	// points at.
	tables := append([]int{DefaultReturnTable}, d.RouteTables...)
	obs, err := s.mgr.Observe(tables)
	if err != nil {
		return err
	}
	for _, r := range obs.Rules {
		if !slices.Contains(tables, r.Table) && r.Table != unix.RT_TABLE_MAIN {
			tables = append(tables, r.Table)
		}
	}
	if len(tables) > len(d.RouteTables)+1 {
		if obs, err = s.mgr.Observe(tables); err != nil {
			return err
		}
	}
	var foreign []string
	for _, f := range obs.Foreign {
		for _, t := range d.RouteTables {
			if strings.Contains(f, fmt.Sprintf(" table %d ", t)) {
				foreign = append(foreign, f)
			}
		}
	}
	s.obs, s.blocked = obs, nil
	if len(foreign) > 0 {
		// apply refuses the whole config before its first change; in
		// the daemon's repair pass only this surface stands still, and
		// the VIPs and their suppression are still repaired (a running
		// daemon must repair a deleted VIP whatever the state of the
		// policy routing).
		s.blocked = fmt.Errorf("%w: return_via.table: %d holds routes dsr-agent did not make (%s): expected a table of its own (set return_via.table)",
			ErrInvalidConfig, d.RouteTables[0], strings.Join(foreign, "; "))
	}
	return nil
}

func (s *routeSurface) diff(d *Desired, _ *State) []Change {
	if s.blocked != nil {
		return nil
	}
	delRules, addRules, delRoutes, putRoutes := route.Diff(d.Rules, d.Routes, s.obs)
	var out []Change
	// Add before delete (a changed rule set or gateway never leaves a
	// moment without a return path); a route before the rules that lead
	// to it, rules before the route they led to.
	for _, r := range putRoutes {
		reason, drift := "missing", "route-missing"
		for _, o := range s.obs.Routes {
			if o.Table == r.Table && o.IPv6() == r.IPv6() {
				reason, drift = "is via "+o.Gateway.String()+" dev "+o.Link, "route-wrong"
			}
		}
		out = append(out, Change{Kind: RouteReplace, Subject: "route " + r.String(), Reason: reason,
			Command: r.Command("replace"), phase: PhaseReturnPath, drift: drift,
			apply: func() error { return s.mgr.ReplaceRoute(r) }})
	}
	for _, r := range addRules {
		out = append(out, Change{Kind: RuleAdd, Subject: "rule " + r.String(), Reason: "missing",
			Command: r.Command("add"), phase: PhaseReturnPath, drift: "rule-missing",
			apply: func() error { return s.mgr.AddRule(r) }})
	}
	for _, r := range delRules {
		out = append(out, Change{Kind: RuleDel, Subject: "rule " + r.String(), Reason: "not in the config",
			Command: r.Command("del"), phase: PhaseReturnPath, drift: "rule-unexpected",
			apply: func() error { return s.mgr.DelRule(r) }})
	}
	for _, r := range delRoutes {
		out = append(out, Change{Kind: RouteDel, Subject: "route " + r.String(), Reason: "not in the config",
			Command: r.Command("del"), phase: PhaseReturnPath, drift: "route-unexpected",
			apply: func() error { return s.mgr.DelRoute(r) }})
	}
	return out
}
